"""The planner: every choice it claims fits stays under the budget; forced values are respected;
a run that cannot fit gets the numbers and what would fit."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import write_jsonl

from ftc.compiler import compile_spec
from ftc.compiler.catalog_data import MODELS
from ftc.core.errors import BudgetError
from ftc.compiler.plan import SAFETY_MARGIN


def spec_text(base: str, kind: str = "lora", hardware: str = 'gpu = "RTX 4090"', train: str = "",
              max_length: int = 1024) -> str:
    return (f'[model]\nbase = "{base}"\n[data]\nsource = "d.jsonl"\nformat = "completion"\nmax_length = {max_length}\n'
            f'[method]\nkind = "{kind}"\n[train]\nbatch_size = 16\n{train}\n[hardware]\n{hardware}\n')


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-cache"))
    write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c"}] * 20)
    return tmp_path


def compile_text(workdir: Path, text: str):  # type: ignore[no-untyped-def]
    (workdir / "s.toml").write_text(text)
    return compile_spec(workdir / "s.toml")


@pytest.mark.parametrize("base", sorted(MODELS))
@pytest.mark.parametrize("kind", ["lora", "qlora", "full"])
def test_choices_never_exceed_the_budget(base: str, kind: str, workdir: Path) -> None:
    for budget in (24, 80):
        try:
            result = compile_text(workdir, spec_text(base, kind, f"vram_gb = {budget}"))
        except BudgetError as exc:
            assert "does not fit" in str(exc) and "what would fit" in str(exc)
            continue
        plan = result.plan
        assert plan.memory is not None
        assert plan.memory.total <= budget * 2**30 * (1 - SAFETY_MARGIN)
        assert plan["micro_batch_size"] * plan["grad_accum"] == 16


def test_forced_micro_batch_is_respected_or_refused(workdir: Path) -> None:
    plan = compile_text(workdir, spec_text("Qwen/Qwen2.5-0.5B", train="micro_batch_size = 2")).plan
    assert plan["micro_batch_size"] == 2 and plan["grad_accum"] == 8
    assert plan.settings["micro_batch_size"].why == "spec: train.micro_batch_size"
    with pytest.raises(BudgetError, match=r"micro_batch_size is set in the spec"):
        compile_text(workdir, spec_text("meta-llama/Llama-3.1-8B", "full", train="micro_batch_size = 16"))


def test_no_fit_names_the_gap_and_the_options(workdir: Path) -> None:
    with pytest.raises(BudgetError) as info:
        compile_text(workdir, spec_text("meta-llama/Llama-3.1-8B", "full", "vram_gb = 24"))
    message = str(info.value)
    assert "the run does not fit: the smallest setting (micro-batch " in message
    assert "GiB over the budget of 24 GiB" in message
    assert 'method.kind = "qlora" (estimated' in message
    assert "a device with at least" in message


def test_bigger_budget_never_plans_slower(workdir: Path) -> None:
    small = compile_text(workdir, spec_text("Qwen/Qwen2.5-7B", "qlora", "vram_gb = 16")).plan
    large = compile_text(workdir, spec_text("Qwen/Qwen2.5-7B", "qlora", "vram_gb = 80")).plan
    assert large["micro_batch_size"] >= small["micro_batch_size"]
    assert (not large["gradient_checkpointing"]) or small["gradient_checkpointing"]


def test_plan_json_offline_and_fast(workdir: Path) -> None:
    (workdir / "s.toml").write_text(spec_text("meta-llama/Llama-2-70b-hf", "qlora", 'gpu = "H100"',
                                              max_length=512))
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "ftc.cli.main", "plan", "s.toml", "--json"], cwd=workdir,
                         capture_output=True, text=True, check=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    elapsed = time.perf_counter() - started
    plan = json.loads(out.stdout)
    assert set(plan) >= {"settings", "memory", "budget", "reasons"}
    assert set(plan["memory"]) == {"weights", "trainable", "gradients", "optimizer", "activations", "logits",
                                   "overhead", "total"}
    assert all(isinstance(v, int) for v in plan["memory"].values())
    assert plan["memory"]["total"] <= plan["budget"]
    assert elapsed < 5  # a loose bound for a loaded CI machine; ~0.3 s here


def test_eight_bit_adamw_only_when_fp32_states_do_not_fit(workdir: Path) -> None:
    roomy = compile_text(workdir, spec_text("Qwen/Qwen2.5-3B", "full", "vram_gb = 80", max_length=512)).plan
    assert roomy["optimizer"] == "adamw_torch_fused"
    tight = compile_text(workdir, spec_text("Qwen/Qwen2.5-3B", "full", "vram_gb = 24", max_length=512)).plan
    assert tight["optimizer"] == "adamw_bnb_8bit"
    assert "fp32 AdamW states do not fit" in tight.settings["optimizer"].why
    assert tight.memory is not None and tight.memory.total <= 24 * 2**30 * (1 - SAFETY_MARGIN)


def test_config_block_is_the_plan_metadata_grouped_by_section(workdir: Path) -> None:
    """train.py's CONFIG holds exactly the settings whose metadata names a CONFIG entry (and whose `when`
    holds), under one heading per section, in the plan's order."""
    result = compile_text(workdir, spec_text("Qwen/Qwen2.5-0.5B", train="max_steps = 7"))
    plan, script = result.plan, result.emitted.files["train.py"]
    block = script.split("# ---------------------------------------------------------------------------- config")[1]
    block = block.split("CONFIG = ")[0]
    names = [line.split(" = ")[0] for line in block.splitlines() if " = " in line]
    assert names == [e.meta.config for e in plan.config_entries()]
    assert "MAX_STEPS" in names and "EPOCHS" not in names  # `when`: epochs do not apply under max_steps
    assert "LORA_R" in names and "TRAIN_LAYERS" not in names  # the method's own knobs only
    headings = [line for line in block.splitlines() if line.startswith("# ")]
    assert headings[:3] == ["# model", "# data", "# method"]


