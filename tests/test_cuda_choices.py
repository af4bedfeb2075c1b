"""The planner's CUDA speed choices (compiler/plan/kernels.py, plan/budget.py, plan/precision.py): attention
implementation, Liger kernels, fused AdamW and bf16, each with its reason in plan.md; the emitted script passes
them on and, when a planned kernel package does not import, stops at start with what to do."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_jsonl

from ftc.compiler.host import PACKAGES_ENV, speed_packages

WORDS = "red green blue yellow black white cat dog bird fish horse cow".split()


def _spec(hardware: str, method: str = 'kind = "lora"', train: str = "") -> str:
    return ('name = "s"\n[model]\nbase = "tiny"\n[data]\nsource = "d.jsonl"\nformat = "completion"\n'
            'validation = 0\nmax_length = 64\n[data.columns]\nprompt = "q"\ncompletion = "a"\n'
            f'[method]\n{method}\n[train]\nmax_steps = 8\nbatch_size = 4\nlearning_rate = 3e-3\n'
            f'logging_steps = 1\nwarmup = 0\nsave_steps = 100\n{train}[hardware]\n{hardware}\n')


@pytest.fixture
def compile_in(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """compile_spec on a spec in a folder with the tiny model and a few rows; `packages`: the host's FTC_PACKAGES."""
    from ftc.compiler import compile_spec

    shutil.copytree(tiny_model, tmp_path / "tiny")
    write_jsonl(tmp_path / "d.jsonl", [{"q": f"say {w}", "a": w.upper()} for w in WORDS])
    monkeypatch.chdir(tmp_path)

    def run(spec: str, packages: str = ""):  # type: ignore[no-untyped-def]
        monkeypatch.setenv(PACKAGES_ENV, packages)
        (tmp_path / "s.toml").write_text(spec)
        return compile_spec(tmp_path / "s.toml")
    return run


A100 = 'device = "cuda"\ngpu = "A100 80GB"'


def test_installed_kernels_are_chosen_with_their_reasons(compile_in) -> None:  # type: ignore[no-untyped-def]
    result = compile_in(_spec(A100), "flash-attn liger-kernel")
    hw, script, plan_md = result.plan.hardware, result.emitted.files["train.py"], result.emitted.files["plan.md"]
    assert hw.attention.value == "flash_attention_2" and hw.attention.why.startswith("planned: FlashAttention-2")
    assert hw.liger.value is True and "fused cross-entropy stays off" in hw.liger.why
    assert "ATTENTION = 'flash_attention_2'" in script and "attn_implementation=ATTENTION," in script
    assert "LIGER_KERNEL = True" in script and "use_liger_kernel=LIGER_KERNEL," in script
    assert "require_kernels(attention=ATTENTION, liger=LIGER_KERNEL)" in script
    for line in ("- attention: flash_attention_2 (FlashAttention-2 (flash-attn in FTC_PACKAGES; bf16, llama",
                 "- Liger kernels: on (Liger's RMSNorm, RoPE and SwiGLU kernels",
                 "- optimizer: adamw_torch_fused (fused AdamW on cuda",
                 "- precision: bf16 (the A100 80GB computes in bf16"):
        assert line in plan_md, line
    compile(script, "train.py", "exec")


@pytest.mark.parametrize("method", ['kind = "full"', 'kind = "freeze"\nlayers = 1', 'kind = "qlora"'])
def test_every_model_loader_passes_the_attention(compile_in, method: str) -> None:  # type: ignore[no-untyped-def]
    script = compile_in(_spec(A100, method), "flash-attn").emitted.files["train.py"]
    assert "attn_implementation=ATTENTION," in script
    compile(script, "train.py", "exec")


def test_without_the_packages_sdpa_and_no_liger_say_why(compile_in) -> None:  # type: ignore[no-untyped-def]
    result = compile_in(_spec(A100))
    hw, script, plan_md = result.plan.hardware, result.emitted.files["train.py"], result.emitted.files["plan.md"]
    assert hw.attention.value == "sdpa" and "flash-attn is not installed (FTC_PACKAGES)" in hw.attention.why
    assert hw.liger.value is False and "liger-kernel is not installed" in hw.liger.why
    assert "attn_implementation" not in script and "liger" not in script.lower() and "require_kernels" not in script
    assert "- attention: sdpa (PyTorch's scaled dot product attention; not FlashAttention-2: flash-attn" in plan_md
    assert "- Liger kernels: off (liger-kernel is not installed" in plan_md


