"""The `ftc` command. The only place that catches FtcError; torch and the runtime load lazily."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ftc.core.errors import DataProblem, FtcError, RunError, SpecError


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


def _data(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ftc.compiler.compile import compile_spec
    from ftc.compiler.emit import data_settings

    result = compile_spec(args.spec, args.out)
    from ftc.core.data.encode import DataError
    from ftc.cli.datashow import run_stage, show, stats_json

    assert result.facts.model is not None
    report_dir = result.out_dir / "data"
    try:
        prepared, tokenizer = run_stage(result.plan, data_settings(result.plan), result.facts.model.origin, report_dir)
    except DataError as exc:
        raise DataProblem(f"{result.source.display}: {exc}") from None
    if args.json:
        print(stats_json(prepared, report_dir))
    else:
        show(prepared, tokenizer, args.n, Console(highlight=False), report_dir)
    return 0


def _interactive(args: argparse.Namespace) -> bool:
    """Whether to show the Textual monitor: a terminal on both ends and no --plain."""
    return not args.plain and sys.stdout.isatty() and sys.stdin.isatty()


def _run_dir(path: str) -> Path:
    run_dir = Path(path)
    if not (run_dir / "events.jsonl").is_file():
        hint = "list the runs with: ftc runs" + (f" {path}" if run_dir.is_dir() else "")
        what = "does not exist" if not run_dir.exists() else "is not a run directory (it has no events.jsonl)"
        raise RunError(f"{path} {what}; {hint}")
    return run_dir


def _runs(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ftc.tui.state import read_state
    from ftc.tui.summary import find_runs, run_summary, runs_table

    root = Path(args.dir)
    console = Console(highlight=False)
    if (root / "events.jsonl").is_file():  # one run: its summary
        console.print(run_summary(root))
        return 0
    found = find_runs(root)
    if not found:
        console.print(f"no runs under {root}/ (a run directory holds an events.jsonl; start one with ftc run SPEC)")
        return 0
    if _interactive(args):
        from ftc.tui.runs import RunsApp  # Textual loads only here

        RunsApp(root).run()
        return 0
    console.print(runs_table(root, [(run_dir, read_state(run_dir)) for run_dir in found]))
    return 0


def _monitor(args: argparse.Namespace) -> int:
    run_dir = _run_dir(args.run_dir)
    if not _interactive(args):
        from rich.console import Console

        from ftc.tui.summary import run_summary

        Console(highlight=False).print(run_summary(run_dir))
        return 0
    from ftc.tui.app import make_app  # Textual loads only here

    make_app(run_dir).run()
    return 0


def _run(args: argparse.Namespace) -> int:
    from ftc.cli.supervise import run_spec

    return run_spec(args.spec, run_dir=args.run_dir, build_dir=args.out, tui=not args.no_tui, fresh=args.fresh,
                    resume_anyway=args.resume_anyway)


def _merge(args: argparse.Namespace) -> int:
    from ftc.cli.adapters import merge_run

    print(f"merging the adapter of {args.run_dir} into its base ...", flush=True)
    out, difference = merge_run(args.run_dir, args.out)
    print(f"saved a merged transformers model to {out}/ (load it with AutoModelForCausalLM.from_pretrained)")
    print(f"largest logit difference from the model as trained, on a probe sentence: {difference:.2e}")
    if difference > 1e-2:
        print("note: the base was quantized in training; the merged weights are its dequantized values plus the "
              "adapter, and quantized kernels round differently (on CPU also DoRA's weight norm), so outputs "
              "differ by about this much")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from ftc.cli.adapters import load_adapters
    from ftc.runtime.trainer import generate_answers

    model, tokenizer = load_adapters(args.run_dirs)
    names = list(model.peft_config)
    chosen = names if args.adapter is None else [args.adapter]
    for name in chosen:
        if name not in names:
            raise RunError(f"no adapter named {name!r}; loaded: {', '.join(names)}")
        model.set_adapter(name)
        conversation = [{"role": "user", "content": args.prompt}, {"role": "assistant", "content": ""}]
        answer = generate_answers(model, tokenizer, [conversation], args.max_new_tokens)[0]
        print(f"[{name}] {answer}" if len(chosen) > 1 else answer)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ftc.compiler.compile import VERSION

    parser = argparse.ArgumentParser(prog="ftc", description="Compile a fine-tuning spec into a reviewable "
                                     "training script, and run it.")
    parser.add_argument("--version", action="version", version=f"ftc {VERSION}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _compiler_commands(commands)
    _run_commands(commands)
    from ftc.cli.evalcmd import add_commands  # ftc eval, ftc report

    add_commands(commands)
    return parser


def _compiler_commands(commands: Any) -> None:
    p = commands.add_parser("compile", help="validate a spec and write compiled/<name>/{train.py,plan.json,plan.md}")
    p.add_argument("spec", help="the spec file (.toml)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: compiled/<name>)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if DIR is stale")
    p.set_defaults(handler=_compile)

    p = commands.add_parser("plan", help="show the memory estimate and every planning decision")
    p.add_argument("spec", help="the spec file (.toml)")
    p.add_argument("--json", action="store_true", help="print one JSON object (bytes as integers)")
    p.set_defaults(handler=_plan)

    p = commands.add_parser("data", help="show examples as the model will see them (trained tokens highlighted) "
                            "and the data statistics; dropped rows go to DIR/data/dropped.jsonl")
    p.add_argument("spec", help="the spec file (.toml)")
    p.add_argument("-n", type=int, default=3, metavar="N", help="examples to render (default 3)")
    p.add_argument("--json", action="store_true", help="print the statistics as one JSON object")
    p.add_argument("--out", metavar="DIR", help="output directory for the data report (default: compiled/<name>)")
    p.set_defaults(handler=_data)


def _run_commands(commands: Any) -> None:
    p = commands.add_parser("runs", help="a table of the runs under DIR with their state and losses")
    p.add_argument("dir", nargs="?", default="runs", help="where runs are (default: runs), or one run directory "
                   "for its summary")
    p.add_argument("--plain", action="store_true", help="print the table even in a terminal (no monitor)")
    p.set_defaults(handler=_runs)

    p = commands.add_parser("monitor", help="watch a run live (or review a finished one) in the terminal")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (runs/<name>/<id>)")
    p.add_argument("--plain", action="store_true", help="print the run's summary instead of opening the monitor")
    p.set_defaults(handler=_monitor)

    p = commands.add_parser("run", help="compile if needed, then run the script under supervision")
    p.add_argument("spec", help="the spec file (.toml)")
    p.add_argument("--run-dir", metavar="DIR", help="where the run goes (default: runs/<name>/<timestamp>)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: compiled/<name>)")
    p.add_argument("--no-tui", action="store_true", help="plain progress lines instead of the monitor")
    p.add_argument("--fresh", action="store_true", help="start --run-dir over instead of resuming it "
                   "(its old files move to DIR/previous/)")
    p.add_argument("--resume-anyway", action="store_true", help="resume --run-dir even though the spec or "
                   "data changed in a way that alters the training")
    p.set_defaults(handler=_run)

    p = commands.add_parser("merge", help="fold a finished run's LoRA-family adapter into its base model")
    p.add_argument("run_dir", help="a run directory (runs/<name>/<timestamp>)")
    p.add_argument("--out", metavar="DIR", help="where the merged model goes (default: RUN_DIR/merged)")
    p.set_defaults(handler=_merge)

    p = commands.add_parser("generate", help="load the adapters of one or more runs on their shared base and "
                            "answer a prompt with each (or one, by name)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished runs that trained adapters of one base")
    p.add_argument("--prompt", required=True, help="the user message to answer")
    p.add_argument("--adapter", metavar="NAME", help="answer with this adapter only (default: each in turn)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit (default: 64)")
    p.set_defaults(handler=_generate)


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
