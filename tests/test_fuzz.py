"""Fuzz: hostile values for every key of the spec schema and hostile arguments for every command.

Deterministic (seeded). By default a sample of the cases runs in-process through `ftc.cli.main.main`
(well under a minute); `pytest -m slow tests/test_fuzz.py` runs every case. Each case asserts what
the project guide promises for bad input: exit 0, 1 or 2 (never 3, ftc's "internal error"), no
traceback in the output, no hang past a bound, and no file written outside the project's
compiled/, runs/ and --out folders.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import io
import json
import math
import os
import random
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from helpers import run_ftc, write_jsonl
from pydantic import BaseModel

from ftc.cli.main import main
from ftc.compiler.methods import METHODS
from ftc.compiler.spec import Spec

SEED = 18
FAST_SPEC_CASES = 160
CASE_SECONDS = 30  # one in-process command; a hang is far longer (the machine is shared and loaded)


def _nested_list(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _nested_table(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


HOSTILE: list[tuple[str, Any]] = [
    ("str", "x"), ("str-int", "8"), ("str-bool", "true"), ("empty", ""), ("blank", "  "), ("long", "a" * 5000),
    ("long-path", "d/" * 2500), ("long-part", "p" * 300), ("control", "a\x1b[31mred\x07\nb\rc"), ("nul", "a\x00b"),
    ("markup", "[/x]"), ("markup-bold", "[bold red]x[/]"), ("dotdot", "../../x"), ("abs", "/etc/passwd"),
    ("glob", "**/*"), ("int", 1), ("zero", 0), ("negative", -1), ("int64", 2**63 - 1), ("int-huge", 2**64),
    ("float", 0.5), ("negative-float", -0.5), ("float-huge", 1e308), ("inf", math.inf), ("nan", math.nan),
    ("true", True), ("false", False), ("array-empty", []), ("array", ["x"]), ("array-mixed", [1, "a", True]),
    ("array-long", ["q_proj"] * 2000), ("table-empty", {}), ("table", {"x": 1}), ("deep-array", _nested_list(40)),
    ("deep-table", _nested_table(40)), ("datetime", datetime.datetime(1979, 5, 27, 7, 32)),
]

# ------------------------------------------------------------------------------ a TOML writer


def _key(key: Any) -> str:
    key = str(key)
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, (int, datetime.datetime)):
        return value.isoformat() if isinstance(value, datetime.datetime) else str(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are TOML's (\uXXXX for control characters)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"


def to_toml(doc: dict[str, Any], prefix: tuple[str, ...] = ()) -> str:
    """Tables as [sections] (scalars first), everything else inline."""
    lines = ["[" + ".".join(_key(p) for p in prefix) + "]"] if prefix else []
    lines += [f"{_key(k)} = {_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    return "\n".join(lines + [to_toml(v, (*prefix, k)) for k, v in doc.items() if isinstance(v, dict)]) + "\n"


# ------------------------------------------------------------------------------ the cases


def _schema_keys(model: type[BaseModel], prefix: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    """Every key of the schema (a table's own path too), walking nested models and arrays of tables."""
    yield prefix
    for name, field in model.model_fields.items():
        annotation, path = field.annotation, (*prefix, name)
        if model is Spec and name == "method":
            continue  # per kind, below
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _schema_keys(annotation, path)
        elif get_origin(annotation) is list and isinstance(get_args(annotation)[0], type) and issubclass(
                get_args(annotation)[0], BaseModel):
            yield path
            yield from _schema_keys(get_args(annotation)[0], (*path, 0))
        else:
            yield path


def _cases() -> list[tuple[str, tuple[Any, ...], str, Any]]:
    """(method kind, key path, value label, value): every key of the schema, every hostile value."""
    cases = [("lora", path, label, value) for path in list(_schema_keys(Spec, ()))[1:] for label, value in HOSTILE]
    for kind, cls in METHODS.items():
        for name in ("", *cls.model_fields):
            path = ("method", name) if name else ("method",)
            cases += [(kind, path, label, value) for label, value in HOSTILE]
    return cases


COMMANDS = [("compile",), ("compile", "--check"), ("plan",), ("plan", "--json"), ("data", "-n", "1"),
            ("compile", "--out", "out/x")]


def _commanded() -> list[tuple[str, tuple[Any, ...], str, Any, tuple[str, ...]]]:
    """Every case with the command it runs, chosen by the seeded generator."""
    rng = random.Random(SEED)
    return [(kind, path, label, value, rng.choice(COMMANDS)) for kind, path, label, value in _cases()]


def _ident(kind: str, path: tuple[Any, ...], label: str, command: tuple[str, ...]) -> str:
    return f"{' '.join(command)}:{kind}:{'.'.join(map(str, path))}={label}"


SLOW_CHUNKS = 40
"""The slow mode runs every case, in this many tests (one per case would take longer to collect)."""


# ------------------------------------------------------------------------------ running a case


class Hang(BaseException):
    """Raised by the timer: a BaseException, so that main's catch-all does not turn it into exit 3."""


@contextlib.contextmanager
def _bounded(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with its size and mtime, without following symlinks."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            info = path.lstat()
            found[path.relative_to(root).as_posix()] = (info.st_size, info.st_mtime_ns)
    return found


def run_cli(argv: list[str], root: Path, allowed: tuple[str, ...] = ("project/compiled/", "project/out/",
                                                                     "project/runs/")) -> tuple[int, str]:
    """`ftc ARGV` in-process from root/project; asserts the promises and returns (exit code, output)."""
    before = _tree(root)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _bounded(CASE_SECONDS):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    text = out.getvalue() + err.getvalue()
    assert code in (0, 1, 2), f"exit {code}: {text[-2000:]}"
    assert "Traceback" not in text and "internal error" not in text, text[-2000:]
    after = _tree(root)
    written = sorted(p for p, stamp in after.items() if before.get(p) != stamp and not p.startswith(allowed)
                     and not any(a.startswith(p + "/") for a in allowed))
    assert not written, f"wrote outside {allowed}: {written[:5]}"
    return code, text


# ------------------------------------------------------------------------------ the project


BASE = {"name": "fuzz", "model": {"base": "MODEL"}, "data": {"source": "d.jsonl", "format": "completion",
                                                             "columns": {"prompt": "q", "completion": "a"}},
        "method": {"kind": "lora"}, "train": {"max_steps": 2}, "hardware": {"device": "cpu"}, "eval": {}}


@pytest.fixture
def project(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path/project: the working directory, with a data file; the model lives outside it."""
    root = tmp_path / "project"
    root.mkdir()
    write_jsonl(root / "d.jsonl", [{"q": f"question {i}", "a": f"answer {i}"} for i in range(12)])
    monkeypatch.chdir(root)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


def _spec(tiny_model: Path, kind: str, path: tuple[Any, ...], value: Any) -> str:
    doc = copy.deepcopy(BASE)
    doc["model"]["base"] = str(tiny_model)
    doc["method"] = {"kind": kind}
    if path[:2] == ("data", "mix"):
        doc["data"]["mix"] = [{"source": "d.jsonl"}]
    target = doc
    for part in path[:-1]:
        target = target[part] if isinstance(part, int) else target.setdefault(part, {})
    target[path[-1]] = value
    return to_toml(doc)


def _check_spec_case(project: Path, tiny_model: Path, kind: str, path: tuple[Any, ...], value: Any,
                     command: tuple[str, ...]) -> None:
    (project / "s.toml").write_text(_spec(tiny_model, kind, path, value), encoding="utf-8")
    run_cli([command[0], "s.toml", *command[1:]], project.parent)


@pytest.mark.parametrize(("kind", "path", "value", "command"),
                         [pytest.param(kind, path, value, command, id=_ident(kind, path, label, command))
                          for kind, path, label, value, command in random.Random(SEED).sample(_commanded(),
                                                                                              FAST_SPEC_CASES)])
def test_hostile_spec_value(project: Path, tiny_model: Path, kind: str, path: tuple[Any, ...], value: Any,
                            command: tuple[str, ...]) -> None:
    _check_spec_case(project, tiny_model, kind, path, value, command)


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(SLOW_CHUNKS))
def test_hostile_spec_value_every_case(project: Path, tiny_model: Path, chunk: int) -> None:
    """Every case (one chunk of them): the failures are listed together."""
    failed = []
    for kind, path, label, value, command in _commanded()[chunk::SLOW_CHUNKS]:
        try:
            _check_spec_case(project, tiny_model, kind, path, value, command)
        except AssertionError as exc:
            failed.append(f"{_ident(kind, path, label, command)}: {str(exc)[:300]}")
    assert not failed, "\n".join(failed)


def test_the_fuzz_reaches_every_key() -> None:
    """The generator walks the schema: a key added to a model is fuzzed without editing this file."""
    paths = {(kind, ".".join(map(str, path))) for kind, path, _, _ in _cases()}
    assert ("lora", "data.clean.near_dedup") in paths and ("lora", "data.mix.0.weight") in paths
    assert all((kind, f"method.{name}") in paths for kind, cls in METHODS.items() for name in cls.model_fields
               if name != "kind")
    assert all(("lora", f"{table}.{name}") in paths for table in ("model", "train", "hardware", "eval")
               for name in Spec.model_fields[table].annotation.model_fields)  # type: ignore[union-attr]


# ------------------------------------------------------------------------------ hostile spec files


def _spec_file(project: Path, tiny_model: Path, kind: str) -> str:
    """Write one hostile spec file into the project; returns its path as given on the command line."""
    good = _spec(tiny_model, "lora", ("name",), "fuzz")
    files: dict[str, Any] = {
        "dotted": ("...toml", good.replace('name = "fuzz"\n', "")), "markup-name": ("a[/x].toml", good),
        "big": ("big.toml", good + "# " + "x" * (2 << 20) + "\n"), "binary": ("binary.toml", b"\xff\xfe\x00[model"),
        "deep": ("deep.toml", "a = " + "[" * 600 + "]" * 600 + "\n"),
        "deep-tables": ("deep2.toml", "a = " + "{b = " * 600 + "1" + "}" * 600 + "\n"),
        "keys": ("keys.toml", good.replace("[train]\n", "[train]\n" + "".join(f"k{i} = 1\n" for i in range(20_000)))),
        "newline-key": ("nl.toml", good.replace("[train]\n", '[train]\n"a\\ns.toml:1: forged" = 1\n')),
    }
    if kind == "fifo":
        os.mkfifo(project / "fifo.toml")
        return "fifo.toml"
    if kind == "directory":
        (project / "adir.toml").mkdir()
        return "adir.toml"
    if kind == "loop":
        (project / "loop.toml").symlink_to("loop.toml")
        return "loop.toml"
    if kind == "missing":
        return "missing.toml"
    name, content = files[kind]
    (project / name).parent.mkdir(exist_ok=True)
    (project / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return name


SPEC_FILES = ["dotted", "markup-name", "big", "binary", "deep", "deep-tables", "keys", "newline-key", "fifo",
              "directory", "loop", "missing"]
# The markup-name spec is valid: its path reaches the console in `ftc plan`, which must print it as written.


@pytest.mark.parametrize(("kind", "command"), [(kind, command) for kind in SPEC_FILES for command in (
    ("compile",), ("plan",), ("plan", "--json"), ("data",)) if command == ("compile",) or kind not in ("keys", "big")])
def test_hostile_spec_file(project: Path, tiny_model: Path, kind: str, command: tuple[str, ...]) -> None:
    path = _spec_file(project, tiny_model, kind)
    code, text = run_cli([command[0], path, *command[1:]], project.parent)
    if kind != "markup-name":
        assert code == 2 and "problem" in text, text[-2000:]
    if kind == "keys":
        assert "... and 19950 more problems" in text and "20000 problems in the spec" in text
    assert not (project.parent / "compiled").exists() and not (project / "compiled" / "..").resolve() == project.parent


# ------------------------------------------------------------------------------ other commands' arguments


def _run_dirs(project: Path) -> None:
    """Run directories a user might point at by mistake."""
    (project / "empty").mkdir()
    (project / "a[" / "x]").mkdir(parents=True)  # the run directory "a[/x]": rich markup's closing tag
    garbage = project / "garbage"
    garbage.mkdir()
    (garbage / "events.jsonl").write_text('{"type": "step", "loss": "high"}\nnot json\n[1, 2]\n')
    (garbage / "plan.json").write_text('{"settings": [1], "memory": "x"')


ARGV = [("runs", "missing"), ("runs", "d.jsonl"), ("runs", "empty"), ("runs", "a[/x]"), ("monitor", "a[/x]", "--plain"),
        ("monitor", "missing", "--plain"), ("monitor", "d.jsonl", "--plain"), ("monitor", "empty", "--plain"),
        ("merge", "missing"), ("merge", "d.jsonl"), ("merge", "empty"),
        ("generate", "missing", "--prompt", "hi"), ("generate", "empty", "--prompt", "hi"),
        ("generate", "empty", "--prompt", "hi", "--max-new-tokens", "-1"),
        ("generate", "empty", "--prompt", "hi", "--max-new-tokens", "0"),
        ("generate", "empty", "--prompt", "hi", "--max-new-tokens", "99999999999"),
        ("generate", "empty", "--prompt", "hi", "--max-new-tokens", "x"),
        ("data", "s.toml", "-n", "-5"), ("data", "s.toml", "-n", "x"), ("data", "s.toml", "-n", "10000000000"),
        ("compile", "s.toml", "--out", "d.jsonl"), ("compile", "s.toml", "--out", "d.jsonl/x"),
        ("runs", "garbage"), ("monitor", "garbage", "--plain"), ("merge", "garbage"),
        ("generate", "garbage", "--prompt", "hi"), ("nosuchcommand",), ()]
_USAGE = {a for a in ARGV if "-n" in a or "--max-new-tokens" in a or a in (("nosuchcommand",), ())}


@pytest.mark.parametrize("argv", [pytest.param(a, id=" ".join(a) or "no-args") for a in ARGV])
def test_hostile_arguments(project: Path, tiny_model: Path, argv: tuple[str, ...]) -> None:
    _run_dirs(project)
    (project / "s.toml").write_text(_spec(tiny_model, "lora", ("name",), "fuzz"), encoding="utf-8")
    code, text = run_cli(list(argv), project.parent)
    if argv in _USAGE:
        assert code == 2 and "usage:" in text, text[-2000:]


# ------------------------------------------------------------------------------ ftc run, as a process


@pytest.mark.parametrize("kind", ["fifo", "dotted", "deep"])
def test_run_refuses_hostile_spec_files(project: Path, tiny_model: Path, kind: str) -> None:
    """`ftc run` on a FIFO, a `...toml` without a name, a 600-deep file: exit 2 at once, nothing written."""
    path = _spec_file(project, tiny_model, kind)
    before = _tree(project.parent)
    result = run_ftc("run", path, "--no-tui", cwd=project, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert _tree(project.parent) == before
