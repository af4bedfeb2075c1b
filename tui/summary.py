"""Plain-text views of runs (no Textual): the table of `ftc runs` and one run's summary, for pipes, CI
and `--plain`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ftc.core.metrics import LABELS, before_after, change
from ftc.core.text import printable
from ftc.tui.state import RunState, read_plan, read_state
from ftc.tui.format import STATE_STYLES, duration, gib, trouble

RUN_STYLES = {"completed": "green", "failed": "red", "stopped": "yellow"}
RUN_COLUMNS = ("run", "state", "steps", "train loss", "best val loss", "exact match", "main metric", "last event")


def find_runs(root: Path) -> list[Path]:
    """Every run directory (a folder with an events.jsonl) under `root`, sorted by path."""
    return sorted(p.parent for p in root.glob("**/events.jsonl"))


def runs_table(root: Path, runs: list[tuple[Path, RunState]]) -> Table:
    table = Table(title=Text(printable(f"runs under {root}/", line=True)))
    for column in RUN_COLUMNS:
        table.add_column(column, justify="right" if column in ("steps", "train loss", "best val loss") else "left")
    for run_dir, state in runs:
        table.add_row(*run_row(root, run_dir, state))
    return table


def run_row(root: Path, run_dir: Path, state: RunState) -> list[Text]:
    steps = f"{state.step}/{state.total_steps}" if state.total_steps else str(state.step)
    loss = f"{state.train_loss[-1][1]:.4f}" if state.train_loss else ""
    best = f"{state.best_eval_loss:.4f}" if state.best_eval_loss is not None else ""
    match = ""
    if state.exact_match:
        n, before, after = state.exact_match
        match = f"{before}/{n} -> {after}/{n}"
    main = before_after(state.main_metric, state.metrics_before, state.metrics_after) if state.main_metric else ""
    when = dt.datetime.fromtimestamp(state.updated).strftime("%Y-%m-%d %H:%M") if state.updated else ""
    try:
        name = run_dir.relative_to(root).as_posix()
    except ValueError:
        name = run_dir.as_posix()
    shown = Text(printable(state.state, line=True), style=RUN_STYLES.get(state.state, ""))
    return [Text(printable(name or ".", line=True)), shown, Text(steps), Text(loss), Text(best), Text(match),
            Text(main), Text(when)]


def run_summary(run_dir: Path) -> RenderableType:
    """One run, read once: what it is, how far it got, its losses, warnings and where its outputs are."""
    state = read_state(run_dir)
    plan = read_plan(run_dir)
    settings = plan.get("settings") or {}
    table = Table(title=Text(printable(f"run {run_dir}", line=True)), show_header=False, title_justify="left")
    table.add_column(style="dim")
    table.add_column()
    table.add_row("state", Text(printable(state.state + (f": {state.message}" if state.message else "")),
                                style=STATE_STYLES.get(state.state, "")))
    if plan:
        table.add_row("spec", Text(printable(f"{plan.get('spec', '?')}: {plan.get('method', '?')} on "
                                             f"{settings.get('base_model', '?')}", line=True)))
    table.add_row("steps", f"{state.step}/{state.total_steps or '?'}"
                  + (f" (epoch {state.epoch:.2f})" if state.epoch is not None else ""))
    table.add_row("time", duration(state.elapsed))
    if state.train_loss:
        table.add_row("training loss", f"{state.train_loss[0][1]:.4f} -> {state.train_loss[-1][1]:.4f}")
    if state.eval_loss:
        table.add_row("validation loss", f"{state.eval_loss[0][1]:.4f} -> {state.eval_loss[-1][1]:.4f} "
                      f"(best {state.best_eval_loss:.4f}, perplexity {state.best_perplexity:.2f})")
    if state.tokens_per_s:
        rates = [r for _, r in state.tokens_per_s]
        table.add_row("tokens/s", f"{sum(rates) / len(rates):,.0f} on average")
    memory = plan.get("memory") or {}
    if memory.get("total"):
        budget = plan.get("budget")
        table.add_row("memory estimate", gib(memory["total"]) + (f" of a {gib(budget)} budget" if budget else ""))
    if state.exact_match:
        n, before, after = state.exact_match
        table.add_row("held-out exact match", f"{before}/{n} -> {after}/{n}")
    for name in state.metrics_after:  # [eval] metrics, base -> tuned
        table.add_row(f"eval {LABELS.get(name, name)}", change(name, state.metrics_before, state.metrics_after))
    if state.warning_counts:
        table.add_row("trouble", Text(trouble(state.warning_counts), style="yellow"))
    if state.checkpoints:
        table.add_row("checkpoints", ", ".join(str(step) for step, _ in state.checkpoints))
    if state.output:
        table.add_row("result", Text(printable(state.output, line=True)))
    table.add_row("events", Text(printable(f"{state.events} in {run_dir / 'events.jsonl'}", line=True)))
    if state.skipped_count:
        table.add_row("skipped", Text(f"{state.skipped_count} line(s) that are not valid events: "
                                      + "; ".join(state.skipped[:3]), style="yellow"))
    parts: list[RenderableType] = [table]
    warnings = [line for line in state.log if line.level != "info"]
    if warnings:
        shown = Text()
        for line in warnings[-20:]:
            prefix = f"step {line.step}: " if line.step is not None and not line.text.startswith("step") else ""
            shown.append(f"  {prefix}{line.text}\n", style="yellow" if line.level == "warning" else "red")
        parts.append(Text(f"{len(warnings)} warning(s) and error(s):", style="bold"))
        parts.append(shown)
    if not state.finished:
        parts.append(Text(printable(f"watch it live: ftc monitor {run_dir}", line=True), style="dim"))
    return Group(*parts)
