"""What-if plans (`ftc plan SPEC --gpus ...`): what fits where, and the time model behind the estimate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftc.cli.main import main
from ftc.compiler.catalog import find_gpu, find_model
from ftc.compiler.estimate import dims, parameter_counts
from ftc.compiler.methods import METHODS
from ftc.compiler.throughput import GPU_MFU, QUANT_SLOWDOWN, duration, flops_per_token, gpu_step_time
from ftc.compiler.whatif import parse_gpus, what_if
from ftc.core.errors import SpecError

REPO = Path(__file__).resolve().parent.parent
FULL_7B = REPO / "specs" / "mistral" / "7b_full_h100.toml"
LLAMA2_7B = find_model("meta-llama/Llama-2-7b-hf")


def _ratio(kind: str, checkpointing: bool = False, seq_len: int = 512) -> float:
    assert LLAMA2_7B is not None
    d = dims(LLAMA2_7B)
    matmul = parameter_counts(d)["linear"] + d.vocab * d.h
    method = METHODS[kind].model_validate({"kind": kind}).resolve(LLAMA2_7B)
    flops, _ = flops_per_token(LLAMA2_7B, method, seq_len, checkpointing)
    return flops / matmul


def test_flops_per_token_follow_6n_and_4n() -> None:
    full, lora = _ratio("full"), _ratio("lora")
    assert 6.0 < full < 6.6  # 6N (Kaplan), plus attention and the embedding's gradient
    assert 4.0 < lora < 4.3  # 4N plus the adapter's terms: no weight gradients of the frozen base
    assert _ratio("full", checkpointing=True) == pytest.approx(full + 2 + 2 * 32 * 512 * 4096 / 6.74e9, rel=0.02)
    assert _ratio("lora", seq_len=4096) > lora  # attention grows with the context


def test_step_time_scales_with_the_gpu_peak_and_quantization() -> None:
    h100, a100, t4 = find_gpu("H100"), find_gpu("A100 80GB"), find_gpu("T4")
    assert h100 and a100 and t4
    fast = gpu_step_time(h100, "bf16", 1e10, 10_000, None)
    slow = gpu_step_time(a100, "bf16", 1e10, 10_000, None)
    assert fast and slow and slow.seconds / fast.seconds == pytest.approx(989.4 / 312.0)
    assert fast.seconds == pytest.approx(1e14 / (989.4e12 * GPU_MFU))
    nf4 = gpu_step_time(h100, "bf16", 1e10, 10_000, "nf4")
    assert nf4 and nf4.seconds == pytest.approx(fast.seconds * QUANT_SLOWDOWN["nf4"])
    assert gpu_step_time(a100, "bf16", 1e10, 10_000, None, devices=4).seconds == pytest.approx(slow.seconds / 4)  # type: ignore[union-attr]
    assert gpu_step_time(t4, "fp32", 1e10, 10_000, None) is None


def test_duration() -> None:
    assert [duration(s) for s in (0.4242, 42, 600, 9000, 400_000, None)] == ["0.42 s", "42 s", "10.0 min", "2.5 h",
                                                                           "4.6 d", "?"]


def test_what_fits_where() -> None:
    rows = what_if(FULL_7B, parse_gpus("RTX 4090, A100-80GB, H100, RTX 3080, T4"), [1])
    by = {r.gpu: r for r in rows}
    assert by["A100 80GB"].fits and by["A100 80GB"].method == "full" and by["A100 80GB"].change == "kept"
    assert by["RTX 4090"].method == "lora" and by["RTX 4090"].change == "full does not fit"
    # QLoRA keeps embeddings and head in bf16 (no fp32 copies): the 7B fits 10 GB with 4-bit weights
    assert by["RTX 3080"].fits and by["RTX 3080"].method == "qlora" and by["RTX 3080"].change == "full and lora do not fit"
    assert not by["T4"].fits and "no bf16" in by["T4"].note  # the spec says precision = "bf16"
    for row in (by["A100 80GB"], by["H100"], by["RTX 4090"]):
        assert row.peak_gib is not None and row.budget_gib is not None and row.peak_gib < row.budget_gib
        assert row.step is not None and row.total_seconds is not None
    assert by["H100"].step.seconds < by["A100 80GB"].step.seconds  # type: ignore[union-attr]


def test_unknown_gpus_and_devices_are_clear_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SpecError, match="'RTX 5090' is not in the GPU catalog; did you mean 'RTX 4090'"):
        parse_gpus("RTX 5090, H100")
    assert main(["plan", str(FULL_7B), "--gpus", "H100", "--devices", "0"]) == 2


def test_devices_plan_each_count_with_its_strategy() -> None:
    rows = what_if(FULL_7B, parse_gpus("H100"), [1, 8])
    assert [(r.devices, r.strategy) for r in rows] == [(1, "single"), (8, "ddp")]
    assert rows[1].step.seconds == pytest.approx(rows[0].step.seconds / 8)  # type: ignore[union-attr]


SPECS = sorted((REPO / "specs").rglob("*.toml"))


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_table_prints_for_every_example_spec(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(spec), "--gpus", "A100 80GB"]) == 0
    out = capsys.readouterr().out
    assert "what fits where" in out and "A100 80GB" in out and "MFU" in out


def test_json_and_set_together(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(FULL_7B), "--gpus", "H100", "--json", "--set", "train.batch_size=32"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert rows[0]["gpu"] == "H100" and rows[0]["micro_batch_size"] * rows[0]["grad_accum"] == 32


@pytest.mark.slow  # runs the emitted train.py for 3 steps (~30 s on 2 shared cores)
def test_probe_measures_the_emitted_script(tiny_model: Path, tmp_path: Path) -> None:
    import shutil

    from helpers import run_ftc, write_jsonl

    shutil.copytree(tiny_model, tmp_path / "tiny")
    write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"say {w} {i}", "completion": w} for i in range(4) for w in "abcdefgh"])
    (tmp_path / "s.toml").write_text('[model]\nbase = "tiny"\n[data]\nsource = "d.jsonl"\nformat = "completion"\n'
                                     'max_length = 32\n[method]\nkind = "lora"\n[train]\nbatch_size = 4\n'
                                     '[hardware]\ndevice = "cpu"\n')
    done = run_ftc("plan", "s.toml", "--probe", "--probe-steps", "3", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("measured step time"))
    assert "mean of 2 steps after the first" in line and "the plan's 21 steps take about" in line
    assert not list(tmp_path.glob("runs")) and not (tmp_path / "compiled").exists()  # nothing left behind