@pytest.mark.parametrize(("hardware", "method", "train", "why"), [
    ('device = "cuda"\ngpu = "V100"', 'kind = "lora"', "", "the V100 is older than Ampere"),
    ('device = "cuda"\nvram_gb = 40\nprecision = "fp32"', 'kind = "lora"', "", "bf16/fp16 only (precision fp32)"),
    (A100, 'kind = "prompt"', "", "virtual tokens"),
])
def test_flash_attention_is_not_planned_where_incompatible(compile_in, hardware: str, method: str, train: str,
                                                           why: str) -> None:  # type: ignore[no-untyped-def]
    hw = compile_in(_spec(hardware, method, train), "flash-attn liger-kernel").plan.hardware
    assert hw.attention.value == "sdpa" and why in hw.attention.why, hw.attention


def test_cpu_and_preference_runs_keep_liger_off(compile_in) -> None:  # type: ignore[no-untyped-def]
    cpu = compile_in(_spec('device = "cpu"'), "flash-attn liger-kernel")
    assert cpu.plan.hardware.attention.value == "sdpa" and cpu.plan.hardware.liger.value is False
    assert "- attention:" not in cpu.emitted.files["plan.md"]


def test_spec_overrides_and_their_checks(compile_in) -> None:  # type: ignore[no-untyped-def]
    from ftc.core.errors import SpecError

    hw = compile_in(_spec(A100 + '\nattention = "sdpa"\nliger = false'), "flash-attn liger-kernel").plan.hardware
    assert (hw.attention.value, hw.attention.why) == ("sdpa", "spec: hardware.attention")
    assert (hw.liger.value, hw.liger.why) == (False, "spec: hardware.liger")
    forced = compile_in(_spec(A100 + '\nattention = "flash_attention_2"')).plan.hardware  # compiled for elsewhere
    assert forced.attention.value == "flash_attention_2"
    for hardware, message in (('device = "cpu"\nattention = "flash_attention_2"', "runs on CUDA only"),
                              ('device = "cpu"\nliger = true', "Triton kernels for CUDA"),
                              ('device = "cuda"\ngpu = "T4"\nattention = "flash_attention_2"', "Ampere or newer")):
        with pytest.raises(SpecError, match=message):
            compile_in(_spec(hardware))
    with pytest.raises(SpecError, match="hardware.attention"):
        compile_in(_spec(A100 + '\nattention = "flash"'))


def test_flash_attention_estimate_drops_the_mask_and_repeated_kv(compile_in) -> None:  # type: ignore[no-untyped-def]
    """Padded micro-batches under SDPA keep an additive mask and K/V repeated per query head; FlashAttention-2
    keeps neither, so the planned activations are smaller (the tiny Llama has 4 heads, 2 KV heads)."""
    sdpa = compile_in(_spec(A100)).plan.memory
    flash = compile_in(_spec(A100), "flash-attn").plan.memory
    assert sdpa is not None and flash is not None
    assert flash.activations < sdpa.activations and flash.weights == sdpa.weights


def test_speed_packages_are_read_from_the_installed_distributions(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Without FTC_PACKAGES the host facts come from importlib.metadata: a real dist-info on sys.path counts."""
    monkeypatch.delenv(PACKAGES_ENV)
    before, _ = speed_packages()
    info = tmp_path / "liger_kernel-0.6.4.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: liger-kernel\nVersion: 0.6.4\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found, source = speed_packages()
    assert found == before | {"liger-kernel"} and "installed packages" in source


def test_the_script_stops_clearly_when_a_planned_kernel_is_missing(compile_in,  # type: ignore[no-untyped-def]
                                                                    tmp_path: Path) -> None:
    """flash-attn is not installed here: the emitted script's start check ends the run with a status event that
    says what to do, no traceback, before the model loads."""
    result = compile_in(_spec(A100), "flash-attn")
    (tmp_path / "train.py").write_text(result.emitted.files["train.py"])
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(tmp_path / "train.py"), str(run_dir)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    status = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()][-1]
    assert status["type"] == "status" and status["error"] == "kernel", status
    assert "ATTENTION = \"flash_attention_2\"" in status["message"] and "pip install flash-attn" in status["message"]
