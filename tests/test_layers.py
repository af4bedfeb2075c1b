"""The layers import one way: cli -> {compiler, runtime, tui} -> core; train.py loads no compiler."""

from __future__ import annotations

import ast
import subprocess
import sys

from helpers import REPO

LAYERS = {"core": "core", "compiler": "compiler", "runtime": "runtime", "tui": "tui", "cli": "cli",
          "templates": "templates"}
ALLOWED = {  # layer -> the other ftc layers it may import
    "core": set(),
    "compiler": {"core", "templates"},
    "runtime": {"core"},
    "tui": {"core"},
    "cli": {"core", "compiler", "runtime", "tui"},
    "templates": set(),
}


def _ftc_imports(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names if node.module == "ftc"}
    return {n for n in names if n == "ftc" or n.startswith("ftc.")}


def test_imports_run_one_way() -> None:
    wrong = []
    for layer, folder in LAYERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            for name in _ftc_imports(ast.parse(path.read_text(encoding="utf-8"))):
                target = name.split(".")[1] if "." in name else "?"
                if target != layer and target not in ALLOWED[layer]:
                    wrong.append(f"{path.relative_to(REPO)} imports {name} ({layer} -> {target})")
    assert not wrong, "\n".join(wrong)


def test_the_arrows_are_checked() -> None:
    """The checker itself sees a forbidden arrow (a test that cannot fail proves nothing)."""
    tree = ast.parse("from ftc.compiler.plan import Plan\nimport ftc.tui.app\n")
    assert _ftc_imports(tree) == {"ftc.compiler.plan", "ftc.tui.app"}


def _modules_loaded_by(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO)
    return set(out.stdout.split())


def test_what_train_py_imports_loads_no_compiler() -> None:
    """Every ftc module a train.py can import (the bundled model's path included), without torch's stack."""
    runtime = sorted(p.relative_to(REPO / "runtime").with_suffix("").as_posix().replace("/", ".")
                     for p in (REPO / "runtime").rglob("*.py") if p.name != "__init__.py")
    code = "\n".join(f"import ftc.runtime.{m}" for m in runtime) + "\nimport ftc.core.bundled\nimport ftc.core.data.stage"
    stack = "import torch, transformers, trl, peft, datasets, accelerate"  # they load jinja2 themselves
    loaded = _modules_loaded_by(code)
    ours = loaded - _modules_loaded_by(stack)
    bad = sorted(m for m in ours if m.startswith(("ftc.compiler", "ftc.cli", "ftc.tui", "pydantic", "jinja2")))
    assert not bad, bad
    assert "ftc.runtime.guard" in loaded  # the check ran on what train.py really imports
