"""`[model] adapter`: run A trains a LoRA adapter on the tiny model, run B continues it on other data through
the real `ftc run`; B starts from A's weights, its result reloads with plain PEFT, a continued run resumes, and
every mismatch between the spec and the adapter is a located spec error."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import run_ftc, write_jsonl

from ftc.compiler.compile import compile_spec
from ftc.core.errors import SpecError

WORDS = "red green blue yellow black white cat dog".split()
LORA = 'kind = "lora"\nr = 16\nalpha = 32\n'


def _spec(name: str, method: str = LORA, model: str = "", source: str = "a.jsonl", train: str = "") -> str:
    return (f'name = "{name}"\n[model]\nbase = "tiny"\n{model}[data]\nsource = "{source}"\nformat = "completion"\n'
            f'validation = "v.jsonl"\nmax_length = 32\n[method]\n{method}[train]\nmax_steps = 6\nbatch_size = 4\n'
            f'learning_rate = 0.05\nlogging_steps = 1\nwarmup = 0\n{train}[hardware]\ndevice = "cpu"\n'
            '[eval]\nmetrics = ["loss"]\n')


def _setup(root: Path, tiny_model: Path) -> Path:
    shutil.copytree(tiny_model, root / "tiny")
    write_jsonl(root / "a.jsonl", [{"prompt": f"translate {w}", "completion": w.upper()} for w in WORDS] * 4)
    write_jsonl(root / "b.jsonl", [{"prompt": f"reverse {w}", "completion": w[::-1]} for w in WORDS] * 4)
    # one held-out file for both runs: B's loss before training must be A's after training
    write_jsonl(root / "v.jsonl", [{"prompt": f"translate {w}", "completion": w.upper()} for w in "horse fish bird cow".split()])
    return root


def _run(root: Path, name: str, text: str, run_dir: str | None = None, inject: str = "") -> Path:
    (root / f"{name}.toml").write_text(text)
    env_before = os.environ.pop("FTC_INJECT", None)
    if inject:
        os.environ["FTC_INJECT"] = inject
    try:
        done = run_ftc("run", f"{name}.toml", "--run-dir", run_dir or f"runs/{name}", "--no-tui", cwd=root)
    finally:
        os.environ.pop("FTC_INJECT", None)
        if env_before is not None:
            os.environ["FTC_INJECT"] = env_before
    assert done.returncode == (1 if inject.startswith("crash") else 0), done.stdout + done.stderr
    return root / (run_dir or f"runs/{name}")


def _eval(run: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((run / "eval.json").read_text())


def _weights(folder: Path) -> dict:  # type: ignore[type-arg]
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


B_TRAIN = "save_steps = 2\n"


@pytest.fixture(scope="module")
def runs(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run A (LoRA on a.jsonl), then run B continuing A's run directory on b.jsonl."""
    root = _setup(tmp_path_factory.mktemp("adapter"), tiny_model)
    _run(root, "a", _spec("a"))
    _run(root, "b", _spec("b", model='adapter = "runs/a"\n', source="b.jsonl", train=B_TRAIN))
    return root


def test_b_starts_from_a_and_its_result_reloads_with_plain_peft(runs: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    a, b = runs / "runs/a", runs / "runs/b"
    # the same held-out rows: B before training is exactly A after training, not the base
    assert _eval(b)["before"]["loss"] == pytest.approx(_eval(a)["after"]["loss"], rel=1e-6)
    assert abs(_eval(b)["before"]["loss"] - _eval(a)["before"]["loss"]) > 0.1
    script = (b / "train.py").read_text()
    assert "ADAPTER = 'runs/a/final'" in script
    assert "model = PeftModel.from_pretrained(model, ADAPTER, config=lora, is_trainable=True)" in script
    assert "get_peft_model" not in script
    plan_md = (b / "plan.md").read_text()
    sha = __import__("hashlib").sha256((a / "final/adapter_model.safetensors").read_bytes()).hexdigest()
    assert f"adapter: continues the LORA adapter in runs/a/final (the run directory's final/ adapter, trained by run " \
           f"runs/a; adapter_model.safetensors sha256 {sha})" in plan_md
    params = [json.loads(line) for line in (b / "events.jsonl").read_text().splitlines()
              if '"type": "params"' in line][-1]
    assert params["trainable"] == 2 * 16 * 1024  # 2 blocks x r x (in + out of q, k, v, o, gate, up, down): A's shapes

    trained_a, trained_b = _weights(a / "final"), _weights(b / "final")
    assert trained_a.keys() == trained_b.keys()
    assert any(not torch.equal(trained_a[k], trained_b[k]) for k in trained_a)  # B trained on
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(runs / "tiny"), b / "final")
    loaded = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert len(loaded) == len(trained_b)
    assert all(torch.equal(loaded[k.replace(".weight", ".default.weight")], v) for k, v in trained_b.items())


