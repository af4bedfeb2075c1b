"""The `ftc` command. The only place that catches FtcError; torch and the runtime load lazily."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ftc.compiler.errors import FtcError, SpecError


def _compile(args: argparse.Namespace) -> int:
    from ftc.compiler.compile import compile_spec

    result = compile_spec(args.spec, args.out)
    out = result.out_dir
    if args.check:
        stale = result.stale_files()
        if stale:
            print(f"{out}/ is stale for {result.source.display}: {', '.join(stale)} would change; "
                  f"run: ftc compile {result.source.display}" + (f" --out {args.out}" if args.out else ""),
                  file=sys.stderr)
            return 1
        print(f"{out}/ is up to date with {result.source.display}")
        return 0
    changed = result.write()
    what = ", ".join(changed) if changed else "nothing changed"
    print(f"compiled {result.source.display} -> {out}/ ({what})")
    for reason in result.plan.reasons:
        print(f"  {reason}")
    for note in result.plan.notes:
        print(f"  note: {note}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    import json

    from ftc.compiler.compile import compile_spec

    result = compile_spec(args.spec)
    plan = result.plan
    if args.json:  # plan.json's core: settings, memory, budget, reasons (+ name, provenance, notes)
        print(json.dumps(plan.to_json(), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    if plan.memory is not None:
        table = Table(title=f"estimated peak memory of one step: {result.source.display}")
        table.add_column("component")
        table.add_column("GiB", justify="right")
        table.add_column("share", justify="right")
        total = plan.memory.total
        for key, value in plan.memory.as_dict().items():
            if key == "total":
                continue
            table.add_row(key, f"{value / 2**30:,.2f}", f"{100 * value / total:.0f} %" if total else "")
        table.add_row("total", f"{total / 2**30:,.2f}", "", style="bold")
        if plan.budget_bytes:
            table.add_row("budget", f"{plan.budget_bytes / 2**30:,.2f}",
                          f"{100 * total / plan.budget_bytes:.0f} % used", style="bold")
        console.print(table)
    else:
        console.print("no memory estimate: the model's config is not available offline")
    decisions = Table(title="decisions", show_header=False)
    for reason in plan.reasons:
        topic, _, text = reason.partition(": ")
        decisions.add_row(topic, text)
    console.print(decisions)
    for note in plan.notes:
        console.print(f"note: {note}", markup=False)
    return 0


def _runs(args: argparse.Namespace) -> int:
    import datetime as dt
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from ftc.tui.state import read_state

    root = Path(args.dir)
    found = sorted(p.parent for p in root.glob("**/events.jsonl"))
    console = Console(highlight=False)
    if not found:
        console.print(f"no runs under {root}/ (a run directory holds an events.jsonl; start one with ftc run SPEC)")
        return 0
    table = Table(title=f"runs under {root}/")
    for column in ("run", "state", "steps", "train loss", "best val loss", "exact match", "last event"):
        table.add_column(column, justify="right" if column in ("steps", "train loss", "best val loss") else "left")
    for run_dir in found:
        state = read_state(run_dir)
        steps = f"{state.step}/{state.total_steps}" if state.total_steps else str(state.step)
        loss = f"{state.train_loss[-1][1]:.4f}" if state.train_loss else ""
        best = f"{state.best_eval_loss:.4f}" if state.best_eval_loss is not None else ""
        match = ""
        if state.exact_match:
            n, before, after = state.exact_match
            match = f"{before}/{n} -> {after}/{n}"
        when = dt.datetime.fromtimestamp(state.updated).strftime("%Y-%m-%d %H:%M") if state.updated else ""
        style = {"completed": "green", "failed": "red", "stopped": "yellow"}.get(state.state, "")
        table.add_row(Text(run_dir.relative_to(root).as_posix()), Text(state.state, style=style),
                      steps, loss, best, match, when)
    console.print(table)
    return 0


def _run(args: argparse.Namespace) -> int:
    from ftc.runtime.launch import run_spec

    return run_spec(args.spec, run_dir=args.run_dir, build_dir=args.out, tui=not args.no_tui, fresh=args.fresh,
                    resume_anyway=args.resume_anyway)


def build_parser() -> argparse.ArgumentParser:
    from ftc.compiler.compile import VERSION

    parser = argparse.ArgumentParser(prog="ftc", description="Compile a fine-tuning spec into a reviewable "
                                     "training script, and run it.")
    parser.add_argument("--version", action="version", version=f"ftc {VERSION}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("compile", help="validate a spec and write build/<name>/{train.py,plan.json,plan.md}")
    p.add_argument("spec", help="the spec file (.toml)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: build/<name>)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if DIR is stale")
    p.set_defaults(handler=_compile)

    p = commands.add_parser("plan", help="show the memory estimate and every planning decision")
    p.add_argument("spec", help="the spec file (.toml)")
    p.add_argument("--json", action="store_true", help="print one JSON object (bytes as integers)")
    p.set_defaults(handler=_plan)

    p = commands.add_parser("runs", help="a table of the runs under DIR with their state and losses")
    p.add_argument("dir", nargs="?", default="runs", help="where runs are (default: runs)")
    p.set_defaults(handler=_runs)

    p = commands.add_parser("run", help="compile if needed, then run the script under supervision")
    p.add_argument("spec", help="the spec file (.toml)")
    p.add_argument("--run-dir", metavar="DIR", help="where the run goes (default: runs/<name>/<timestamp>)")
    p.add_argument("--out", metavar="DIR", help="build directory (default: build/<name>)")
    p.add_argument("--no-tui", action="store_true", help="plain progress lines instead of the monitor")
    p.add_argument("--fresh", action="store_true", help="start --run-dir over instead of resuming it "
                   "(its old files move to DIR/previous/)")
    p.add_argument("--resume-anyway", action="store_true", help="resume --run-dir even though the spec or "
                   "data changed in a way that alters the training")
    p.set_defaults(handler=_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except SpecError as exc:
        count = len(exc.problems)
        print(str(exc), file=sys.stderr)
        print(f"{count} problem{'s' if count != 1 else ''} in the spec; nothing was written", file=sys.stderr)
        return exc.exit_code
    except FtcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `ftc plan --json | head`: the reader left; nothing to report
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns bugs into a message
        if args.debug:
            raise
        print(f"internal error: {type(exc).__name__}: {exc}\nthis is a bug in ftc; rerun with --debug for the "
              "traceback and report it", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
