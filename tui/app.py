"""The Textual monitor: `ftc monitor RUN_DIR`, `ftc runs` in a terminal, and `ftc run` in a terminal.

It follows RUN_DIR/events.jsonl as it grows (EventTail reads only the new bytes), so it opens live,
finished and crashed runs alike, and closing it never touches the run. Requests to the run (a
checkpoint now, a graceful stop) go through RUN_DIR/control/ (ftc.core.control).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, RichLog, Static

from ftc.core import control
from ftc.core.events import EventTail
from ftc.tui import chart
from ftc.tui.memory import MemorySample, MemorySampler
from ftc.tui.state import RunState, read_plan
from ftc.tui.widgets import Chart, Panel, checkpoints_text, memory_text, plan_text, status_text

CSS_PATH = Path(__file__).with_name("monitor.tcss")
LOSS_TITLE = "loss: train (cyan) / validation (magenta)"
LEVEL_STYLES = {"warning": "bold yellow", "error": "bold red", "info": ""}

HELP = """\
[b]ftc monitor[/b]: follows RUN_DIR/events.jsonl; closing it never stops the run.

  [b]s[/b]        ask the run for a checkpoint now (saved after its current step)
  [b]q[/b], [b]ctrl+c[/b]  stop the run gracefully (asks first; saves a checkpoint), or close
  [b]d[/b]        close the monitor only; the run goes on (re-attach: ftc monitor RUN_DIR)
  [b]l[/b]        loss chart: linear / log scale
  [b]?[/b]        this help            [b]escape[/b]  close this help