@pytest.mark.slow
def test_a_continued_run_resumes_to_the_same_weights(runs: Path) -> None:
    import torch

    text = _spec("b", model='adapter = "runs/a"\n', source="b.jsonl", train=B_TRAIN)
    _run(runs, "b", text, run_dir="runs/b2", inject="crash@5")  # killed at step 5, checkpoint 4 kept
    resumed = _run(runs, "b", text, run_dir="runs/b2")
    assert any('"type": "resume"' in line for line in (resumed / "events.jsonl").read_text().splitlines())
    again, reference = _weights(resumed / "final"), _weights(runs / "runs/b/final")
    assert all(torch.allclose(again[k], reference[k], atol=1e-6) for k in reference)


def _problems(root: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(root)
    (root / "c.toml").write_text(text)
    with pytest.raises(SpecError) as info:
        compile_spec(root / "c.toml")
    return {p.key: p.message for p in info.value.problems}


def _method(kind: str, extra: str = "") -> str:
    return f'kind = "{kind}"\n{extra}'


@pytest.mark.parametrize(("method", "key", "says"), [
    (_method("lora", "r = 8\nalpha = 32\n"), "method.r", "has r = 16, but method.r is 8; set method.r = 16"),
    (_method("lora", "r = 16\n"), "method.alpha", "has lora_alpha = 32.0, but method.alpha is 16; set method.alpha = 32.0"),
    (_method("lora", 'r = 16\nalpha = 32\ntarget_modules = ["q_proj"]\n'), "method.target_modules",
     "set method.target_modules = ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']"),
    (_method("dora", "r = 16\nalpha = 32\n"), "method.kind", "has use_dora = False, but kind = 'dora' sets it; use kind = 'lora'"),
    (_method("qlora", "r = 16\nalpha = 32\n"), "method.quantize",
     "trained on an unquantized base (run runs/a's plan.json), but kind = 'qlora' loads a 4-bit NF4 base"),
    (_method("ia3"), "method.kind", "is a LORA adapter, but kind = 'ia3' builds a IA3 one; use kind = 'lora'"),
    (_method("full"), "method.kind", "trains the model's own weights, not an adapter"),
    (_method("pissa", "r = 16\nalpha = 32\n"), "method.kind", "rewrites the base, so it cannot load a trained adapter"),
    (_method("prompt"), "model.adapter", "PEFT 0.21 loads prompt-learning adapters frozen only"),
])
def test_a_spec_that_does_not_match_the_adapter_is_refused(runs: Path, monkeypatch: pytest.MonkeyPatch, method: str,
                                                           key: str, says: str) -> None:
    problems = _problems(runs, _spec("c", method=method, model='adapter = "runs/a"\n'), monkeypatch)
    assert says in problems[key], problems


def test_another_base_is_refused(runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not (runs / "tiny2").exists():
        shutil.copytree(runs / "tiny", runs / "tiny2")
    text = _spec("c", model='adapter = "runs/a"\n').replace('base = "tiny"', 'base = "tiny2"')
    assert _problems(runs, text, monkeypatch)["model.base"] == (
        "the adapter was trained on 'tiny' (run runs/a's plan.json), but model.base is 'tiny2'; set model.base = 'tiny'")
    # an adapter folder outside any run: adapter_config.json's base_model_name_or_path is checked
    shutil.copytree(runs / "runs/a/final", runs / "loose", dirs_exist_ok=True)
    text = _spec("c", model='adapter = "loose"\n').replace('base = "tiny"', 'base = "tiny2"')
    assert "was trained on 'tiny' (adapter_config.json base_model_name_or_path)" in _problems(runs, text, monkeypatch)[
        "model.base"]


def test_an_adapter_folder_compiles_and_the_plan_says_where_it_came_from(runs: Path, monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    shutil.copytree(runs / "runs/a/final", runs / "loose", dirs_exist_ok=True)
    monkeypatch.chdir(runs)
    (runs / "c.toml").write_text(_spec("c", model='adapter = "loose"\n'))
    result = compile_spec(runs / "c.toml", tmp_path / "out")
    assert result.plan["adapter"] == "loose"
    assert any("quantization loose was trained on is not recorded" in n for n in result.plan.notes)
    assert "ADAPTER = 'loose'" in result.emitted.files["train.py"]


@pytest.mark.parametrize(("damage", "says"), [
    ("missing", "no such directory: 'gone'"),
    ("empty", "holds no adapter_config.json and no final/ adapter"),
    ("no_weights", "has adapter_config.json but no weights"),
    ("bad_json", "not a readable PEFT adapter config"),
    ("cut", "the file is damaged or cut short"),
    ("unfinished", "the run has no final/ (it did not finish)"),
])
def test_a_missing_or_damaged_adapter_is_a_clear_error(runs: Path, monkeypatch: pytest.MonkeyPatch, damage: str,
                                                       says: str) -> None:
    folder = runs / "damaged" / damage
    shutil.rmtree(folder, ignore_errors=True)
    if damage != "missing":
        folder.mkdir(parents=True)
    if damage in ("no_weights", "bad_json", "cut"):
        shutil.copy(runs / "runs/a/final/adapter_config.json", folder)
    if damage == "bad_json":
        (folder / "adapter_config.json").write_text("{not json")
        shutil.copy(runs / "runs/a/final/adapter_model.safetensors", folder)
    if damage == "cut":
        data = (runs / "runs/a/final/adapter_model.safetensors").read_bytes()
        (folder / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    if damage == "unfinished":
        (folder / "checkpoints").mkdir()
    where = "gone" if damage == "missing" else f"damaged/{damage}"
    problems = _problems(runs, _spec("c", model=f'adapter = "{where}"\n'), monkeypatch)
    assert says in problems["model.adapter"], problems


# kind -> [method] lines: every kind ftc continues (LoRA family, IA3, LLaMA-Adapter), trained then continued
CONTINUED = {
    "dora": 'kind = "dora"\nr = 8\nalpha = 16\n',
    "rslora": 'kind = "rslora"\nr = 8\nalpha = 8\n',
    "loraplus": 'kind = "loraplus"\nr = 8\nalpha = 16\nratio = 4\n',
    "qlora": 'kind = "qlora"\nr = 8\nalpha = 16\n',
    "ia3": 'kind = "ia3"\n',
    "llama_adapter": 'kind = "llama_adapter"\nadapter_len = 4\nlayers = 2\n',
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(CONTINUED))
def test_each_continued_kind_starts_from_its_adapter_and_reloads(kind: str, tiny_model: Path, tmp_path: Path) -> None:
    import torch
    from peft import PeftModel, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    root = _setup(tmp_path, tiny_model)
    a = _run(root, "a", _spec("a", method=CONTINUED[kind]))
    b = _run(root, "b", _spec("b", method=CONTINUED[kind], model='adapter = "runs/a"\n', source="b.jsonl"))
    # a 4-bit base is re-quantized at B's load: measured 5.1001 vs A's 5.0943 after training (0.1 %; not
    # explained yet); the next line shows it is not the base's loss; the other kinds match to 1e-5
    tolerance = 1e-2 if kind == "qlora" else 1e-5
    assert _eval(b)["before"]["loss"] == pytest.approx(_eval(a)["after"]["loss"], rel=tolerance)
    assert _eval(b)["before"]["loss"] != pytest.approx(_eval(a)["before"]["loss"], rel=1e-3)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32) if kind == "qlora" else None
    base = AutoModelForCausalLM.from_pretrained(root / "tiny", dtype=torch.float32, quantization_config=quant,
                                                device_map="cpu" if quant else None)
    model = PeftModel.from_pretrained(base, b / "final")
    saved, loaded = _weights(b / "final"), get_peft_model_state_dict(model)
    assert saved.keys() == loaded.keys() and all(torch.equal(loaded[k], v) for k, v in saved.items())


@pytest.mark.slow
def test_sft_then_dpo_continues_the_sft_adapter_and_takes_it_as_reference(runs: Path) -> None:
    """Two specs: run A (SFT, the fixture's), then DPO continuing A's adapter. TRL copies the adapter as it
    starts into a frozen adapter "ref", so the first step's rewards are 0 (policy == reference); with the base
    as reference they would not be, A's adapter having moved away from it. The result reloads with plain PEFT."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    write_jsonl(runs / "pairs.jsonl", [{"prompt": f"translate {w}", "chosen": w.upper(), "rejected": w}
                                       for w in WORDS] * 4)
    text = (f'name = "dpo"\n[model]\nbase = "tiny"\nadapter = "runs/a"\n[data]\nsource = "pairs.jsonl"\n'
            f'format = "preference"\nvalidation = 0\nmax_length = 32\n[method]\n{LORA}[train]\nobjective = "dpo"\n'
            'max_steps = 3\nbatch_size = 4\nlearning_rate = 0.01\nlogging_steps = 1\nwarmup = 0\n'
            '[hardware]\ndevice = "cpu"\n')
    run = _run(runs, "dpo", text)
    steps = [e for e in map(json.loads, (run / "events.jsonl").read_text().splitlines()) if e["type"] == "step"]
    assert len(steps) == 3 and abs(steps[0]["reward_margin"]) < 1e-6 and abs(steps[0]["reward_chosen"]) < 1e-6
    assert any(abs(s["reward_margin"]) > 1e-4 for s in steps[1:])  # the policy moves off its reference
    plan = json.loads((run / "plan.json").read_text())
    assert "runs/a" in plan["provenance"]["reference"]
    base = AutoModelForCausalLM.from_pretrained(str(runs / "tiny"))
    model = PeftModel.from_pretrained(base, str(run / "final"))
    saved = _weights(run / "final")
    a = _weights(runs / "runs/a/final")
    assert saved.keys() == a.keys() and any(not torch.equal(saved[k], a[k]) for k in saved)
    assert sum(p.numel() for p in model.parameters()) > 0
