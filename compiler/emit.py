"""Render a plan into compiled/<name>/: train.py, plan.json and plan.md.

Templates only place values: every value comes from the plan through `lit` (the one escaping
function) and every comment from `comment` (which refuses anything but one line of text).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import jinja2

import ftc.templates
from ftc.core.errors import TemplateError
from ftc.compiler.emit_launch import launch_command, launch_files
from ftc.compiler.literal import lit
from ftc.compiler.methods import METHODS
from ftc.compiler.plan import Plan
from ftc.compiler.plan.budget import SAFETY_MARGIN
from ftc.core.data import cache
from ftc.core.data.settings import DataSettings

TEMPLATES = Path(ftc.templates.__file__).parent

SECTION_TITLES = {"model": "model", "data": "data", "method": "method", "hardware": "hardware and precision",
                  "optim": "optimization",
                  "objective": "objective (preference tuning)", "run": "run policy (a resumed run may change these)"}
"""The headings of train.py's CONFIG groups, one per Plan section."""
PREFERENCE_IMPORTS = {"dpo": "from trl import DPOConfig, DPOTrainer", "kto": "from trl import KTOConfig, KTOTrainer",
                      "orpo": "from trl.experimental.orpo import ORPOConfig, ORPOTrainer",
                      "simpo": "from trl.experimental.cpo import CPOConfig, CPOTrainer"}
"""Each preference objective's TRL config and trainer (SimPO is CPOTrainer's loss_type="simpo")."""


def data_settings(plan: Plan) -> DataSettings:
    """The plan's DataSettings: the object `ftc data` runs and train.py rebuilds from CONFIG."""
    return plan.data.settings


def _data_settings_names(plan: Plan) -> list[tuple[str, str]]:
    """(DataSettings field, CONFIG name) for train.py's DataSettings(...) call: every field is passed
    (DataSettings has no defaults), so the script builds the very object the plan holds."""
    names = {e.meta.stage: e.meta.config for e in plan.config_entries() if e.meta.stage}
    if missing := [f.name for f in fields(DataSettings) if f.name not in names]:
        raise TemplateError(f"train.py's CONFIG lacks the data settings {', '.join(missing)} (compiler/plan/types.py)")
    return [(f.name, str(names[f.name])) for f in fields(DataSettings)]


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


