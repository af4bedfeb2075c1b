"""Every `method.kind` end to end on the tiny model: it compiles, trains until the loss falls on a
memorisable set, saves, reloads with plain PEFT/transformers and answers exactly as the trained
model did in training; LoRA-family results merge into a model with the same logits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import run_ftc, write_jsonl

WORDS = "red green blue yellow black white cat dog".split()
ROWS = [{"prompt": f"translate {w}", "completion": w.upper()} for w in WORDS]

# kind -> (extra [method] lines, learning rate): rates that move each method on 24 rows in 24 steps
KINDS = {
    "full": ("", 3e-3),
    "freeze": ("layers = 1\nhead = true\n", 1e-2),
    "linear_probe": ("", 3e-2),
    "lora": ("r = 16\nalpha = 32\n", 5e-2),
    "qlora": ("r = 16\nalpha = 32\n", 5e-2),
    "lora8": ("r = 16\nalpha = 32\n", 5e-2),
    "dora": ("r = 16\nalpha = 32\n", 5e-2),
    "rslora": ("r = 16\nalpha = 8\n", 5e-2),
    "pissa": ("r = 16\nalpha = 16\n", 1e-2),
    "loraplus": ("r = 16\nalpha = 32\nratio = 4\n", 2e-2),
    "prefix": ("virtual_tokens = 8\n", 1e-1),
    "ptuning": ("virtual_tokens = 8\nencoder_hidden_size = 64\n", 1e-2),
    "prompt": ("virtual_tokens = 8\ninit_text = \"translate to upper case\"\n", 1e-1),
    "ia3": ("", 1e-1),
    "ia3-int8": ("quantize = \"int8\"\n", 1e-1),
    "llama_adapter": ("adapter_len = 8\nlayers = 2\n", 2e-1),
}
MERGEABLE = {"lora", "qlora", "lora8", "dora", "rslora", "pissa", "loraplus", "ia3", "ia3-int8"}


def _spec(kind: str, extra: str, lr: float, *, name: str = "m", steps: int = 24) -> str:
    return (f'name = "{name}"\n[model]\nbase = "tiny"\n[data]\nsource = "d.jsonl"\nformat = "completion"\n'
            f'validation = 0.25\nmax_length = 32\n[method]\nkind = "{kind.split("-")[0]}"\n{extra}'
            f'[train]\nmax_steps = {steps}\nbatch_size = 4\nlearning_rate = {lr}\nlogging_steps = 1\nwarmup = 0\n'
            f'[hardware]\ndevice = "cpu"\n[eval]\ncompare = 2\nmax_new_tokens = 4\n')


def _train(tmp_path: Path, tiny_model: Path, kind: str, extra: str, lr: float, name: str = "m",
           rows: list[dict[str, str]] = ROWS) -> Path:
    if not (tmp_path / "tiny").exists():
        shutil.copytree(tiny_model, tmp_path / "tiny")
    write_jsonl(tmp_path / "d.jsonl", rows * 4)
    (tmp_path / f"{name}.toml").write_text(_spec(kind, extra, lr, name=name))
    done = run_ftc("run", f"{name}.toml", "--run-dir", f"runs/{name}", "--no-tui", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp_path / "runs" / name


def _events(run: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def _quantized_base(base: Path, kind: str):  # type: ignore[no-untyped-def]
    """The base loaded as the kind's train.py loads it: 4-bit NF4 (qlora), 8-bit (lora8, ia3-int8), or None."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if kind == "qlora":
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.float32)
    elif kind in ("lora8", "ia3-int8"):
        quant = BitsAndBytesConfig(load_in_8bit=True)
    else:
        return None
    return AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, quantization_config=quant, device_map="cpu")


def _reload_without_ftc(run: Path, base: Path, kind: str):  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoModelForCausalLM

    final = run / "final"
    if kind in ("full", "freeze", "linear_probe"):
        return AutoModelForCausalLM.from_pretrained(final)
    from peft import PeftModel

    model = _quantized_base(base, kind) or AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return PeftModel.from_pretrained(model, final)


