"""The `ftc` command. The only place that catches FtcError; torch and the runtime load lazily."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ftc.core.errors import DataProblem, FtcError, RunError, SpecError
from ftc.core.text import printable


def _overrides(args: argparse.Namespace) -> Any:
    """The `--set KEY=VALUE` flags, parsed (compiler/overrides.py has the value rule)."""
    from ftc.compiler.overrides import parse_overrides

    return parse_overrides(getattr(args, "set", None) or ())


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a spec value, e.g. --set "
                   "train.epochs=2; VALUE is read as TOML (2, 1e-4, true, [..]), else as a plain string; repeatable")


def _compile(args: argparse.Namespace) -> int:
    from ftc.cli.lrfind import run_range_test
    from ftc.compiler.compile import compile_spec

    result = compile_spec(args.spec, args.out, _overrides(args), range_test=run_range_test)
    out = result.out_dir
    if args.check:
        stale = result.stale_files()
        if stale:
            print(printable(f"{out}/ is stale for {result.source.display}: {', '.join(stale)} would change; "
                            f"run: ftc compile {result.source.display}" + (f" --out {args.out}" if args.out else "")),
                  file=sys.stderr)
            return 1
        print(printable(f"{out}/ is up to date with {result.source.display}"))
        return 0
    changed = result.write()
    what = ", ".join(changed) if changed else "nothing changed"
    print(printable(f"compiled {result.source.display} -> {out}/ ({what})"))
    for reason in result.plan.reasons:
        print(printable(f"  {reason}"))
    for note in result.plan.notes:
        print(printable(f"  note: {note}"))
    return 0


def _plan(args: argparse.Namespace) -> int:
    import json

    from ftc.cli.lrfind import run_range_test
    from ftc.compiler.compile import compile_spec

    if args.gpus or args.devices:
        from ftc.cli.whatif import show_what_if

        return show_what_if(args, _overrides(args))
    result = compile_spec(args.spec, overrides=_overrides(args), range_test=run_range_test)
    plan = result.plan
    if args.json:  # plan.json's core: settings, memory, budget, reasons (+ name, provenance, notes)
        print(json.dumps(plan.to_json(), indent=2))
        return 0
    from ftc.cli.planshow import show_plan, show_probe

    console = show_plan(result)
    if args.probe:
        show_probe(args.spec, _overrides(args), plan, console, steps=args.probe_steps, timeout=args.probe_timeout)
    return 0


def _init(args: argparse.Namespace) -> int:
    from ftc.cli.init import init

    return init(args)


def _schema(args: argparse.Namespace) -> int:
    from ftc.compiler.schema import is_ftc_schema, schema_text

    text = schema_text()
    if not args.out:
        sys.stdout.write(text)
        return 0
    out = Path(args.out)
    if out.exists() and not args.force and not is_ftc_schema(out):
        raise RunError(f"{out} exists and is not an ftc schema; choose another --out or add --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote the spec's JSON Schema to {out}; point a spec at it with a first line: #:schema {out}")
    return 0


def _data(args: argparse.Namespace) -> int:
    from ftc.cli.console import SafeConsole
    from ftc.cli.lrfind import run_range_test
    from ftc.compiler.compile import compile_spec
    from ftc.compiler.emit import data_settings

    result = compile_spec(args.spec, args.out, _overrides(args), range_test=run_range_test)
    from ftc.core.data.encode import DataError
    from ftc.cli.datashow import run_stage, show, stats_json

    assert result.facts.model is not None
    report_dir = result.out_dir / "data"
    if result.plan["data_format"] == "preference":
        return _preference_data(args, result, report_dir)
    try:
        prepared, tokenizer = run_stage(result.plan, data_settings(result.plan), result.facts.model.origin, report_dir)
    except DataError as exc:
        raise DataProblem(f"{result.source.display}: {exc}") from None
    if args.json:
        print(stats_json(prepared, report_dir))
    else:
        show(prepared, tokenizer, args.n, SafeConsole(), report_dir)
    return 0


def _preference_data(args: argparse.Namespace, result: Any, report_dir: Path) -> int:
    from ftc.cli.console import SafeConsole
    from ftc.cli.prefshow import preference_json, run_preference, show_preference
    from ftc.compiler.emit import data_settings
    from ftc.core.data.encode import DataError

    try:
        data, tokenizer = run_preference(result.plan, data_settings(result.plan), result.facts.model.origin, report_dir)
    except DataError as exc:
        raise DataProblem(f"{result.source.display}: {exc}") from None
    if args.json:
        print(preference_json(data, report_dir))
    else:
        show_preference(data, tokenizer, args.n, SafeConsole(), report_dir)
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
    from ftc.cli.console import SafeConsole
    from ftc.tui.state import read_state
    from ftc.tui.summary import find_runs, run_summary, runs_table

    root = Path(args.dir)
    console = SafeConsole()
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
        from ftc.cli.console import SafeConsole
        from ftc.tui.summary import run_summary

        SafeConsole().print(run_summary(run_dir))
        return 0
    from ftc.tui.app import make_app  # Textual loads only here

    make_app(run_dir).run()
    return 0


def _run(args: argparse.Namespace) -> int:
    from ftc.cli.supervise import run_spec
    from ftc.core.paths import check_output_dir

    if args.run_dir is not None:
        check_output_dir(args.run_dir, "--run-dir")

    from ftc.cli.launch import Node

    return run_spec(args.spec, run_dir=args.run_dir, build_dir=args.out, tui=not args.no_tui, fresh=args.fresh,
                    resume_anyway=args.resume_anyway, force=args.force, overrides=_overrides(args),
                    node=Node(args.node_rank, args.master))


def _merge(args: argparse.Namespace) -> int:
    from ftc.cli.adapters import merge_run

    print(printable(f"merging the adapter of {args.run_dir} into its base ..."), flush=True)
    out, difference = merge_run(args.run_dir, args.out)
    print(printable(f"saved a merged transformers model to {out}/")
          + " (load it with AutoModelForCausalLM.from_pretrained)")
    print(f"largest logit difference from the model as trained, on a probe sentence: {difference:.2e}")
    if difference > 1e-2:
        print("note: the base was quantized in training; the merged weights are its dequantized values plus the "
              "adapter, and quantized kernels round differently (on CPU also DoRA's weight norm), so outputs "
              "differ by about this much")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from ftc.cli.adapters import check_prompt, load_adapters

    model, tokenizer = load_adapters(args.run_dirs)
    check_prompt(model, tokenizer, args.prompt, args.max_new_tokens)
    from ftc.runtime.trainer import generate_answers  # after load_adapters: a damaged run is refused sooner

    names = list(model.peft_config)
    chosen = names if args.adapter is None else [args.adapter]
    for name in chosen:
        if name not in names:
            raise RunError(f"no adapter named {name!r}; loaded: {', '.join(names)}")
        model.set_adapter(name)
        conversation = [{"role": "user", "content": args.prompt}, {"role": "assistant", "content": ""}]
        answer = generate_answers(model, tokenizer, [conversation], args.max_new_tokens)[0]
        print(printable(f"[{name}] {answer}" if len(chosen) > 1 else answer))
    return 0


def _bounded(low: int, high: int) -> Any:
    """An argparse type: an integer in low..high, else a usage error (exit 2) saying the range."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high} (got {value})")
        return value
    return parse


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
    _add_set(p)
    p.set_defaults(handler=_compile)

    p = commands.add_parser("plan", help="show the memory estimate and every planning decision")
    p.add_argument("spec", help="the spec file (.toml)")
    p.add_argument("--json", action="store_true", help="print one JSON object (bytes as integers)")
    _add_set(p)
    p.add_argument("--gpus", metavar="LIST", help="what-if: plan for each GPU of a comma-separated list "
                   "(\"RTX 4090, A100 80GB, H100\"): what fits, micro-batch, peak memory, estimated time")
    p.add_argument("--probe", action="store_true", help="measure the step time here: run train.py for a few steps "
                   "(in a temporary directory) and extrapolate to the plan's steps")
    p.add_argument("--probe-steps", type=int, default=4, metavar="N", help="steps of the probe (default 4)")
    p.add_argument("--probe-timeout", type=float, default=300, metavar="S", help="time limit of the probe (default 300 s)")
    p.add_argument("--devices", metavar="N,N", help="what-if: device counts per GPU (e.g. 1,2,8), each planned "
                   "with its strategy")
    p.set_defaults(handler=_plan)

    p = commands.add_parser("init", help="write a commented spec for a dataset: its format and columns guessed "
                            "from names and content, asked in a terminal with the guesses as defaults")
    p.add_argument("data", metavar="DATA", help="a .jsonl/.json/.csv/.parquet/.txt file, a glob, or a saved dataset dir")
    p.add_argument("--model", metavar="M", help="base model: bundled alias, hub id or directory "
                   "(default: smollm2-135m-instruct)")
    p.add_argument("--method", metavar="K", help="method kind (default: lora; qlora when lora does not fit --gpu)")
    hardware = p.add_mutually_exclusive_group()
    hardware.add_argument("--gpu", metavar="NAME", help="the GPU to fit, a catalog name such as \"RTX 4090\"")
    hardware.add_argument("--vram-gb", type=float, metavar="N", help="the memory budget per GPU in GiB")
    p.add_argument("--format", choices=["chat", "instruction", "completion", "text"], help="the data format, "
                   "instead of the guess")
    p.add_argument("--column", action="append", metavar="FIELD=COLUMN", help="map a format field to a column, "
                   "instead of the guess (repeatable)")
    p.add_argument("--split", default="train", help="split of a saved DatasetDict (default: train)")
    p.add_argument("--out", metavar="FILE", help="the spec to write (default: <data name>.toml here)")
    p.add_argument("--yes", "-y", action="store_true", help="ask nothing: take every guess")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.set_defaults(handler=_init)

    p = commands.add_parser("schema", help="print the spec's JSON Schema (for editors: Taplo, Even Better TOML)")
    p.add_argument("--out", metavar="FILE", help="write it to FILE instead (e.g. docs/ftc-spec.schema.json)")
    p.add_argument("--force", action="store_true", help="replace FILE even if it is not an ftc schema")
    p.set_defaults(handler=_schema)

    p = commands.add_parser("data", help="show examples as the model will see them (trained tokens highlighted) "
                            "and the data statistics; dropped rows go to DIR/data/dropped.jsonl")
    p.add_argument("spec", help="the spec file (.toml)")
    p.add_argument("-n", type=_bounded(0, 10_000), default=3, metavar="N", help="examples to render (default 3)")
    p.add_argument("--json", action="store_true", help="print the statistics as one JSON object")
    p.add_argument("--out", metavar="DIR", help="output directory for the data report (default: compiled/<name>)")
    _add_set(p)
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
    p.add_argument("--force", action="store_true", help="use a --run-dir that is not an ftc run and holds files: "
                   "the run goes beside them (refused while it holds a file ftc writes: nothing of yours is replaced)")
    _add_set(p)
    p.add_argument("--node-rank", type=int, default=0, metavar="K", help="several nodes: this node's rank "
                   "(0 on the node at --master)")
    p.add_argument("--master", metavar="HOST:PORT", help="several nodes: where node 0 listens (e.g. 10.0.0.1:29500)")
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
    p.add_argument("--max-new-tokens", type=_bounded(1, 4096), default=64, help="answer length limit (default: 64)")
    p.set_defaults(handler=_generate)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except SpecError as exc:
        count = exc.count
        print(str(exc), file=sys.stderr)
        print(f"{count} problem{'s' if count != 1 else ''} in the spec; nothing was written", file=sys.stderr)
        return exc.exit_code
    except FtcError as exc:
        print(f"error: {printable(exc)}", file=sys.stderr)
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
        print(f"internal error: {type(exc).__name__}: {printable(exc)}\nthis is a bug in ftc; rerun with --debug for "
              "the traceback and report it", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
