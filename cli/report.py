"""`ftc report RUN_DIR` (and the end of `ftc run`): RUN_DIR/report.html, one self-contained page (inline CSS, the
curves as base64 PNGs), and the curves as PNG files in RUN_DIR/report/. Built from events.jsonl, plan.json and
eval.json only; the curves need matplotlib (`pip install 'ftc[report]'`), drawn with its Agg backend (no display).
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

from ftc.core.errors import RunError
from ftc.core.events import read_events
from ftc.runtime.evaluate import table_rows

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#1b1f24;background:#fff}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #d0d7de;padding:.3em .7em;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f0f3f6}.muted{color:#57606a}
.better{color:#1a7f37;font-weight:600}.worse{color:#cf222e;font-weight:600}
.curves{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:1em}
.curves figure{margin:0}.curves img{width:100%;border:1px solid #d0d7de}"""


TITLES = {"loss": "loss", "perplexity": "perplexity (exp of the loss)", "learning_rate": "learning rate",
          "tokens_per_s": "tokens per second", "memory": "memory: peak GPU reserved (CPU: process RSS) vs estimate"}


def _series(events: list[dict[str, Any]], kind: str, field: str) -> list[tuple[int, float]]:
    """(step, value) of `field` in the `kind` events, the last event of each step kept (a resumed run redoes steps)."""
    by_step: dict[int, float] = {}
    for event in events:
        value = event.get(field)
        if event.get("type") == kind and isinstance(event.get("step"), int) and isinstance(value, (int, float)):
            by_step[event["step"]] = float(value)
    return sorted(by_step.items())


def curves(events: list[dict[str, Any]], plan: dict[str, Any]) -> dict[str, tuple[str, list[tuple[str, list]]]]:
    """name -> (y label, [(legend, points)]) for each curve that has data."""
    train, val = _series(events, "step", "loss"), _series(events, "eval", "loss")
    estimate = (plan.get("memory") or {}).get("total")
    memory = [(s, v / 2**30) for s, v in _series(events, "step", "memory_bytes")]
    out = {
        "loss": ("loss", [("training", train), ("validation", val)]),
        "perplexity": ("perplexity", [("training", [(s, math.exp(min(v, 50))) for s, v in train]),
                                      ("validation", [(s, math.exp(min(v, 50))) for s, v in val])]),
        "learning_rate": ("learning rate", [("learning rate", _series(events, "step", "learning_rate"))]),
        "tokens_per_s": ("tokens/s", [("tokens/s", _series(events, "step", "tokens_per_s"))]),
        "memory": ("GiB", [("measured", memory)] + ([("estimate", [(s, estimate / 2**30) for s, _ in memory])]
                                                    if estimate and memory else [])),
    }
    return {name: (label, [(legend, pts) for legend, pts in lines if pts]) for name, (label, lines) in out.items()
            if any(pts for _, pts in lines)}


def draw(name: str, label: str, lines: list[tuple[str, list]], path: Path) -> bytes:
    """One curve as a PNG at `path`; its bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    try:
        for legend, points in lines:
            xs, ys = zip(*points)
            ax.plot(xs, ys, "--" if legend == "estimate" else "-", marker="o" if len(points) < 30 else None,
                    markersize=3, label=legend)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(label)
        ax.set_title(TITLES.get(name, name))
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path.read_bytes()


def _rows_html(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _metrics_html(evaluation: dict[str, Any] | None) -> str:
    if not evaluation:
        return "<p class=muted>No [eval] metrics in this run (set eval.metrics, or run ftc eval RUN_DIR).</p>"
    rows = table_rows(evaluation.get("before"), evaluation.get("after"))
    table = _rows_html(rows, ("metric", "base (before)", "tuned (after)", "change"))
    g = evaluation.get("generation", {})
    note = (f"{evaluation.get('loss_examples', '?')} validation examples for loss and perplexity; "
            f"{g.get('examples', 0)} answers generated {g.get('decoding', 'greedy')}, up to "
            f"{g.get('max_new_tokens', '?')} new tokens, from the {g.get('prompt', 'chat template')}")
    gate = evaluation.get("gate") or {}
    if gate.get("fail_if_worse"):
        worse = ", ".join(gate.get("regressions") or []) or "none"
        note += f". Regression gate on {', '.join(gate['fail_if_worse'])}: worse: {worse}"
    return table + f"<p class=muted>{html.escape(note)}.</p>"


def _samples_html(events: list[dict[str, Any]]) -> str:
    compare = next((e for e in reversed(events) if e.get("type") == "compare"), None)
    if not compare:
        return ""
    rows = [(s["prompt"], s["expected"], s["before"], s["after"]) for s in compare.get("samples", [])[:10]]
    return "<h2>Held-out answers</h2>" + _rows_html(rows, ("prompt", "expected", "before", "after"))


def load_run(run_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any] | None]:
    """(events, plan.json, eval.json or None) of a run directory."""
    if not (run_dir / "plan.json").exists() or not (run_dir / "events.jsonl").exists():
        raise RunError(f"{run_dir} is not a run directory (no plan.json and events.jsonl); give a folder made by "
                       "ftc run, e.g. runs/<name>/<timestamp>")
    plan = json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))
    evaluation = None
    if (run_dir / "eval.json").exists():
        evaluation = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))
    return read_events(run_dir / "events.jsonl"), plan, evaluation


def write_report(run_dir: str | Path) -> Path:
    """Write RUN_DIR/report.html and RUN_DIR/report/*.png; the page's path."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RunError("the report draws its curves with matplotlib, which is not installed; install it with "
                       "pip install 'ftc[report]'") from None
    run = Path(run_dir)
    events, plan, evaluation = load_run(run)
    folder = run / "report"
    folder.mkdir(exist_ok=True)
    figures = []
    for name, (label, lines) in curves(events, plan).items():
        png = draw(name, label, lines, folder / f"{name}.png")
        figures.append(f"<figure><img alt='{name}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
                       f"</figure>")
    settings, keys = plan.get("settings", {}), plan.get("key_settings", {})
    key_rows = [(label, settings.get(key)) for key, label in keys.items() if settings.get(key) is not None]
    status = next((e for e in reversed(events) if e.get("type") == "status"), {})
    title = html.escape(f"ftc run {plan.get('name', run.name)}: {run}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{CSS}</style></head>"
            f"<body><h1>{title}</h1><p class=muted>{html.escape(str(status.get('message', '')))}</p>"
            f"<h2>Before and after (validation)</h2>{_metrics_html(evaluation)}"
            f"<h2>Curves</h2><div class=curves>{''.join(figures) or '<p>No step events yet.</p>'}</div>"
            f"<h2>Key settings</h2>{_rows_html(key_rows, ('setting', 'value'))}"
            f"<p class=muted>spec {html.escape(str(plan.get('spec')))}, ftc {html.escape(str(plan.get('ftc_version')))}"
            f"; every setting and its reason: plan.md</p>{_samples_html(events)}</body></html>")
    out = run / "report.html"
    partial = run / "report.html.partial"
    partial.write_text(page, encoding="utf-8")
    partial.replace(out)
    return out


def report_quietly(console: Any, run_dir: Path) -> Path | None:
    """The end of `ftc run`: write the report, or say why not; never fails the run that finished."""
    try:
        path = write_report(run_dir)
    except RunError as exc:
        console.print(f"no report: {exc}")
        return None
    except Exception as exc:  # noqa: BLE001 - a report problem must not turn a finished run into an error
        console.print(f"no report: {type(exc).__name__}: {exc} (rerun: ftc report {run_dir})")
        return None
    console.print(f"report: {path}")
    return path