@pytest.mark.parametrize("kind", list(KINDS))
def test_method_trains_saves_reloads(kind: str, tiny_model: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from ftc.runtime.trainer import generate_answers

    extra, lr = KINDS[kind]
    run = _train(tmp_path, tiny_model, kind, extra, lr)
    events = _events(run)
    losses = [e["loss"] for e in events if e["type"] == "step"]
    assert len(losses) == 24
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.8 * first, losses
    params = [e for e in events if e["type"] == "params"][-1]
    assert 0 < params["trainable"] <= params["total"] and (params["trainable"] < params["total"]) == (kind != "full")

    # the saved result, loaded with plain transformers/PEFT, answers as the model did at the end of training
    compare = next(e for e in events if e["type"] == "compare")
    model = _reload_without_ftc(run, tmp_path / "tiny", kind)
    tokenizer = AutoTokenizer.from_pretrained(run / "final")
    held_out = [[{"role": "user", "content": s["prompt"]}, {"role": "assistant", "content": s["expected"]}]
                for s in compare["samples"]]
    assert generate_answers(model, tokenizer, held_out, 4) == [s["after"] for s in compare["samples"]]

    if kind in MERGEABLE:
        _check_merge(run, model, tokenizer, kind, tmp_path)


def _check_merge(run: Path, adapted, tokenizer, kind: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The merged model equals base + adapter exactly; for a quantized base, the dequantized base +
    adapter (the quantized kernels themselves round differently, which `ftc merge` reports)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    done = run_ftc("merge", str(run), "--out", "merged", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "largest logit difference from the model as trained" in done.stdout
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not any("lora" in n or "ia3" in n for n, _ in merged.named_parameters())
    quantized = _quantized_base(tmp_path / "tiny", kind)
    if quantized is not None:
        base = quantized.dequantize()
        base.is_loaded_in_4bit = base.is_loaded_in_8bit = False
        adapted = PeftModel.from_pretrained(base, run / "final")
    ids = tokenizer(["translate red", "the cat jumps over the lazy dog"], return_tensors="pt", padding=True)
    real = ids["attention_mask"].bool()  # logits at padding positions are arbitrary in both
    with torch.no_grad():
        expected, got = adapted(**ids).logits[real], merged(**ids).logits[real]
    assert torch.allclose(expected, got, atol=1e-4), (expected - got).abs().max()


def test_merge_refuses_prompt_learning(tiny_model: Path, tmp_path: Path) -> None:
    run = _train(tmp_path, tiny_model, "prompt", "virtual_tokens = 4\n", 1e-1)
    done = run_ftc("merge", str(run), cwd=tmp_path)
    assert done.returncode == 1
    assert "kind = 'prompt'" in done.stderr and "no weights to fold" in done.stderr and "Traceback" not in done.stderr


def test_named_adapters_load_side_by_side_and_switch(tiny_model: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Two tasks, two named adapters on one base: `ftc generate` and the Python API switch by name,
    and each adapter answers as it did at the end of its own training."""
    from ftc.cli.adapters import load_adapters
    from ftc.runtime.trainer import generate_answers

    upper = _train(tmp_path, tiny_model, "lora", 'r = 16\nalpha = 32\nadapter_name = "upper"\n', 5e-2, name="up")
    rows = [{"prompt": f"translate {w}", "completion": w[::-1]} for w in WORDS]
    reverse = _train(tmp_path, tiny_model, "lora", 'r = 16\nalpha = 32\nadapter_name = "reverse"\n', 5e-2,
                     name="rev", rows=rows)
    assert (upper / "final/upper/adapter_config.json").exists()
    monkeypatch.chdir(tmp_path)  # the specs name their base relative to where the runs started

    model, tokenizer = load_adapters([upper, reverse])
    assert set(model.peft_config) == {"upper", "reverse"}
    for run, name in ((upper, "upper"), (reverse, "reverse")):
        samples = next(e for e in _events(run) if e["type"] == "compare")["samples"]
        model.set_adapter(name)
        held_out = [[{"role": "user", "content": s["prompt"]}, {"role": "assistant", "content": ""}] for s in samples]
        assert generate_answers(model, tokenizer, held_out, 4) == [s["after"] for s in samples]

    done = run_ftc("generate", str(upper), str(reverse), "--prompt", "translate cat", "--max-new-tokens", "4",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    heads = [line.split("]")[0] for line in done.stdout.splitlines() if line.startswith(("[upper]", "[reverse]"))]
    assert heads == ["[upper", "[reverse"], done.stdout  # an answer may itself hold a newline (a tiny model's)
    one = run_ftc("generate", str(upper), str(reverse), "--prompt", "translate cat", "--adapter", "nope", cwd=tmp_path)
    assert one.returncode == 1 and "no adapter named 'nope'; loaded: upper, reverse" in one.stderr
