"""`ftc eval RUN_DIR [--data FILE] [--base]` and `ftc report RUN_DIR`: measure a finished run (or its base model)
with the `[eval] metrics` of ftc.runtime.evaluate, on the run's validation split (rebuilt from plan.json exactly as
train.py split it) or on every row of FILE (mapped like the run's `[data]`), and print the table."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from ftc.core.errors import RunError

LOADERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
DEFAULT_METRICS = ["loss", "perplexity", "exact_match", "bleu", "chrf", "rouge"]
PACKAGES = {"bleu": "sacrebleu", "chrf": "sacrebleu", "rouge": "rouge_score"}


def _stage_keys() -> dict[str, str]:
    """DataSettings field -> plan.json key, from the Plan's own metadata (the fields train.py passes the stage)."""
    from ftc.compiler.plan import types

    keys: dict[str, str] = {}
    for section in (types.ModelPlan, types.DataPlan, types.MethodSection, types.HardwarePlan, types.OptimPlan,
                    types.RunPolicy):
        for f in dataclasses.fields(section):
            meta = f.metadata.get("ftc")
            if meta is not None and meta.stage:
                keys[meta.stage] = f.name
    return keys


def data_settings(settings: dict[str, Any], **changes: Any) -> Any:
    from ftc.core.data.settings import DataSettings

    keys = _stage_keys()
    values = {name: settings[key] for name, key in keys.items()}
    values.update(changes)
    return DataSettings(**values)


def load_examples(run_path: Path, settings: dict[str, Any], tokenizer: Any, data: str | None) -> tuple[Any, list, str]:
    """(dataset of input_ids/labels, conversations, what they are) to evaluate on."""
    from ftc.core.data.stage import load_rows, prepare_data

    if data is not None:
        loader = LOADERS.get(Path(data).suffix.lower())
        if loader is None or not Path(data).is_file():
            raise RunError(f"--data {data}: give a .jsonl, .json, .csv or .parquet file with the run's columns")
        prepared = prepare_data(load_rows(data, loader), tokenizer, data_settings(settings, validation=0.0),
                                source=data)
        return prepared.dataset("train"), prepared.conversations("train"), f"every example of {data}"
    if settings.get("mix"):
        raise RunError(f"{run_path} mixed several sources ([[data.mix]]), whose split ftc eval does not rebuild; "
                       "pass --data FILE with the examples to evaluate on")
    if not settings.get("validation"):
        raise RunError(f"{run_path} held no validation data (data.validation = 0); pass --data FILE")
    kind = settings["data_kind"]
    rows = (load_rows(settings["data_files"], settings["data_loader"]) if kind == "files"
            else load_rows(settings["data_source"], kind, split=settings.get("data_split") or "train"))
    extra: dict[str, Any] = {}
    if isinstance(settings["validation"], str):
        extra = {"validation_rows": load_rows(settings["validation"], settings.get("validation_loader") or "json"),
                 "validation_source": settings["validation"]}
    prepared = prepare_data(rows, tokenizer, data_settings(settings), source=settings["data_source"], **extra)
    return prepared.dataset("validation"), prepared.conversations("validation"), "the run's validation split"


def load_model(run: Any, *, base: bool) -> tuple[Any, Any]:
    """The tuned model of a finished run (adapter on its base, or the saved whole model), or its base; and the
    tokenizer saved with the result (with the chat template used in training)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftc.cli.adapters import load_base
    from ftc.compiler.methods import METHODS

    tokenizer = AutoTokenizer.from_pretrained(run.path / "final")
    if base:
        model = load_base(run, quantized=True)
    elif METHODS[run.method].peft:
        from peft import PeftModel

        model = PeftModel.from_pretrained(load_base(run, quantized=True), run.adapter_dir)
    else:
        model = AutoModelForCausalLM.from_pretrained(run.path / "final")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def _metrics(args: argparse.Namespace, settings: dict[str, Any]) -> list[str]:
    if args.metrics:
        names = [m.strip() for m in args.metrics.split(",") if m.strip()]
        unknown = [m for m in names if m not in ("loss", "perplexity", "exact_match", "accuracy", *PACKAGES)]
        if unknown:
            raise RunError(f"--metrics: unknown {', '.join(unknown)}; choose from loss, perplexity, exact_match, "
                           "accuracy, bleu, chrf, rouge")
        missing = sorted({PACKAGES[m] for m in names if m in PACKAGES and not importlib.util.find_spec(PACKAGES[m])})
        if missing:
            raise RunError(f"--metrics needs {', '.join(missing)}: pip install 'ftc[metrics]'")
        return names
    names = settings.get("metrics") or DEFAULT_METRICS
    names = [m for m in names if m not in PACKAGES or importlib.util.find_spec(PACKAGES[m])]
    return names if settings.get("data_format") != "text" else [m for m in names if m in ("loss", "perplexity")]


def eval_run(args: argparse.Namespace) -> int:
    from ftc.cli.adapters import finished_run
    from ftc.runtime.evaluate import evaluate, print_table

    run = finished_run(args.run_dir)
    settings = run.settings
    metrics = _metrics(args, settings)
    model, tokenizer = load_model(run, base=args.base)
    dataset, conversations, what = load_examples(run.path, settings, tokenizer, args.data)
    examples = args.examples if args.examples is not None else (settings.get("compare") or 20)
    max_new = args.max_new_tokens or settings.get("max_new_tokens") or 64
    print(f"evaluating the {'base' if args.base else 'tuned'} model of {run.path} on {what} "
          f"({len(dataset) if dataset is not None else 0} examples for loss; {min(examples, len(conversations))} "
          f"answers generated greedily, up to {max_new} new tokens)", flush=True, file=sys.stderr if args.json else sys.stdout)
    result = evaluate(model, tokenizer, metrics, dataset, conversations[:examples], max_new)
    if args.json:
        print(json.dumps({"model": "base" if args.base else "tuned", "data": what, "metrics": result["metrics"],
                          "examples": len(dataset) if dataset is not None else 0, "answers": result["answers"]}))
        return 0
    before, after = (result["metrics"], None) if args.base else (None, result["metrics"])
    print_table(before, after, f"{'base' if args.base else 'tuned'} model: {', '.join(metrics)}")
    return 0


def report_run(args: argparse.Namespace) -> int:
    from ftc.cli.report import write_report

    print(f"wrote {write_report(args.run_dir)}")
    return 0


def add_commands(commands: Any) -> None:
    p = commands.add_parser("eval", help="measure a finished run (or its base) with the [eval] metrics and print "
                            "the table")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory (runs/<name>/<timestamp>)")
    p.add_argument("--data", metavar="FILE", help="evaluate on every row of FILE (the run's columns) instead of "
                   "the run's validation split")
    p.add_argument("--base", action="store_true", help="evaluate the base model instead of the tuned one")
    p.add_argument("--metrics", metavar="A,B", help="comma-separated metrics (default: the run's eval.metrics, "
                   "else loss, perplexity, exact_match and, where installed, bleu, chrf, rouge)")
    p.add_argument("-n", "--examples", type=int, metavar="N", help="answers to generate (default: the run's "
                   "eval.compare, else 20)")
    p.add_argument("--max-new-tokens", type=int, metavar="N", help="answer length (default: the run's)")
    p.add_argument("--json", action="store_true", help="print one JSON object (metrics and answers)")
    p.set_defaults(handler=eval_run)

    p = commands.add_parser("report", help="write RUN_DIR/report.html (curves, before/after metrics, key "
                            "settings) and the curves as PNG files in RUN_DIR/report/")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (runs/<name>/<timestamp>)")
    p.set_defaults(handler=report_run)
