"""Render a plan into build/<name>/: train.py, plan.json and plan.md.

Templates only place values: every value comes from the plan through `lit` (the one escaping
function) and every comment from `comment` (which refuses anything but one line of text).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from ftc.core.errors import TemplateError
from ftc.compiler.literal import lit
from ftc.compiler.methods import METHODS
from ftc.compiler.plan import Plan

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
try:  # installed as a wheel: templates are the ftc.templates package
    import ftc.templates as _templates

    TEMPLATES = Path(_templates.__file__).parent
except ImportError:  # pragma: no cover
    pass

# (CONFIG name in train.py, plan setting): the config block, in reading order.
CONFIG_LINES: tuple[tuple[str, str], ...] = (
    ("BASE_MODEL", "base_model"),
    ("REVISION", "revision"),
    ("TRUST_REMOTE_CODE", "trust_remote_code"),
    ("DATA_SOURCE", "data_source"),
    ("DATA_LOADER", "data_loader"),
    ("DATA_FILES", "data_files"),
    ("DATA_SPLIT", "data_split"),
    ("VALIDATION", "validation"),
    ("VALIDATION_LOADER", "validation_loader"),
    ("MAX_LENGTH", "max_length"),
    ("DATA_FORMAT", "data_format"),
    ("COLUMNS", "columns"),
    ("ROLES", "roles"),
    ("TRAIN_ON", "train_on"),
    ("PROMPT_TEMPLATE", "template"),
    ("DEDUP", "dedup"),
    ("NEAR_DEDUP", "near_dedup"),
    ("MIN_TOKENS", "min_tokens"),
    ("MAX_TOKENS", "max_tokens"),
    ("UNTRAINED", "untrained"),
    ("PACKING", "packing"),
    ("PADDING_FREE", "padding_free"),
    ("MIX", "mix"),
    ("LOAD_DTYPE", "load_dtype"),
    ("DOUBLE_QUANT", "double_quant"),
    ("INT8_THRESHOLD", "int8_threshold"),
    ("TRAIN_LAYERS", "layers"),
    ("TRAIN_MODULES", "modules"),
    ("TRAIN_HEAD", "head"),
    ("LORA_R", "r"),
    ("LORA_ALPHA", "alpha"),
    ("LORA_DROPOUT", "dropout"),
    ("TARGET_MODULES", "target_modules"),
    ("FEEDFORWARD_MODULES", "feedforward_modules"),
    ("PISSA_SVD_ITERS", "svd_iters"),
    ("LORAPLUS_RATIO", "ratio"),
    ("VIRTUAL_TOKENS", "virtual_tokens"),
    ("PREFIX_PROJECTION", "projection"),
    ("PROMPT_ENCODER", "encoder"),
    ("ENCODER_HIDDEN_SIZE", "encoder_hidden_size"),
    ("PROMPT_INIT_TEXT", "init_text"),
    ("ADAPTER_LEN", "adapter_len"),
    ("ADAPTER_LAYERS", "layers"),
    ("ADAPTER_NAME", "adapter_name"),
    ("PRECISION", "precision"),
    ("EPOCHS", "epochs"),
    ("MAX_STEPS", "max_steps"),
    ("LEARNING_RATE", "learning_rate"),
    ("BATCH_SIZE", "batch_size"),
    ("MICRO_BATCH_SIZE", "micro_batch_size"),
    ("GRAD_ACCUM", "grad_accum"),
    ("GRADIENT_CHECKPOINTING", "gradient_checkpointing"),
    ("OPTIMIZER", "optimizer"),
    ("SCHEDULER", "scheduler"),
    ("WARMUP", "warmup"),
    ("WEIGHT_DECAY", "weight_decay"),
    ("MAX_GRAD_NORM", "max_grad_norm"),
    ("SEED", "seed"),
    ("LOGGING_STEPS", "logging_steps"),
    ("EVAL_STEPS", "eval_steps"),
    ("SAVE_STEPS", "save_steps"),
    ("KEEP_CHECKPOINTS", "keep_checkpoints"),
    ("ON_NAN", "on_nan"),
    ("NAN_PATIENCE", "nan_patience"),
    ("EARLY_STOPPING_PATIENCE", "early_stopping_patience"),
    ("COMPARE", "compare"),
    ("MAX_NEW_TOKENS", "max_new_tokens"),
)
# CONFIG names a method claims for a setting key that another method reads under another name.
_CLAIMED = {name for cls in METHODS.values() for name in cls.config_names.values()}
# DataSettings field (ftc.core.data.stage) = plan setting: train.py builds DataSettings from these
# CONFIG values and `ftc data` from the same plan settings (`data_settings`), so both see the same data.
DATA_SETTINGS: tuple[tuple[str, str], ...] = (
    ("format", "data_format"), ("columns", "columns"), ("max_length", "max_length"), ("roles", "roles"),
    ("template", "template"), ("train_on", "train_on"), ("validation", "validation"), ("seed", "seed"),
    ("dedup", "dedup"), ("near_dedup", "near_dedup"), ("min_tokens", "min_tokens"), ("max_tokens", "max_tokens"),
    ("untrained", "untrained"),
)
# Left out of CONFIG when they hold the default that DataSettings has anyway (the script stays short).
_OMIT_WHEN: dict[str, object] = {"roles": {}, "mix": [], "template": None, "padding_free": False, "near_dedup": None, "max_tokens": None,
                                 "min_tokens": 0}


def data_settings(plan: Plan) -> dict[str, Any]:
    """DataSettings keyword arguments of a plan, exactly those train.py passes."""
    names = {key: name for name, key in _config_lines(plan)}
    return {field: plan[key] for field, key in DATA_SETTINGS if key in names}


_ONLY_FOR_DATA: dict[str, tuple[str, ...]] = {  # settings that only one kind of data source reads
    "data_source": ("saved", "hub"), "data_split": ("saved", "hub"), "data_loader": ("files",), "data_files": ("files",),
}


def comment(text: str) -> str:
    """A comment's text: one line of ftc's own words (spec values inside went through `lit`)."""
    if "\n" in text or "\r" in text:
        raise TemplateError(f"a comment must be one line (got {text!r})")
    return text


@dataclass(frozen=True)
class Emitted:
    """The files of one compile, as text, before they are written."""

    files: dict[str, str]


class _Values:
    """Attribute access to the plan's settings inside templates (plan.learning_rate)."""

    def __init__(self, plan: Plan, extra: dict[str, Any]) -> None:
        self._plan, self._extra = plan, extra

    def has(self, key: str) -> bool:
        return key in self._plan.settings

    def __getattr__(self, key: str) -> Any:
        if key in self._extra:
            return self._extra[key]
        try:
            return self._plan[key]
        except KeyError:
            raise AttributeError(key) from None


