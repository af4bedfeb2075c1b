"""`ftc init DATA`: a spec from a dataset. Reads the data, shows what it guessed and why, asks in a
terminal (the guesses are the defaults; `--yes` or a non-terminal stdin skips the questions), compiles
the result, and writes it — never over an existing file unless `--force`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

from ftc.compiler.compile import compile_spec
from ftc.compiler.detect import Guess
from ftc.compiler.init import (DEFAULT_MODEL, Choices, InitError, chat_template_note, guess_format,
                               model_facts_for, read_data, render_spec, safe_name)
from ftc.compiler.spec import FORMAT_FIELDS, REQUIRED_FIELDS, TURN_FIELDS
from ftc.core.errors import BudgetError, RunError, SpecError

FORMATS = tuple(FORMAT_FIELDS)


def _ask(question: str, default: str, options: tuple[str, ...] = ()) -> str:
    """One question with the guess as the default; empty input (or end of input) keeps it."""
    shown = f" ({'/'.join(options)})" if options else ""
    while True:
        try:
            answer = input(f"{question}{shown} [{default}]: ").strip()
        except EOFError:
            return default
        if not answer:
            return default
        if not options or answer in options:
            return answer
        print(f"  choose one of: {', '.join(options)}")


def _columns(values: list[str] | None) -> dict[str, str]:
    out = {}
    for item in values or ():
        name, sep, column = item.partition("=")
        if not sep or not name.strip() or not column.strip():
            raise RunError(f"--column {item}: expected FIELD=COLUMN, e.g. --column prompt=question")
        out[name.strip()] = column.strip()
    return out


def _ask_mapping(guess: Guess, columns: list[str]) -> Guess:
    """The format and its fields' columns, asked with the guesses as defaults."""
    fmt = _ask("format", guess.format, FORMATS)
    if fmt != guess.format:
        guess = Guess(fmt, kind="as answered", reasons=[f"format {fmt}: as answered"])
    print(f"  columns: {', '.join(columns)}")
    for name in FORMAT_FIELDS[fmt]:
        if name in TURN_FIELDS:
            continue
        current = guess.columns.get(name, name if name in columns else "")
        if name not in REQUIRED_FIELDS[fmt] and not current:
            continue
        answer = _ask(f"{name} column", current or "?")
        if answer != current and answer != "?":
            guess.columns[name] = answer
            guess.reasons = [r for r in guess.reasons if not r.startswith(f"{name} = column ")]
            guess.reasons.append(f"{name} = column {answer!r} (as answered)")
    guess.columns = {k: v for k, v in guess.columns.items() if k != v}
    guess.warnings = [w for w in guess.warnings if not w.startswith("check the mapping")]  # it was just checked
    return guess


def _try_compile(text: str, out: Path) -> str | None:
    """None when the spec compiles; else the problems, as `ftc compile` would print them for `out`."""
    with tempfile.TemporaryDirectory(prefix="ftc-init-") as tmp:
        path = Path(tmp) / out.name
        path.write_text(text, encoding="utf-8")
        try:
            compile_spec(path, Path(tmp) / "compiled")
        except SpecError as exc:
            return "\n".join(str(p).replace(str(path), str(out)) for p in exc.problems)
        except BudgetError as exc:
            return f"does not fit: {exc}"
    return None


def _hardware(args: argparse.Namespace, interactive: bool) -> tuple[str | None, float | None]:
    if args.gpu or args.vram_gb is not None or not interactive:
        return args.gpu, args.vram_gb
    answer = _ask("GPU (a name such as RTX 4090 or A100 80GB; cpu to train on the CPU)", "cpu")
    return (None, None) if answer.lower() == "cpu" else (answer, None)


def _write_best(choices: Choices, methods: list[str], out: Path, command: str) -> tuple[str, str | None]:
    """The spec of the first method that compiles (LoRA, else QLoRA when LoRA does not fit), and its problems."""
    text, problems = "", None
    for number, method in enumerate(methods):
        choices.method = method
        text = render_spec(choices, command)
        problems = _try_compile(text, out)
        if problems is None or not problems.startswith("does not fit") or number == len(methods) - 1:
            break
        choices.notes.append(f"{method} does not fit the memory budget; {methods[number + 1]} is tried instead")
    return text, problems


def _command(args: argparse.Namespace, choices: Choices) -> str:
    """The command line that writes this spec again without questions."""
    words = ["ftc", "init", args.data, "--model", choices.model, "--format", choices.guess.format]
    words += [w for name, column in choices.guess.columns.items() for w in ("--column", f"{name}={column}")]
    words += ["--gpu", choices.gpu] if choices.gpu else []
    words += ["--vram-gb", f"{choices.vram_gb:g}"] if choices.vram_gb is not None else []
    return shlex.join(words)


def init(args: argparse.Namespace) -> int:
    out = Path(args.out or f"{safe_name(Path(args.data.rstrip('/')).stem)}.toml")
    if out.exists() and not args.force:
        raise RunError(f"{out} exists; choose another --out, or add --force to replace it")
    interactive = sys.stdin.isatty() and not args.yes
    try:
        data = read_data(args.data, args.split)
        guess = guess_format(data, args.format, _columns(args.column))
        print(f"{data.source}: {data.total} rows, columns {', '.join(data.columns)}")
        for line in guess.reasons + [f"note: {w}" for w in guess.warnings]:
            print(f"  {line}")
        if interactive:
            guess = _ask_mapping(guess, data.columns)
        model = args.model or (_ask("model (bundled alias, hub id or directory)", DEFAULT_MODEL) if interactive
                               else DEFAULT_MODEL)
        facts = model_facts_for(model)
    except InitError as exc:
        raise RunError(str(exc)) from None
    gpu, vram = _hardware(args, interactive)
    choices = Choices(safe_name(out.stem), data, guess, model, gpu=gpu, vram_gb=vram,
                      model_local=facts.origin in ("bundled", "local"))
    choices.notes.append(chat_template_note(facts, guess.format))
    methods = [args.method] if args.method else (["lora", "qlora"] if gpu or vram else ["lora"])
    if interactive and not args.method:
        methods = [_ask("method", methods[0])] + methods[1:]
    text, problems = _write_best(choices, list(dict.fromkeys(methods)), out, _command(args, choices))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w" if args.force else "x", encoding="utf-8") as handle:  # "x": never over a file made meanwhile
        handle.write(text)
    for note in choices.notes:
        print(f"  note: {note}")
    if problems is not None:
        print(f"wrote {out}, but it does not compile yet; fix these, then run: ftc compile {out}\n{problems}",
              file=sys.stderr)
        return 2
    print(f"wrote {out} (method {choices.method}); it compiles. Next: ftc data {out}, then ftc run {out}")
    return 0
