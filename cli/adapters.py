"""What a finished run left, used again: merge a LoRA-family adapter into its base (`ftc merge`),
and load several runs' adapters onto one base and switch between them by name (`ftc generate`).

    from ftc.cli.adapters import load_adapters
    model, tokenizer = load_adapters(["runs/yoda/a", "runs/pirate/b"])
    model.set_adapter("pirate")           # PEFT's own switch; names are each run's adapter name

Everything here reads the run directory only (plan.json and final/): no spec, no ftc state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.core.errors import RunError, UsageError
from ftc.core.paths import check_output_dir
from ftc.compiler.methods import METHODS


@dataclass(frozen=True)
class FinishedRun:
    """A run directory with a trained result."""

    path: Path
    settings: dict[str, Any]

    @property
    def method(self) -> str:
        return str(self.settings["method"])

    @property
    def adapter_name(self) -> str:
        """The name the adapter is loaded under: the spec's adapter_name, else the run's name."""
        return str(self.settings.get("adapter_name") or self.path.parent.name)

    @property
    def adapter_dir(self) -> Path:
        """Where PEFT saved the adapter (a named adapter goes into a subfolder of final/)."""
        name = self.settings.get("adapter_name")
        return self.path / "final" / name if name else self.path / "final"

    def base_path(self) -> str:
        from ftc.core.bundled import BUNDLED, model_path

        base = str(self.settings["base_model"])
        if base in BUNDLED:
            return str(model_path(base))
        if not Path(base).expanduser().exists() and (base.startswith((".", "/", "~")) or base.count("/") != 1):
            raise RunError(f"the base model of {self.path}, {base!r}, is not found from {Path.cwd()}; a relative "
                           "base is relative to where the run started: run this command from there")
        return base


def _json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object file of a run directory, or a RunError naming it and what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RunError(f"{path}: cannot be read ({exc.strerror or exc}); {what}") from None
    except (ValueError, RecursionError) as exc:
        raise RunError(f"{path}: not valid JSON ({str(exc)[:80]}); {what}") from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: must hold a JSON object (got {type(data).__name__}); {what}")
    return data


def _check_settings(plan: Path, settings: Any) -> dict[str, Any]:
    fix = "the run directory's plan.json was edited or damaged: copy it back from the compiled folder"
    if not isinstance(settings, dict):
        raise RunError(f"{plan}: has no `settings` object; {fix}")
    method = settings.get("method")
    if not isinstance(method, str) or method not in METHODS:
        raise RunError(f"{plan}: settings.method is {method!r}, not one of {', '.join(METHODS)}; {fix}")
    if not isinstance(settings.get("base_model"), str) or not settings["base_model"]:
        raise RunError(f"{plan}: settings.base_model must be a model name or path; {fix}")
    if settings.get("load_dtype", "float32") not in ("float32", "float16", "bfloat16"):
        raise RunError(f"{plan}: settings.load_dtype is {settings.get('load_dtype')!r}, not float32, float16 or "
                       f"bfloat16; {fix}")
    return settings


def finished_run(run_dir: str | Path) -> FinishedRun:
    path = Path(run_dir)
    plan = path / "plan.json"
    if not plan.exists():
        raise RunError(f"{path} is not a run directory (no plan.json); give a folder made by ftc run, "
                       "e.g. runs/<name>/<timestamp>")
    data = _json_object(plan, "copy it back from the compiled folder (compiled/<name>/plan.json)")
    run = FinishedRun(path, _check_settings(plan, data.get("settings")))
    result = run.adapter_dir / ("adapter_config.json" if METHODS[run.method].peft else "config.json")
    if not result.exists():
        raise RunError(f"{path} has no trained result in {run.adapter_dir}; the run did not finish "
                       "(see its train.log), so there is nothing to load")
    _json_object(result, "the saved result is damaged: train again, or restore final/ from a backup")
    return run


def _loaded(what: Path, load: Any) -> Any:
    """`load()`, with a damaged file of the run (a tokenizer, weights, a config) reported by its folder."""
    try:
        return load()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunError(f"{what}: cannot be loaded ({type(exc).__name__}: {str(exc)[:200]}); the saved result is "
                       "damaged or incomplete: train again, or restore it from a backup") from None


def load_base(run: FinishedRun, *, quantized: bool) -> Any:
    """The run's base model as it trained (quantized when `quantized` and the run was), on CPU unless the run's device
    was cuda and one is present."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    s = run.settings
    kwargs: dict[str, Any] = {"dtype": getattr(torch, s["load_dtype"]), "revision": s.get("revision"),
                              "trust_remote_code": s.get("trust_remote_code", False)}
    if quantized and s.get("quantization") == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=s.get("double_quant", True),
            bnb_4bit_compute_dtype=kwargs["dtype"])
    elif quantized and s.get("quantization") == "int8":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True,
                                                           llm_int8_threshold=s.get("int8_threshold", 6.0))
    if "quantization_config" in kwargs:
        kwargs["device_map"] = "cpu" if s.get("device") == "cpu" or not torch.cuda.is_available() else {"": 0}
    return AutoModelForCausalLM.from_pretrained(run.base_path(), **kwargs)


