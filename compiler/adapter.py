"""Facts about `[model] adapter`: the PEFT adapter a spec continues, read without torch.

The path is a run directory (its final/ adapter) or an adapter folder (adapter_config.json and
adapter_model.safetensors, e.g. final/, final/<name>/ or checkpoints/checkpoint-N/). When the folder
lies in a run directory, that run's plan.json says the base and the quantization it was trained on.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.compiler.facts import FactError

CONFIG = "adapter_config.json"
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
KEY = "model.adapter"


@dataclass(frozen=True)
class AdapterFacts:
    """The adapter to continue and where it came from."""

    folder: str
    """The adapter folder (as the spec wrote it, plus final/ or final/<name>/ for a run directory)."""
    how: str
    """How the folder was found, for the plan's reasons."""
    config: dict[str, Any]
    """Its adapter_config.json."""
    weights: str
    """The weights file's name."""
    sha256: str
    """sha256 of the weights file (the adapter's fingerprint)."""
    run_dir: str | None = None
    """The run directory that trained it, when the folder lies in one with a plan.json."""
    run_settings: dict[str, Any] | None = None
    """That run's plan.json settings (base_model, revision, quantization, method knobs)."""

    @property
    def peft_type(self) -> str:
        return str(self.config.get("peft_type"))


def _json_object(path: Path, what: str, fix: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise FactError(KEY, f"{path}: not a readable {what} ({type(exc).__name__}: {exc}); {fix}") from None
    if not isinstance(data, dict):
        raise FactError(KEY, f"{path} does not hold a JSON object (got {type(data).__name__}); {fix}")
    return data


def _in_run(spec_path: Path) -> tuple[Path, str]:
    """A run directory's adapter: final/, or the only (or the asked-for) named adapter in final/<name>/."""
    final = spec_path / "final"
    if not final.is_dir():
        unfinished = (spec_path / "checkpoints").is_dir() or (spec_path / "plan.json").exists()
        hint = ("the run has no final/ (it did not finish): resume it (`ftc run SPEC --resume last`) or point at "
                "one of its checkpoints, e.g. checkpoints/checkpoint-N" if unfinished else
                "give a run directory (with final/) or a PEFT adapter folder (with adapter_config.json)")
        raise FactError(KEY, f"{spec_path} holds no {CONFIG} and no final/ adapter; {hint}")
    if (final / CONFIG).exists():
        return final, "the run directory's final/ adapter"
    named = sorted(p.name for p in final.iterdir() if (p / CONFIG).exists())
    if len(named) == 1:
        return final / named[0], f"the run directory's named adapter final/{named[0]}/"
    if not named:
        raise FactError(KEY, f"{final} holds no PEFT adapter ({CONFIG}); the run trained the model's own weights "
                        "(full or partial fine-tuning): to train on from it, set model.base to that folder instead")
    raise FactError(KEY, f"{final} holds several adapters ({', '.join(named)}); point model.adapter at one of them, "
                    f"e.g. {str(final / named[0])!r}")


def _run_of(folder: Path) -> Path | None:
    """The run directory an adapter folder lies in: RUN/final, RUN/final/<name>, RUN/checkpoints/checkpoint-N."""
    folder = folder.resolve()
    run = folder.parent if folder.name == "final" else (
        folder.parent.parent if folder.parent.name in ("final", "checkpoints") else None)
    return run if run is not None and (run / "plan.json").is_file() else None


def _check_safetensors(path: Path) -> None:
    """The header of a safetensors file must parse and its tensors must lie inside the file."""
    fix = "the file is damaged or cut short: copy it again or train the adapter again"
    try:
        with path.open("rb") as handle:
            size = path.stat().st_size
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > size - 8 or length > 100_000_000:
                raise ValueError(f"header of {length} bytes in a file of {size}")
            header = json.loads(handle.read(length).decode("utf-8"))
    except (OSError, struct.error, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise FactError(KEY, f"{path}: not a readable safetensors file ({exc}); {fix}") from None
    tensors = {k: v for k, v in header.items() if k != "__metadata__"} if isinstance(header, dict) else {}
    if not tensors:
        raise FactError(KEY, f"{path}: holds no tensors; {fix}")
    end = max(int(v["data_offsets"][1]) for v in tensors.values() if isinstance(v, dict) and "data_offsets" in v)
    if end > size - 8 - length:
        raise FactError(KEY, f"{path}: its tensors end at byte {end} of {size - 8 - length}; {fix}")


def _fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def adapter_facts(adapter: str) -> AdapterFacts:
    """Locate and read the adapter `model.adapter` names; a FactError says what is missing or damaged."""
    path = Path(adapter).expanduser()
    if not path.is_dir():
        raise FactError(KEY, f"no such directory: {adapter!r} (relative paths are resolved from {Path.cwd()}); give "
                        "a run directory (runs/NAME/...) or a PEFT adapter folder")
    folder, how = (path, "an adapter folder") if (path / CONFIG).exists() else _in_run(path)
    fix = "point model.adapter at a folder saved by PEFT (save_pretrained) or train the adapter again"
    config = _json_object(folder / CONFIG, "PEFT adapter config", fix)
    if not isinstance(config.get("peft_type"), str):
        raise FactError(KEY, f"{folder / CONFIG}: has no peft_type, so it is no PEFT adapter config; {fix}")
    weights = next((folder / name for name in WEIGHTS if (folder / name).is_file()), None)
    if weights is None:
        raise FactError(KEY, f"{folder} has {CONFIG} but no weights ({' or '.join(WEIGHTS)}); {fix}")
    if weights.suffix == ".safetensors":
        _check_safetensors(weights)
    run = path if folder != path else _run_of(folder)
    settings = None
    if run is not None and (run / "plan.json").is_file():
        plan = _json_object(run / "plan.json", "plan.json", "the run directory is damaged; compile and train it again")
        settings = plan.get("settings") if isinstance(plan.get("settings"), dict) else None
    shown = str(folder) if folder == path else str(Path(adapter) / folder.relative_to(path))
    return AdapterFacts(shown, how, config, weights.name, _fingerprint(weights),
                        str(run) if run is not None and settings is not None else None, settings)
