"""The compiler through its artifacts: golden outputs, determinism, injection safety, no torch."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, write_jsonl

from ftc.compiler import compile_spec
from ftc.cli.main import main

SPECS = sorted(p.relative_to(REPO) for p in (REPO / "specs").rglob("*.toml"))
GOLDEN = REPO / "tests" / "golden"


@pytest.fixture(autouse=True)
def _offline_facts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hub model facts (and the bundled model's tokenizer, which measures token lengths) must not
    depend on this machine's caches."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setenv("FTC_CACHE", str(tmp_path / "empty-ftc-cache"))


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_example_spec_matches_golden(spec: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every example spec compiles; its files equal the reviewed copies in tests/golden
    (refresh with `UPDATE_GOLDEN=1 make test`, then review the diff)."""
    monkeypatch.chdir(REPO)
    result = compile_spec(spec)
    golden = GOLDEN / spec.with_suffix("")
    for name, text in result.emitted.files.items():
        if os.environ.get("UPDATE_GOLDEN"):
            (golden / name).parent.mkdir(parents=True, exist_ok=True)
            (golden / name).write_text(text, encoding="utf-8")
        assert (golden / name).read_text(encoding="utf-8") == text, f"{golden / name} is stale"
    ast.parse(result.emitted.files["train.py"])


def test_compile_is_deterministic_and_check_detects_staleness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(REPO)
    out = tmp_path / "build"
    assert main(["compile", "specs/demo.toml", "--out", str(out)]) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["compile", "specs/demo.toml", "--out", str(out)]) == 0
    assert "nothing changed" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert main(["compile", "specs/demo.toml", "--out", str(out), "--check"]) == 0
    (out / "train.py").write_text("# edited by hand\n")
    assert main(["compile", "specs/demo.toml", "--out", str(out), "--check"]) == 1
    assert "train.py would change" in capsys.readouterr().err
    plan = json.loads(first["plan.json"])
    assert set(plan) >= {"settings", "reasons", "spec_sha256", "train_py_sha256"}


HOSTILE = [
    'x"""\nimport os; os.system("echo pwned")\n"""',
    "x'\nimport os #",
    "a\\\nb",
    "\\",
    "'''",
    "x\r\nimport os",
    "{{ 7*7 }}{% raw %}",
    "\u2028import os",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_spec_strings_cannot_inject_code(hostile: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hostile column names reach the script only as string literals, exactly as written."""
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    write_jsonl(tmp_path / "d.jsonl", [{hostile: "p", "a": "c"}])
    spec = tmp_path / "s.toml"
    spec.write_text(
        f'[model]\nbase = "m"\n[data]\nsource = "d.jsonl"\nformat = "completion"\nvalidation = 0\n'
        f"[data.columns]\nprompt = {json.dumps(hostile)}\ncompletion = \"a\"\n"
        f'[method]\nkind = "lora"\ntarget_modules = [{json.dumps(hostile)}]\n[hardware]\ndevice = "cpu"\n'
    )
    script = compile_spec(spec).emitted.files["train.py"]
    tree = ast.parse(script)
    constants = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)]
    assert constants.count(hostile) == 2  # the column subscript and the target module
    calls = [n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
    assert "system" not in calls
    imports = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert imports == {"argparse", "json", "torch"}


def test_compile_never_imports_torch() -> None:
    code = ("import sys; from ftc.cli.main import main; "
            "code = main(['compile', 'specs/demo.toml', '--check']); "
            "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets', 'numpy') if m in sys.modules); "
            "import json; print(json.dumps(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env=dict(os.environ, HF_HUB_OFFLINE="1"))
    heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert heavy == [], out.stdout  # what compiling imports, not how long it takes (a loaded machine fails any bound)