def _config_lines(plan: Plan) -> list[tuple[str, str]]:
    lines = []
    for name, key in CONFIG_LINES:
        if key not in plan.settings:
            continue
        if key in _ONLY_FOR_DATA and plan["data_kind"] not in _ONLY_FOR_DATA[key]:
            continue
        if name in _CLAIMED and METHODS[plan.method].config_names.get(key) != name:
            continue
        if key in _OMIT_WHEN and plan[key] == _OMIT_WHEN[key]:
            continue
        if key == "train_on" and plan["data_format"] == "text":  # text trains every token
            continue
        if key in ("eval_steps", "early_stopping_patience") and plan[key] is None:
            continue
        if key in ("compare", "max_new_tokens") and not plan["compare"]:
            continue
        if key == "max_steps" and plan[key] == -1 or key == "epochs" and plan[key] is None:
            continue
        lines.append((name, key))
    return lines


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["lit"] = lit
    env.filters["comment"] = comment
    return env


def _import_line(module: str, names: list[str]) -> str:
    line = f"from {module} import {', '.join(names)}"
    return line if len(line) <= 100 else f"from {module} import (\n" + "".join(f"    {n},\n" for n in names) + ")"


def _imports(plan: Plan) -> list[str]:
    """The import lines of train.py: only what this plan's code calls."""
    method = METHODS[plan.method]
    own = method.imports()
    peft = list(own.peft)
    if plan["quantization"]:
        peft.append("prepare_model_for_kbit_training")
    transformers = ["AutoModelForCausalLM", "AutoTokenizer"]
    if plan["quantization"]:
        transformers.append("BitsAndBytesConfig")
    if method.trainer == "hf":
        transformers += ["DataCollatorForSeq2Seq", "Trainer", "TrainingArguments"]
    transformers += ["PrinterCallback", "set_seed"]
    lines = ["import torch"]
    if peft:
        lines.append(_import_line("peft", peft))
    lines += own.lines
    lines.append(_import_line("transformers", sorted(transformers, key=lambda n: (n[0].islower(), n))))
    if method.trainer == "sft":
        lines.append("from trl import SFTConfig, SFTTrainer")
    return lines