def merge_run(run_dir: str | Path, out: str | Path | None = None) -> tuple[Path, float]:
    """Fold the run's adapter into its base and save a plain transformers model (with the tokenizer and chat template
    used in training) to `out` (default RUN_DIR/merged). Returns the path and the largest logit difference between
    the merged model and the model as trained (quantized base + adapter) on a probe sentence."""
    run = finished_run(run_dir)  # a damaged run, a method without weights or a bad --out: refused before torch loads
    if not METHODS[run.method].mergeable:
        kind = "trains the model's own weights: final/ is already a whole model" if not METHODS[run.method].peft \
            else "adds virtual tokens or gated prompts, which have no weights to fold into the base"
        raise RunError(f"{run.path} was trained with kind = {run.method!r}, which {kind}; merging applies to "
                       "the LoRA family (lora, qlora, lora8, dora, rslora, pissa, loraplus) and ia3")
    target = check_output_dir(out if out else run.path / "merged", "--out")
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    tokenizer = _loaded(run.path / "final", lambda: AutoTokenizer.from_pretrained(run.path / "final"))
    probe = tokenizer(["The quick brown fox jumps over the lazy dog."], return_tensors="pt")
    trained = _loaded(run.adapter_dir, lambda: PeftModel.from_pretrained(load_base(run, quantized=True),
                                                                        run.adapter_dir))
    with torch.no_grad():
        expected = trained(**probe.to(trained.device)).logits.float().cpu()
    if run.settings.get("quantization") is not None:
        # the adapter learned against the quantized weights: fold it into exactly those, dequantized
        del trained
        base = load_base(run, quantized=True).dequantize()
        for flag in ("is_loaded_in_4bit", "is_loaded_in_8bit"):  # transformers 5.23 leaves these set
            if getattr(base, flag, False):
                setattr(base, flag, False)
        trained = PeftModel.from_pretrained(base, run.adapter_dir)
    merged = trained.merge_and_unload()
    with torch.no_grad():
        got = merged(**probe.to(merged.device)).logits.float().cpu()
    target.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target, float((expected - got).abs().max())


def load_adapters(run_dirs: list[str | Path]) -> tuple[Any, Any]:
    """One base with every run's adapter loaded under its name (PeftModel; switch with `model.set_adapter(name)`), and
    the tokenizer of the first run. The runs must share the base and its quantization."""
    runs = [finished_run(d) for d in run_dirs]  # a damaged run is refused before torch loads
    from peft import PeftModel
    from transformers import AutoTokenizer

    if not runs:
        raise RunError("give at least one run directory")
    for run in runs:
        if not METHODS[run.method].peft:
            raise RunError(f"{run.path} trained kind = {run.method!r}, a whole model, not an adapter; "
                           "load it with AutoModelForCausalLM.from_pretrained")
        for key in ("base_model", "quantization", "load_dtype"):
            if run.settings.get(key) != runs[0].settings.get(key):
                raise RunError(f"{run.path} has {key} = {run.settings.get(key)!r} but {runs[0].path} has "
                               f"{runs[0].settings.get(key)!r}; adapters share one base only when these agree")
    names = [run.adapter_name for run in runs]
    if len(set(names)) != len(names):
        raise RunError(f"two runs have the same adapter name ({', '.join(names)}); set method.adapter_name "
                       "in their specs to tell them apart")
    model = _loaded(runs[0].adapter_dir, lambda: PeftModel.from_pretrained(
        load_base(runs[0], quantized=True), runs[0].adapter_dir, adapter_name=names[0]))
    for run, name in zip(runs[1:], names[1:]):
        _loaded(run.adapter_dir, lambda: model.load_adapter(run.adapter_dir, adapter_name=name))
    model.eval()
    return model, _loaded(runs[0].path / "final", lambda: AutoTokenizer.from_pretrained(runs[0].path / "final"))


MAX_PROMPT_CHARS = 1_000_000
"""`ftc generate --prompt` longer than this is refused before it is tokenized."""


def check_prompt(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int) -> int:
    """The prompt's length in tokens (as generation sees it: in the chat template); a UsageError when the
    prompt and the answer do not fit the model's context (config.json's max_position_embeddings)."""
    if len(prompt) > MAX_PROMPT_CHARS:
        raise UsageError(f"--prompt is {len(prompt):,} characters, more than ftc generate takes "
                         f"({MAX_PROMPT_CHARS:,}); shorten it")
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(context, int) and tokens + max_new_tokens > context:
        room = context - max_new_tokens
        fix = (f"shorten the prompt to at most {room:,} tokens" if room > 0 else
               f"lower --max-new-tokens below {context:,}")
        raise UsageError(f"--prompt is {tokens:,} tokens in the chat template; with --max-new-tokens "
                         f"{max_new_tokens:,} that is past the model's context of {context:,} tokens "
                         f"(max_position_embeddings); {fix}")
    return tokens