def _config_groups(plan: Plan) -> list[tuple[str, list[tuple[str, str]]]]:
    """train.py's CONFIG block: (heading, [(CONFIG name, plan key)]) per section, in reading order."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for entry in plan.config_entries():
        assert entry.meta.config is not None
        groups.setdefault(entry.section, []).append((entry.meta.config, entry.key))
    return [(SECTION_TITLES[section], lines) for section, lines in groups.items()]


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
    method = METHODS[plan.kind]
    own = method.imports()
    peft = list(own.peft)
    if plan.model.adapter is not None:  # the method's config loads the adapter's weights instead of new ones
        peft = [name for name in peft if name != "get_peft_model"] + ["PeftModel"]
    transformers = ["AutoModelForCausalLM", "AutoTokenizer"]
    if plan["quantization"]:
        transformers.append("BitsAndBytesConfig")
    if method.trainer == "hf":
        transformers += ["DataCollatorForSeq2Seq", "Trainer", "TrainingArguments"]
    transformers += ["PrinterCallback", "set_seed"]
    lines = ["import torch"]
    if plan["strategy"] == "zero3" and plan["device"] == "cpu":
        lines = ["import deepspeed", *lines]  # its communication starts before the model loads (train.py.j2)
    if peft:
        lines.append(_import_line("peft", peft))
    lines += own.lines
    lines.append(_import_line("transformers", sorted(transformers, key=lambda n: (n[0].islower(), n))))
    objective = plan["objective"]
    if objective != "sft":
        lines.append(PREFERENCE_IMPORTS[objective])
    elif method.trainer == "sft":
        lines.append("from trl import SFTConfig, SFTTrainer")
    return lines


def render_script(plan: Plan, *, spec_path: str, spec_sha256: str, version: str, origin: str,
                  flags: tuple[str, ...] = ()) -> str:
    """train.py for a plan."""
    groups = _config_groups(plan)
    lines = [line for _, group in groups for line in group]
    # comments line up, except beside the odd long value (a module list), which would push all of them right
    width = max(n for n in (len(f"{name} = {lit(plan[key])}") for name, key in lines) if n <= 48)

    def setting(name: str, key: str) -> str:
        code = f"{name} = {lit(plan[key])}"
        return f"{code.ljust(width)}  # {comment(plan.settings[key].why)}"

    method = METHODS[plan.kind]
    values = _Values(plan, {"origin": origin, "method": plan.kind})
    device_map: str | None = '"cpu"' if plan["device"] == "cpu" else '{"": torch.cuda.current_device()}'
    if plan["strategy"] in ("fsdp", "zero3"):
        device_map = None  # sharding places the weights itself
    elif plan["strategy"] != "single" and plan["device"] == "cuda":
        device_map = '{"": int(os.environ.get("LOCAL_RANK", 0))}'  # each process its own GPU
    try:
        return _environment().get_template("train.py.j2").render(
            plan=values,
            plan_template=plan.template,
            config_groups=groups,
            setting=setting,
            version=version,
            spec_path=spec_path,
            spec_sha256=spec_sha256,
            spec_flags=flags,
            title=method.title,
            imports=_imports(plan),
            method_imports=method.imports().ftc,
            own_optimizer=method.own_optimizer,
            save_template=method.save_template,
            peft_result=method.peft,
            data_settings=_data_settings_names(plan),
            has_validation=plan["validation"] != 0,
            default_run_dir=f"runs/{plan.name}/manual",
            run_name=plan.name,
            quantized_device_map=device_map,
            multi=plan["strategy"] != "single",
            hub_data=not cache.holds(plan["data_kind"], plan["mix"] or []),
            preference=plan["objective"] != "sft",
            import_os=bool(plan["quantization"] and device_map and "os.environ" in device_map),
        )
    except jinja2.TemplateError as exc:
        raise TemplateError(f"template {getattr(exc, 'name', None) or 'train.py.j2'} failed: {exc}") from exc


def render_plan_md(plan: Plan, *, spec_path: str, flags: tuple[str, ...] = ()) -> str:
    """plan.md: the same plan for reviewers."""
    given = f" with {', '.join(f'`{flag}`' for flag in flags)}" if flags else ""
    out = [f"# Plan for `{plan.name}`", "", f"Compiled from {lit(spec_path)}{given}. Edit the spec, not these files.",
           ""]
    out += ["## Decisions", ""] + [f"- {r}" for r in plan.reasons] + [""]
    if plan.memory is not None:
        out += ["## Estimated peak memory of one step", "", "| component | GiB |", "|---|---:|"]
        out += [f"| {k} | {v / 2**30:,.2f} |" for k, v in plan.memory.as_dict().items()]
        if plan.budget_bytes:
            out.append(f"| budget | {plan.budget_bytes / 2**30:,.2f} |")
        out.append("")
    out += _devices_md(plan)
    if plan.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in plan.notes] + [""]
    out += ["## Settings"]
    for section, title in SECTION_TITLES.items():
        if section == "objective" and plan["objective"] == "sft":
            continue  # an sft plan has no preference settings to show (plan.json keeps them)
        out += ["", f"### {title}", "", "| setting | value | why |", "|---|---|---|"]
        for entry in (e for e in plan.entries() if e.section == section):
            value = lit(entry.setting.value).replace("|", "\\|")
            out.append(f"| {entry.key} | `{value}` | {entry.setting.why.replace('|', '/')} |")
    return "\n".join(out) + "\n"


def _devices_md(plan: Plan) -> list[str]:
    """plan.md's per-device table (one row per strategy the spec allows) and the launch command."""
    if plan["strategy"] == "single":
        return []
    out = []
    if plan.by_strategy:
        names = [k for k in plan.by_strategy[0][1].as_dict() if k != "total"]
        names += [k for _, m in plan.by_strategy for k in m.as_dict() if k not in names and k != "total"]
        budget = plan.budget_bytes
        out += ["## Estimated peak memory per device, by strategy", "",
                "| strategy | " + " | ".join(names) + " | total GiB | host RAM GiB per process | fits |",
                "|---|" + "---:|" * (len(names) + 2) + "---|"]
        for label, memory in plan.by_strategy:
            parts = memory.as_dict()
            fits = "-" if not budget else "yes" if parts["total"] <= budget * (1 - SAFETY_MARGIN) else "no"
            out.append(f"| {label} | " + " | ".join(f"{parts.get(k, 0) / 2**30:,.2f}" for k in names)
                       + f" | {parts['total'] / 2**30:,.2f} | {memory.host / 2**30:,.2f} | {fits} |")
        out += ["", f"Chosen: {plan['strategy']} ({plan.settings['strategy'].why}). Fits: under the budget less "
                f"the {SAFETY_MARGIN:.0%} margin.", ""]
    return out + ["## Launch", "", f"    {launch_command(plan)}", ""]


def emit(plan: Plan, *, spec_path: str, spec_text: str, version: str, origin: str,
         flags: tuple[str, ...] = ()) -> Emitted:
    """Every file of compiled/<name>/, deterministic for the same plan; `flags`: the `--set` flags applied."""
    spec_sha256 = hashlib.sha256(spec_text.encode("utf-8")).hexdigest()
    script = render_script(plan, spec_path=spec_path, spec_sha256=spec_sha256, version=version, origin=origin,
                           flags=flags)
    plan_json = {
        "ftc_version": version,
        "spec": spec_path,
        **({"overrides": list(flags)} if flags else {}),
        "spec_sha256": spec_sha256,
        "train_py_sha256": hashlib.sha256(script.encode("utf-8")).hexdigest(),
        **plan.to_json(),
    }
    return Emitted({
        "train.py": script,
        "plan.json": json.dumps(plan_json, indent=2, ensure_ascii=False) + "\n",
        "plan.md": render_plan_md(plan, spec_path=spec_path, flags=flags),
        **launch_files(plan, version),
    })