def render_script(plan: Plan, *, spec_path: str, spec_sha256: str, version: str, origin: str) -> str:
    """train.py for a plan."""
    lines = _config_lines(plan)
    # comments line up, except beside the odd long value (a module list), which would push all of them right
    width = max(n for n in (len(f"{name} = {lit(plan[key])}") for name, key in lines) if n <= 48)

    def setting(name: str, key: str) -> str:
        code = f"{name} = {lit(plan[key])}"
        return f"{code.ljust(width)}  # {comment(plan.settings[key].why)}"

    method = METHODS[plan.method]
    values = _Values(plan, {"origin": origin, "method": plan.method})
    device_map = '"cpu"' if plan["device"] == "cpu" else '{"": torch.cuda.current_device()}'
    try:
        return _environment().get_template("train.py.j2").render(
            plan=values,
            plan_template=plan.template,
            config_lines=lines,
            setting=setting,
            version=version,
            spec_path=spec_path,
            spec_sha256=spec_sha256,
            title=method.title,
            imports=_imports(plan),
            method_imports=method.imports().ftc,
            own_optimizer=method.own_optimizer,
            save_template=method.save_template,
            peft_result=method.peft,
            data_settings=[(field, name) for field, key in DATA_SETTINGS
                           for name, k in lines if k == key],
            has_validation=plan["validation"] != 0,
            default_run_dir=f"runs/{plan.name}/manual",
            quantized_device_map=device_map,
        )
    except jinja2.TemplateError as exc:
        raise TemplateError(f"template {getattr(exc, 'name', None) or 'train.py.j2'} failed: {exc}") from exc


def render_plan_md(plan: Plan, *, spec_path: str) -> str:
    """plan.md: the same plan for reviewers."""
    out = [f"# Plan for `{plan.name}`", "", f"Compiled from {lit(spec_path)}. Edit the spec, not these files.", ""]
    out += ["## Decisions", ""] + [f"- {r}" for r in plan.reasons] + [""]
    if plan.memory is not None:
        out += ["## Estimated peak memory of one step", "", "| component | GiB |", "|---|---:|"]
        out += [f"| {k} | {v / 2**30:,.2f} |" for k, v in plan.memory.as_dict().items()]
        if plan.budget_bytes:
            out.append(f"| budget | {plan.budget_bytes / 2**30:,.2f} |")
        out.append("")
    if plan.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in plan.notes] + [""]
    out += ["## Settings", "", "| setting | value | why |", "|---|---|---|"]
    for key, s in plan.settings.items():
        value = lit(s.value).replace("|", "\\|")
        out.append(f"| {key} | `{value}` | {s.why.replace('|', '/')} |")
    return "\n".join(out) + "\n"


def emit(plan: Plan, *, spec_path: str, spec_text: str, version: str, origin: str) -> Emitted:
    """Every file of build/<name>/, deterministic for the same plan."""
    spec_sha256 = hashlib.sha256(spec_text.encode("utf-8")).hexdigest()
    script = render_script(plan, spec_path=spec_path, spec_sha256=spec_sha256, version=version, origin=origin)
    plan_json = {
        "ftc_version": version,
        "spec": spec_path,
        "spec_sha256": spec_sha256,
        "train_py_sha256": hashlib.sha256(script.encode("utf-8")).hexdigest(),
        **plan.to_json(),
    }
    return Emitted({
        "train.py": script,
        "plan.json": json.dumps(plan_json, indent=2, ensure_ascii=False) + "\n",
        "plan.md": render_plan_md(plan, spec_path=spec_path),
    })