The loss chart shows training loss (cyan) and validation loss (magenta dots); a preference run's small
right chart shows its reward margin and preference accuracy per logging step instead of tokens/s. Memory is the
training process's GPU memory (NVML) or resident memory, against plan.json's estimate and budget.
Warnings (out of memory and its retry, skipped NaN steps, rollbacks, resumes, early stopping, a
full disk) are yellow in the log. After a resume the charts show the steps done again in place of
the earlier ones.
Requests are files in RUN_DIR/control/; `touch RUN_DIR/control/checkpoint` does the same as s."""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "close")]

    def compose(self) -> ComposeResult:
        yield Static(HELP, id="help")


class StopScreen(ModalScreen[str]):
    """Asks what q means: stop the run, only close the monitor, or nothing."""

    BINDINGS = [Binding("y", "choose('stop')", "stop the run"),
                Binding("d", "choose('detach')", "close monitor, run goes on"),
                Binding("escape,n", "choose('cancel')", "cancel")]

    def compose(self) -> ComposeResult:
        yield Static("[b]Stop training?[/b]\n\n"
                     "[b]y[/b]  stop: the run saves a checkpoint after this step and ends\n"
                     "[b]d[/b]  close the monitor only; training goes on\n"
                     "   (re-attach with: ftc monitor RUN_DIR)\n"
                     "[b]n[/b]  cancel", id="confirm")

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)


class MonitorScreen(Screen[None]):
    """One run: status, loss / learning-rate / throughput charts, memory, checkpoints, plan, event log."""

    BINDINGS = [
        Binding("s", "checkpoint", "checkpoint now"),
        Binding("q", "request_quit", "stop / quit"),
        Binding("ctrl+c", "request_quit", "stop / quit", show=False, priority=True),
        Binding("d", "detach", "close monitor"),
        Binding("l", "toggle_log", "log scale"),
        Binding("question_mark", "help", "help"),
    ]

    def __init__(self, run_dir: str | os.PathLike[str], *, clock: Callable[[], float] = time.time,
                 sampler: MemorySampler | None = None, child: subprocess.Popen[Any] | None = None,
                 poll_s: float = 0.5) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.clock = clock
        self.sampler = sampler
        self.child = child
        self.poll_s = poll_s
        self.state = RunState()
        self.plan = read_plan(self.run_dir)
        self.tail = EventTail(self.run_dir / "events.jsonl")
        self.sample: MemorySample | None = None
        self.peak: int | None = None
        self.alive: bool | None = None
        """Whether a training process was found (None: not looked for)."""
        self.requests: list[str] = []
        self._logged = 0
        self._charted = -1

    @property
    def run_label(self) -> str:
        """The run directory, shortened to its last two folders (runs/<name>/<time> shows <name>/<time>)."""
        parts = self.run_dir.resolve().parts
        return "/".join(parts[-2:]) if len(parts) >= 2 else str(self.run_dir)

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with Horizontal(id="middle"):
            with Vertical(id="charts"):
                yield Chart(id="loss", empty="no loss yet")
                with Horizontal(id="small"):
                    yield Chart(id="lr", empty="no learning rate yet")
                    yield Chart(id="speed", empty="no tokens/s yet")
            with Vertical(id="side"):
                yield Panel(id="memory")
                yield Panel(id="checkpoints")
                yield Panel(id="plan")
        yield RichLog(id="log", wrap=True, markup=False, highlight=False, max_lines=2000)
        yield Footer()

    def on_mount(self) -> None:
        titles = {"loss": LOSS_TITLE, "lr": "learning rate", "speed": "tokens/s",
                  "memory": "memory", "checkpoints": "checkpoints", "plan": "plan", "log": "events"}
        for name, title in titles.items():
            self.query_one(f"#{name}").border_title = title
        self.poll()
        self.set_interval(self.poll_s, self.poll)

    # ------------------------------------------------------------------ reading
    def poll(self) -> None:
        """Fold the events appended since the last poll, sample memory, and redraw what changed."""
        before = self.state.events
        new = self.state.read(self.tail).events != before
        if self.sampler is not None and not self.state.finished:
            self.sample = self.sampler.sample()
            if self.sample is not None:
                self.peak = max(self.peak or 0, self.sample.bytes)
            self.alive = self.sample is not None
        elif self.state.finished:
            self.sample, self.alive = None, None
        if self.child is not None and self.child.poll() is not None:
            self.alive = False
        if new or not self.state.finished:
            self.redraw()

    def redraw(self) -> None:
        state = self.state
        now = self.clock() if not state.finished else None
        self.query_one("#status", Static).update(status_text(state, self.plan, self.run_label, now=now,
                                                             alive=self.alive))
        if self._charted != state.events:
            self._charted = state.events
            loss = self.query_one("#loss", Chart)
            loss.set_series([chart.Series("train", state.train_loss, "cyan"),
                             chart.Series("validation", state.eval_loss, "bold magenta", marker=True)])
            self.query_one("#lr", Chart).set_series([chart.Series("lr", state.learning_rate, "green")])
            speed = self.query_one("#speed", Chart)
            if state.reward_margin:  # a preference run: its rewards matter more than its speed
                speed.border_title = "preference: margin (yellow), accuracy (green)"
                speed.set_series([chart.Series("margin", state.reward_margin, "yellow"),
                                  chart.Series("accuracy", state.reward_accuracy, "green")])
            else:
                speed.set_series([chart.Series("tokens/s", state.tokens_per_s, "blue")])
            self.query_one("#checkpoints", Panel).show(checkpoints_text(state, self.run_dir))
            self.query_one("#plan", Panel).show(plan_text(self.plan))
        memory = self.query_one("#memory", Panel)
        memory.show(memory_text(self.sample, self.peak, self.plan, finished=state.finished,
                                width=max(12, memory.size.width)))
        log = self.query_one("#log", RichLog)
        fresh = min(state.log_count - self._logged, len(state.log))
        if fresh > 0:
            for line in list(state.log)[-fresh:]:
                show_step = line.step is not None and not line.text.startswith("step")
                prefix = f"{line.step:>6} " if show_step else "       "
                log.write(Text(prefix + line.text, style=LEVEL_STYLES.get(line.level, "")))
        self._logged = state.log_count

    # ------------------------------------------------------------------ keys
    def action_checkpoint(self) -> None:
        if self.state.finished:
            self.notify(f"the run is {self.state.state}: there is nothing to checkpoint", severity="warning")
            return
        path = control.request(self.run_dir, "checkpoint")
        self.requests.append("checkpoint")
        if self.alive is False:
            self.notify(f"checkpoint requested ({path.relative_to(self.run_dir)}), but no training process was "
                        "found: the script takes the request when it runs again", severity="warning")
        else:
            self.notify(f"checkpoint requested ({path.relative_to(self.run_dir)}): saved after the current step")

    def action_toggle_log(self) -> None:
        loss = self.query_one("#loss", Chart)
        loss.toggle_log()
        loss.border_title = LOSS_TITLE + (" - log scale" if loss.log_scale else "")

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen())

    def action_detach(self) -> None:
        self.close_monitor()

    def action_request_quit(self) -> None:
        # Nothing to stop: the run ended, or the process `ftc run` started exited. (A process the sampler does not
        # find may still run elsewhere, e.g. on another host sharing the folder: then q still asks.)
        if self.state.finished or (self.child is not None and self.child.poll() is not None):
            self.close_monitor()
            return

        def chosen(choice: str | None) -> None:
            if choice == "stop":
                control.request(self.run_dir, "stop")
                self.requests.append("stop")
                self.notify("stop requested: the run saves a checkpoint after its current step and ends; "
                            "q again closes the monitor")
            elif choice == "detach":
                self.close_monitor()

        self.app.push_screen(StopScreen(), chosen)

    def close_monitor(self) -> None:
        if isinstance(self.app, MonitorApp):
            self.app.exit()
        else:  # opened from the runs list: back to it
            self.app.pop_screen()


class MonitorApp(App[None]):
    """`ftc monitor RUN_DIR`: one MonitorScreen."""

    CSS_PATH = CSS_PATH
    TITLE = "ftc monitor"
    ENABLE_COMMAND_PALETTE = False

    def __init__(self, run_dir: str | os.PathLike[str], **options: Any) -> None:
        super().__init__()
        self.monitor = MonitorScreen(run_dir, **options)

    def on_mount(self) -> None:
        self.push_screen(self.monitor)


def make_app(run_dir: str | os.PathLike[str], *, clock: Callable[[], float] = time.time,
             sample_memory: bool = True, child: subprocess.Popen[Any] | None = None) -> MonitorApp:
    """The monitor of one run directory (`sample_memory=False` leaves the process alone, for snapshots)."""
    sampler = MemorySampler(run_dir) if sample_memory else None
    return MonitorApp(run_dir, clock=clock, sampler=sampler, child=child)


def watch_child(run_dir: str | os.PathLike[str], child: subprocess.Popen[Any]) -> bool:
    """The monitor of a run that `ftc run` started; returns True when the person closed it while the
    training process was still running (it goes on: closing the monitor never stops the run)."""
    make_app(run_dir, child=child).run()
    return child.poll() is None