def test_resume_policy_and_monitor_read_the_metadata(workdir: Path) -> None:
    plan = compile_text(workdir, spec_text("Qwen/Qwen2.5-0.5B")).plan
    assert {"micro_batch_size", "grad_accum", "gradient_checkpointing", "logging_steps", "budget_gib"} <= plan.resumable()
    assert not {"learning_rate", "batch_size", "max_length", "r", "base_model"} & plan.resumable()
    shown = plan.to_json()["key_settings"]
    assert list(shown)[:3] == ["method", "learning_rate", "batch_size"] and shown["r"] == "r"
    assert set(shown) <= set(plan.settings)


def test_max_length_above_the_model_context_is_a_spec_error(workdir: Path) -> None:
    from ftc.compiler import SpecError

    context = MODELS["Qwen/Qwen2.5-0.5B"]["max_position_embeddings"]
    with pytest.raises(SpecError, match=rf"data.max_length: {context + 1} is above the model's context of {context}"):
        compile_text(workdir, spec_text("Qwen/Qwen2.5-0.5B", max_length=context + 1))
    assert compile_text(workdir, spec_text("Qwen/Qwen2.5-0.5B", max_length=context)).plan["max_length"] == context


def test_the_constant_schedule_plans_no_warmup(workdir: Path) -> None:
    """transformers' constant schedule has no warmup: the plan says 0 and why, not the default share."""
    plan = compile_text(workdir, spec_text("Qwen/Qwen2.5-0.5B", train='scheduler = "constant"')).plan
    assert plan["warmup"] == 0.0 and "constant schedule has no warmup" in plan.settings["warmup"].why
    assert compile_text(workdir, spec_text("Qwen/Qwen2.5-0.5B")).plan["warmup"] == 0.1  # 6 steps: 10 %, the cap


def test_qlora_weights_keep_embeddings_and_head_in_the_compute_dtype(workdir: Path) -> None:
    """QLoRA in bf16: the 4-bit linears plus the embeddings, head and norms at 2 B each, not the 4 B of
    prepare_model_for_kbit_training's fp32 copies (for Llama-3.1-8B ~2 GiB the run does not hold)."""
    from ftc.compiler.estimate import NF4_DQ_BYTES_PER_PARAM, dims, parameter_counts

    result = compile_text(workdir, spec_text("meta-llama/Llama-3.1-8B", "qlora"))
    assert result.plan["precision"] == "bf16" and result.plan.memory is not None
    counts = parameter_counts(dims(result.facts.model.config))  # type: ignore[union-attr,arg-type]
    rest = counts["embed"] + counts["head"] + counts["norm"]
    assert result.plan.memory.weights == int(counts["linear"] * NF4_DQ_BYTES_PER_PARAM) + 2 * rest
    assert 2 * rest > 1.9 * 2**30
