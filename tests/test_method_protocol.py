"""Methods are plug-ins: every registered method implements the protocol (compiler/methods/base.py),
and plan, estimate, checks, emit and train.py's skeleton never test the kind, so a method lives in
its module and its template."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import REPO, write_jsonl

from ftc.compiler import SpecError, compile_spec
from ftc.compiler.catalog_data import MODELS
from ftc.compiler.estimate import RunShape, dims, estimate_memory, parameter_counts
from ftc.compiler.methods import METHODS, MethodPlan
from ftc.compiler.methods.base import ActivationTerms, Imports
from ftc.compiler.spec import FORMAT_FIELDS

KINDS = sorted(METHODS)
_TEST = re.compile(r"\b(kind|method)\s*(==|!=|\bnot in\b|\bin\b)|LORA_KINDS")
_METHODISH = re.compile(r"method\.kind|plan\.method|LORA_KINDS|" + "|".join(rf"[\"']{k}[\"']" for k in KINDS))


def _outside_methods() -> list[Path]:
    """The compiler and the skeleton templates: everything but compiler/methods/ and templates/methods/."""
    files = [p for p in (REPO / "compiler").rglob("*.py") if "methods" not in p.relative_to(REPO / "compiler").parts]
    return files + [p for p in (REPO / "templates").rglob("*.j2") if p.parent.name != "methods"]


def kind_tests(text: str) -> list[str]:
    """Lines that test a method's kind (a comparison or membership naming a method kind)."""
    return [line.strip() for line in text.splitlines() if _TEST.search(line) and _METHODISH.search(line)]


def test_no_kind_test_outside_the_methods() -> None:
    found = [f"{p.relative_to(REPO)}: {line}" for p in _outside_methods() for line in kind_tests(p.read_text())]
    assert not found, "\n".join(found)


def test_the_kind_test_finder_finds_them() -> None:
    """The finder itself sees the switches this change removed (a test that cannot fail proves nothing)."""
    planted = ('if spec.method.kind == "dora" and x:\n{% if plan.method in ("freeze", "linear_probe") %}\n'
               'if shape.method not in LORA_KINDS:\nif facts.data.kind == "files":\n')
    assert kind_tests(planted) == ['if spec.method.kind == "dora" and x:',
                                   '{% if plan.method in ("freeze", "linear_probe") %}',
                                   "if shape.method not in LORA_KINDS:"]


def test_a_method_lives_in_its_module_and_its_templates() -> None:
    """Each kind is named only by the module that defines it and the templates it names (the
    kinds offered as lighter fallbacks are named by the methods that offer them, too; "prompt" is
    also a data field's name)."""
    fallbacks = {k for cls in METHODS.values() for k in cls.fallbacks}
    fallbacks |= {f for fields in FORMAT_FIELDS.values() for f in fields}
    sources = [*(REPO / "compiler").rglob("*.py"), *(REPO / "templates").rglob("*.j2")]
    texts = {p: p.read_text() for p in sources}
    for kind in sorted(set(KINDS) - fallbacks):
        cls = METHODS[kind]
        own = {REPO / "compiler" / "methods" / f"{cls.__module__.rsplit('.', 1)[1]}.py",
               *(REPO / "templates" / "methods" / f"{t}.py.j2" for t in (cls.template, cls.save_template) if t)}
        named = {p for p, text in texts.items() if re.search(rf"[\"']{kind}[\"']", text)}
        assert named <= own, f"{kind}: named in {sorted(str(p.relative_to(REPO)) for p in named - own)}"


LLAMA = dict(MODELS["HuggingFaceTB/SmolLM2-135M"])
TINY = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 128}


@pytest.mark.parametrize("kind", KINDS)
def test_every_method_implements_the_protocol(kind: str) -> None:
    cls = METHODS[kind]
    method = cls()
    plan = method.resolve(LLAMA)
    assert isinstance(plan, MethodPlan) and plan.method is method
    assert all(not isinstance(k.value, str) or k.value != "auto" for k in plan.settings.values()), plan.settings
    d = dims(LLAMA)
    assert 0 < plan.trainable_parameters(d) <= sum(parameter_counts(d).values())
    assert 0 < plan.largest_trainable_tensor(d)
    assert isinstance(plan.activation_terms(d, 4), ActivationTerms)
    assert isinstance(cls.imports(), Imports)
    for template in (cls.template, cls.save_template):
        assert template is None or (REPO / "templates" / "methods" / f"{template}.py.j2").is_file()
    memory = estimate_memory(RunShape(config=LLAMA, method=plan, micro_batch=1, seq_len=64,
                                      gradient_checkpointing=False))
    assert memory.total > 0 and memory.trainable > 0


def test_resolve_decides_the_model_dependent_values_once() -> None:
    """auto targets, IA3's defaults and layer caps come from resolve, with their reasons."""
    tiny = {**LLAMA, "num_hidden_layers": 1}
    assert METHODS["lora"]().resolve(None)["target_modules"] == "all-linear"
    ia3 = METHODS["ia3"]().resolve(LLAMA)
    assert (ia3["target_modules"], ia3["feedforward_modules"]) == (["k_proj", "v_proj", "down_proj"], ["down_proj"])
    assert list(ia3.settings).index("feedforward_modules") < list(ia3.settings).index("target_modules")  # plan.json
    capped = METHODS["freeze"]().resolve(tiny).settings["layers"]
    assert (capped.value, capped.why) == (1, "default: 2, capped at the model's 1 blocks")
    assert METHODS["freeze"](layers=2).resolve(tiny)["layers"] == 2  # explicit: refused by its check instead
    prefix = METHODS["prefix"]().resolve(LLAMA)
    assert "encoder_hidden_size" not in prefix.settings  # read only with projection = true
    assert "double_quant" not in METHODS["lora"]().resolve(LLAMA).settings  # read only with nf4


@pytest.mark.parametrize(("model_type", "block", "expected"), [
    ("llama", 'kind = "dora"\nquantize = "nf4"', "method.quantize: DoRA on a 4-bit base does not learn on CPU"),
    ("llama", 'kind = "prefix"\n[train]\ngradient_checkpointing = true',
     "train.gradient_checkpointing: kind = 'prefix' does not train with gradient checkpointing (PEFT's prefixes"),
    ("phi3", 'kind = "ia3"', "method.target_modules: PEFT has no default IA3 targets for phi3 models; list them, "
                             "e.g. target_modules = [\"qkv_proj\", ...]"),
    ("llama", 'kind = "ia3"\nfeedforward_modules = ["down_proj"]',
     "method.feedforward_modules: an explicit feedforward_modules list needs an explicit target_modules list"),
    ("phi3", 'kind = "lora"\ntarget_modules = ["q_proj"]', "phi3 blocks have no linear layer named 'q_proj'"),
])
def test_the_method_checks_run_through_compile(model_type: str, block: str, expected: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Each method's own checks are run by checks.py's one method check, located in the spec file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    (tmp_path / "model/config.json").write_text(json.dumps({"model_type": model_type, **TINY}))
    write_jsonl(tmp_path / "d.jsonl", [{"prompt": "x", "completion": "y"}] * 10)
    (tmp_path / "s.toml").write_text('name = "t"\n[model]\nbase = "model"\n[data]\nsource = "d.jsonl"\n'
                                     f'format = "completion"\nmax_length = 32\n[method]\n{block}\n'
                                     '[hardware]\ndevice = "cpu"\n')
    with pytest.raises(SpecError) as info:
        compile_spec(tmp_path / "s.toml")
    found = [str(p) for p in info.value.problems]
    assert len(found) == 1 and expected in found[0] and found[0].startswith("s.toml:"), found
