"""The monitor's panels. Each takes a RunState (plus the plan and a memory sample) and renders it;
the text they show is built by plain functions here, so the logic needs no running app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual.widget import Widget
from textual.widgets import Static

from ftc.core.metrics import before_after
from ftc.core.text import printable
from ftc.tui import chart
from ftc.tui.format import STATE_STYLES, duration, gib, trouble
from ftc.tui.memory import MemorySample
from ftc.tui.state import RunState


def status_text(state: RunState, plan: dict[str, Any], run_dir: str, *, now: float | None, alive: bool | None) -> Text:
    """Three lines: what the run is (the spec's name, the run directory, method, model, state), where it is (step,
    epoch, time, ETA), and how it goes (losses, speed, warnings)."""
    settings = plan.get("settings") or {}
    method = plan.get("method") or state.config.get("METHOD") or "?"
    model = settings.get("base_model") or state.config.get("BASE_MODEL") or "?"
    text = Text()
    name = plan.get("name")
    if isinstance(name, str) and name:
        text.append(printable(name, line=True), style="bold")
        text.append(printable(f"  {run_dir}", line=True), style="dim")
    else:  # no plan.json: the run directory alone
        text.append(printable(run_dir, line=True), style="bold")
    text.append(printable(f"  {method}  {model}  ", line=True), style="")
    label = printable(state.state, line=True)
    style = STATE_STYLES.get(label, "bold")
    if not state.finished and alive is False and state.events:
        label, style = f"{label}? no process", "bold yellow"
    text.append(f" {label} ", style=f"reverse {style}")
    if state.message and state.state not in ("running", "starting"):  # "training for N steps" says nothing new
        text.append(printable(f"  {state.message}", line=True), style="dim")
    text.append("\n")
    total = state.total_steps
    share = f" ({100 * state.step / total:.0f} %)" if total else ""
    text.append(f"step {state.step}/{total if total else '?'}{share}", style="bold")
    if state.epoch is not None:
        text.append(f"  epoch {state.epoch:.2f}")
    elapsed = state.elapsed
    if not state.finished and now is not None and state.started is not None and alive is not False:
        elapsed = now - state.started
    text.append(f"  elapsed {duration(elapsed)}")
    eta = state.eta()
    if eta is not None and alive is not False:
        text.append(f"  ETA {duration(eta)}", style="bold")
    text.append("\n")
    if state.train_loss:
        text.append(f"loss {state.train_loss[-1][1]:.4f}  ")
    best = state.best_eval_loss
    if best is not None:
        text.append(f"best val {best:.4f} (ppl {state.best_perplexity:.2f})  ")
    if state.tokens_per_s:
        text.append(f"{state.tokens_per_s[-1][1]:,.0f} tok/s  ")
    if state.exact_match:
        n, before, after = state.exact_match
        text.append(f"exact match {before}/{n} -> {after}/{n}  ", style="bold green")
    if state.main_metric:
        text.append(before_after(state.main_metric, state.metrics_before, state.metrics_after) + "  ", style="bold green")
    if state.warning_counts:
        text.append(trouble(state.warning_counts), style="bold yellow")
    text.rstrip()
    return text


def memory_text(sample: MemorySample | None, peak: int | None, plan: dict[str, Any], *, finished: bool,
                width: int = 30) -> Text:
    """The process's memory now and at its highest, against the plan's estimate and budget."""
    memory = plan.get("memory") or {}
    estimate = memory.get("total") if isinstance(memory, dict) else None
    budget = plan.get("budget")
    text = Text(no_wrap=True, overflow="ellipsis")
    if sample is None:
        text.append("run finished: no process" if finished else "no training process found", style="dim")
        text.append("\n")
    else:
        where = "GPU (NVML)" if sample.source == "gpu" else "RSS"
        text.append(f"{where} {gib(sample.bytes)}", style="bold")
        text.append(f"  pid {sample.pid}\n", style="dim")
        if peak is not None:
            text.append(f"highest seen {gib(peak)}\n")
    reference = budget or estimate
    if sample is not None and reference:
        bar = max(6, width - 8)
        share = sample.bytes / reference
        filled = min(bar, round(share * bar))
        style = "red" if budget and sample.bytes > budget else ("yellow" if share > 0.9 else "green")
        text.append("█" * filled, style=style)
        text.append("░" * (bar - filled), style="dim")
        text.append(f" {100 * share:3.0f}%\n" if share < 10 else f" {share:.0f}x\n")
    text.append((f"estimate {gib(estimate)}" if estimate else "no estimate in plan.json") + "\n")
    text.append(f"budget   {gib(budget)}" if budget else "budget   none set")
    if sample is not None and sample.source == "rss":
        text.append("\nRSS: the whole process; the estimate: tensors", style="dim")
    return text


def checkpoints_text(state: RunState, run_dir: Path) -> Text:
    """The checkpoints the run keeps (RunState drops those it reported removed), newest first; one missing
    from the disk all the same (deleted by hand, or the run folder was copied without them) is dimmed."""
    text = Text(no_wrap=True, overflow="ellipsis")
    if not state.checkpoints:
        text.append("none yet (press s to save one)", style="dim")
        return text
    for i, (step, path) in enumerate(reversed(state.checkpoints)):
        if i:
            text.append("\n")
        candidate = Path(path)
        exists = any(_exists(p) for p in (candidate, run_dir / candidate, run_dir / "checkpoints" / candidate.name))
        text.append(f"step {step:>6}  ", style="bold" if exists else "dim")
        text.append(printable(candidate.name or path, line=True), style="" if exists else "dim strike")
    return text


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long, or with a NUL byte, from a hand-edited events.jsonl
        return False


def plan_text(plan: dict[str, Any]) -> Text:
    """The plan's settings a person checks first, one `name value` per line."""
    settings = plan.get("settings") or {}
    text = Text(no_wrap=True, overflow="ellipsis")
    if not settings:
        text.append("no plan.json in the run directory", style="dim")
        return text
    # plan.json names the settings to show first (the compiler's metadata); a plan.json written before
    # ftc recorded them shows its plain values in plan order
    labels = plan.get("key_settings") if isinstance(plan.get("key_settings"), dict) else {
        key: key for key, value in settings.items() if isinstance(value, (str, int, float))}
    rows = [(str(label), settings[key]) for key, label in labels.items() if settings.get(key) is not None]
    for i, (label, value) in enumerate(rows):
        if i:
            text.append("\n")
        if isinstance(value, bool):
            value = "on" if value else "off"
        elif isinstance(value, float):
            value = f"{value:g}"
        text.append(printable(f"{label:<13}", line=True), style="dim")
        text.append(printable(value, line=True))
    return text


class Chart(Widget):
    """A braille line chart of one or more series; redraws only when its data or size changed."""

    DEFAULT_CSS = "Chart { height: 1fr; }"

    def __init__(self, *, empty: str = "waiting for data", id: str | None = None) -> None:
        super().__init__(id=id)
        self.series: list[chart.Series] = []
        self.log_scale = False
        self.empty = empty
        self._version = 0
        self._cache: tuple[tuple[int, int, int, bool], Text] | None = None

    def set_series(self, series: list[chart.Series]) -> None:
        self.series = series
        self._version += 1
        self.refresh()

    def toggle_log(self) -> None:
        self.log_scale = not self.log_scale
        self.refresh()

    def render(self) -> Text:
        key = (self.size.width, self.size.height, self._version, self.log_scale)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, chart.render(self.series, self.size.width, self.size.height, log=self.log_scale,
                                             empty=self.empty))
        return self._cache[1]


class Panel(Static):
    """A text panel that re-renders only when its text changed."""

    def show(self, text: Text) -> None:
        if getattr(self, "_shown", None) != (text.plain, text.spans):
            self._shown = (text.plain, text.spans)
            self.update(text)
