"""The planned precision (compiler/plan/precision.py): bf16 on a CPU that multiplies it natively for
methods with a frozen base, fp32 elsewhere; and what it trains: the bf16 loss curve follows fp32's,
QLoRA keeps its embeddings and head in the compute dtype and learns."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers import run_ftc, write_jsonl

from ftc.compiler.host import CPU_FLAGS_ENV, host_facts

WORDS = "red green blue yellow black white cat dog bird fish horse cow".split()


def test_host_flags_come_from_cpuinfo_unless_pinned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftc.compiler import host

    monkeypatch.delenv(CPU_FLAGS_ENV)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n\nprocessor\t: 1\n")
    monkeypatch.setattr(host, "CPUINFO", cpuinfo)
    assert host_facts().bf16_matmul == "avx512_bf16"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert host_facts().bf16_matmul is None
    monkeypatch.setattr(host, "CPUINFO", tmp_path / "missing")
    facts = host_facts()
    assert facts.bf16_matmul is None and "could not be read" in facts.source
    monkeypatch.setenv(CPU_FLAGS_ENV, "avx512_bf16 amx_bf16")
    assert host_facts().bf16_matmul == "amx_bf16"  # the most capable first


def _spec(name: str, method: str, hardware: str = "", steps: int = 8) -> str:
    return (f'name = "{name}"\n[model]\nbase = "tiny"\n[data]\nsource = "rows.jsonl"\nformat = "completion"\n'
            'validation = 0\nmax_length = 64\n[data.columns]\nprompt = "q"\ncompletion = "a"\n'
            f'[method]\n{method}\n[train]\nmax_steps = {steps}\nbatch_size = 4\nlearning_rate = 3e-3\n'
            f'logging_steps = 1\nwarmup = 0\nsave_steps = 100\n[hardware]\ndevice = "cpu"\n{hardware}')


@pytest.fixture
def workdir(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(tiny_model, tmp_path / "tiny")
    write_jsonl(tmp_path / "rows.jsonl", [{"q": f"say {w}", "a": w.upper()} for w in WORDS * 2])
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("flags", "method", "hardware", "precision", "load_dtype", "why"), [
    ("amx_bf16 avx512_bf16", 'kind = "lora"', "", "bf16", "bfloat16", "planned: this CPU multiplies bf16 natively "
     f"(amx_bf16 in {CPU_FLAGS_ENV}): the frozen base in bf16 under bf16 autocast, the trained weights in fp32"),
    ("avx512_bf16", 'kind = "qlora"', "", "bf16", "bfloat16", "planned: this CPU multiplies bf16 natively"),
    ("avx512_bf16", 'kind = "ia3"', "", "bf16", "bfloat16", "planned: this CPU multiplies bf16 natively"),
    ("avx512_bf16", 'kind = "full"', "", "fp32", "float32", "planned: this CPU multiplies bf16 natively "
     f"(avx512_bf16 in {CPU_FLAGS_ENV}), but full trains the base weights"),
    ("avx512_bf16", 'kind = "freeze"', "", "fp32", "float32", "planned: this CPU multiplies bf16 natively"),
    ("avx512_bf16", 'kind = "llama_adapter"\nlayers = 1', "", "fp32", "float32", "planned: this CPU multiplies "
     f"bf16 natively (avx512_bf16 in {CPU_FLAGS_ENV}), but llama_adapter trains weights PEFT makes in the base's"),
    ("avx2 fma", 'kind = "lora"', "", "fp32", "float32", "planned: this CPU has no native bf16 matmul"),
    ("avx512_bf16", 'kind = "lora"', 'precision = "fp32"\n', "fp32", "float32", "spec: hardware.precision"),
])
def test_cpu_precision_follows_the_cpu_and_the_method(workdir: Path, monkeypatch: pytest.MonkeyPatch, flags: str,
                                                      method: str, hardware: str, precision: str, load_dtype: str,
                                                      why: str) -> None:
    from ftc.compiler import compile_spec

    monkeypatch.setenv(CPU_FLAGS_ENV, flags)
    (workdir / "s.toml").write_text(_spec("s", method, hardware))
    result = compile_spec(workdir / "s.toml")
    hw = result.plan.hardware
    assert (hw.precision.value, hw.load_dtype.value) == (precision, load_dtype)
    assert hw.precision.why.startswith(why), hw.precision.why
    assert f"- precision: {precision} (" in result.emitted.files["plan.md"]
    assert f"PRECISION = {precision!r}" in result.emitted.files["train.py"]


def _run(workdir: Path, monkeypatch: pytest.MonkeyPatch, name: str, flags: str, method: str,
         steps: int = 8) -> tuple[list[float], dict[str, Any]]:
    """Compile and run a spec with the CPU flags pinned; its step losses and its parameters by dtype."""
    monkeypatch.setenv(CPU_FLAGS_ENV, flags)
    (workdir / f"{name}.toml").write_text(_spec(name, method, steps=steps))
    done = run_ftc("run", f"{name}.toml", "--run-dir", f"runs/{name}", "--no-tui", cwd=workdir)
    assert done.returncode == 0, done.stdout + done.stderr
    events = [json.loads(line) for line in (workdir / f"runs/{name}/events.jsonl").read_text().splitlines()]
    params = next(e for e in events if e["type"] == "params")
    return [e["loss"] for e in events if e["type"] == "step"], params["dtypes"]


def test_planned_bf16_trains_the_fp32_loss_curve(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same LoRA run (dropout 0: no random mask) planned on a CPU with and without native bf16:
    the bf16 base under autocast follows fp32's losses within 1 % at every step (bf16 keeps 8 bits of
    mantissa: ~0.4 % per rounding; measured here: within 0.29 % over 8 steps), and both learn."""
    method = 'kind = "lora"\ndropout = 0.0'
    bf16, bf16_dtypes = _run(workdir, monkeypatch, "bf16", "amx_bf16 avx512_bf16", method)
    fp32, fp32_dtypes = _run(workdir, monkeypatch, "fp32", "", method)
    assert "PRECISION = 'bf16'" in (workdir / "runs/bf16/train.py").read_text()
    assert set(bf16_dtypes["frozen"]) == {"bfloat16"} and set(bf16_dtypes["trainable"]) == {"float32"}
    assert set(fp32_dtypes["frozen"]) == set(fp32_dtypes["trainable"]) == {"float32"}
    assert len(bf16) == len(fp32) == 8
    assert bf16 == pytest.approx(fp32, rel=1e-2), (bf16, fp32)
    assert bf16 != fp32  # it did compute in bf16
    assert bf16[-1] < 0.8 * bf16[0] and fp32[-1] < 0.8 * fp32[0]


def test_qlora_keeps_embeddings_and_head_in_the_compute_dtype(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                                               tiny_model: Path) -> None:
    """4-bit NF4 base, bf16 compute: every frozen weight that is not 4-bit (embeddings, head, norms) is
    bf16, none fp32 (prepare_model_for_kbit_training would have copied them to fp32), and the loss falls."""
    config = json.loads((tiny_model / "config.json").read_text())
    h, vocab, layers = config["hidden_size"], config["vocab_size"], config["num_hidden_layers"]
    losses, dtypes = _run(workdir, monkeypatch, "qlora", "avx512_bf16", 'kind = "qlora"\ndropout = 0.0', steps=12)
    assert "prepare_model_for_kbit_training(" not in (workdir / "runs/qlora/train.py").read_text()
    assert dtypes["frozen"]["bfloat16"] == 2 * vocab * h + (2 * layers + 1) * h  # embed, head, norms
    assert set(dtypes["frozen"]) == {"bfloat16", "uint8"} and set(dtypes["trainable"]) == {"float32"}
    assert losses[-1] < 0.7 * losses[0], losses
