"""The monitor's behaviour through Textual's Pilot: reading fixture runs, following a growing file,
the keys (checkpoint and stop requests, log scale, help, detach), the runs list, and a 100k-event run."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from textual.widgets import DataTable, RichLog
from tui_fixtures import RUNS, T0, write_long_run

from ftc.tui.app import HelpScreen, MonitorScreen, StopScreen, make_app
from ftc.tui.format import gib
from ftc.tui.runs import RunsApp
from ftc.tui.state import read_plan
from ftc.tui.widgets import Chart


def run(app: Any, scenario: Callable[[Any, Any], Awaitable[None]], size: tuple[int, int] = (100, 30)) -> None:
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await scenario(app, pilot)

    asyncio.run(main())


def copy_run(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(RUNS / name, tmp_path / "runs" / "demo" / name))


def status(app: Any) -> str:
    return str(app.screen.query_one("#status").render())


def test_finished_run_opens_and_q_closes(tmp_path: Path) -> None:
    app = make_app(RUNS / "healthy", sample_memory=False)

    async def scenario(app: Any, pilot: Any) -> None:
        screen = app.screen
        assert isinstance(screen, MonitorScreen) and screen.state.state == "completed"
        assert "completed" in status(app) and "exact match 0/20 -> 20/20" in status(app)
        assert len(screen.query_one("#loss", Chart).series[0].points) == 41
        assert len(screen.query_one("#loss", Chart).series[1].points) == 5
        shown = "".join(strip.text for strip in screen.query_one("#log", RichLog).lines).replace(" ", "")
        assert all(line.text.replace(" ", "") in shown for line in screen.state.log)  # every line, wrapped or not
        await pilot.press("s")  # nothing to checkpoint: no control file
        assert not (RUNS / "healthy" / "control").exists()
        await pilot.press("q")  # finished: q closes at once
        await pilot.pause()
        assert app.return_code == 0 and not app.is_running

    run(app, scenario)


def test_keys_log_scale_and_help() -> None:
    app = make_app(RUNS / "healthy", sample_memory=False)

    async def scenario(app: Any, pilot: Any) -> None:
        loss = app.screen.query_one("#loss", Chart)
        before = loss.render().plain
        await pilot.press("l")
        assert loss.log_scale and "log scale" in str(loss.border_title)
        assert loss.render().plain != before
        await pilot.press("l")
        assert not loss.log_scale and loss.render().plain == before
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, MonitorScreen)

    run(app, scenario)


def append(run_dir: Path, *events: dict[str, Any]) -> None:
    with (run_dir / "events.jsonl").open("a") as handle:
        for event in events:
            handle.write(json.dumps(event) + "\n")


def test_live_run_checkpoint_request_and_growth(tmp_path: Path) -> None:
    run_dir = copy_run("troubled", tmp_path)
    app = make_app(run_dir, sample_memory=False, clock=lambda: T0 + 270)

    async def scenario(app: Any, pilot: Any) -> None:
        screen = app.screen
        assert screen.state.step == 50 and "ETA 1:57" in status(app) and "elapsed 4:30" in status(app)
        await pilot.press("s")
        assert (run_dir / "control" / "checkpoint").exists()
        # what the training script does with the request: a control event, then a checkpoint event
        append(run_dir, {"type": "control", "time": T0 + 255, "message": "checkpoint requested at step 51", "step": 51},
               {"type": "checkpoint", "time": T0 + 256, "step": 51, "path": str(run_dir / "checkpoints/checkpoint-51"),
                "eval_loss": None, "removed": ["checkpoint-32"]})
        (run_dir / "checkpoints" / "checkpoint-51").mkdir(parents=True)
        await pilot.pause(0.8)  # one poll later
        assert [step for step, _ in screen.state.checkpoints] == [48, 51]  # 32 removed by the rotation
        shown = str(screen.query_one("#checkpoints").render()).splitlines()
        assert shown[0].startswith("step     51") and len(shown) == 2
        assert screen.query_one("#log", RichLog).lines[-1].text.strip().endswith(
            "checkpoint at step 51 (removed checkpoint-32)")
        append(run_dir, {"type": "step", "time": T0 + 260, "step": 52, "total_steps": 82, "loss": 0.5, "epoch": 1.27})
        await pilot.pause(0.8)
        assert screen.state.step == 52 and "step 52/82" in status(app)

    run(app, scenario)


def test_q_asks_before_stopping_a_live_run(tmp_path: Path) -> None:
    run_dir = copy_run("troubled", tmp_path)
    app = make_app(run_dir, sample_memory=False, clock=lambda: T0 + 270)

    async def scenario(app: Any, pilot: Any) -> None:
        await pilot.press("q")
        assert isinstance(app.screen, StopScreen)
        await pilot.press("n")  # cancel
        assert isinstance(app.screen, MonitorScreen) and not (run_dir / "control").exists()
        await pilot.press("ctrl+c")
        assert isinstance(app.screen, StopScreen)
        await pilot.press("y")
        assert (run_dir / "control" / "stop").exists() and app.is_running  # the run stops; the monitor stays
        assert isinstance(app.screen, MonitorScreen) and app.screen.requests == ["stop"]
        append(run_dir, {"type": "status", "time": T0 + 265, "message": "stop requested (control/stop): saving a "
                         "checkpoint at step 51 and stopping", "state": "stopping", "step": 51})
        await pilot.pause(0.8)
        assert "stopping" in status(app)

    run(app, scenario)


def test_detach_leaves_the_run_alone(tmp_path: Path) -> None:
    run_dir = copy_run("troubled", tmp_path)
    app = make_app(run_dir, sample_memory=False, clock=lambda: T0 + 270)

    async def scenario(app: Any, pilot: Any) -> None:
        await pilot.press("q")
        await pilot.press("d")
        await pilot.pause()
        assert not app.is_running and not (run_dir / "control").exists()

    run(app, scenario)
    again = make_app(run_dir, sample_memory=False, clock=lambda: T0 + 270)  # re-attach: the same state, read anew

    async def reopened(app: Any, pilot: Any) -> None:
        assert app.screen.state.step == 50
        assert app.screen.state.warning_counts == {"oom": 1, "resume": 2, "nan": 3, "rollback": 1}

    run(again, reopened)


def test_warnings_and_crash_are_highlighted() -> None:
    async def troubled(app: Any, pilot: Any) -> None:
        lines = app.screen.query_one("#log", RichLog).lines
        warned = " ".join(line.text.strip() for line in lines if any("yellow" in str(seg.style) for seg in line))
        assert warned.startswith("21 out of memory at step 21 with micro-batch 8")
        for text in ("retrying from checkpoint-16", "resumed from runs/demo/fixture/checkpoints/checkpoint-16",
                     "step 27: NaN/inf gradients; step skipped", "rolling back to checkpoint-32 with the learning rate"):
            assert text in warned
        assert "checkpoint at step" not in warned and "validation loss" not in warned
        assert "1 OOM, 3 NaN skips, 1 rollback, 2 resumes" in status(app)

    run(make_app(RUNS / "troubled", sample_memory=False, clock=lambda: T0 + 270), troubled)

    async def crashed(app: Any, pilot: Any) -> None:
        lines = app.screen.query_one("#log", RichLog).lines
        errors = [line.text for line in lines if any("red" in str(seg.style) for seg in line)]
        assert errors and "exited with code -9" in errors[-1]
        assert "failed" in status(app) and "ETA" not in status(app)

    run(make_app(RUNS / "crashed", sample_memory=False), crashed)


def test_100k_event_run_stays_responsive(tmp_path: Path) -> None:
    run_dir = write_long_run(tmp_path / "long")
    app = make_app(run_dir, sample_memory=False, clock=lambda: T0 + 6000)

    async def scenario(app: Any, pilot: Any) -> None:
        screen = app.screen
        assert screen.state.step == 100_000 and len(screen.state.train_loss) == 100_000
        await pilot.press("l")  # a key is handled, and the chart redraws from bucketed points
        loss = screen.query_one("#loss", Chart)
        assert loss.log_scale and "┤" in loss.render().plain
        append(run_dir, {"type": "status", "time": T0 + 6001, "state": "completed", "message": "done"})
        await pilot.pause(0.8)
        assert screen.state.finished and "completed" in status(app)

    run(app, scenario, size=(200, 50))


def test_runs_list_opens_the_monitor(tmp_path: Path) -> None:
    for name in ("crashed", "healthy", "troubled"):
        copy_run(name, tmp_path)
    app = RunsApp(tmp_path / "runs", sample_memory=False)

    async def scenario(app: Any, pilot: Any) -> None:
        table = app.query_one(DataTable)
        assert table.row_count == 3 and [str(c) for c in table.get_row_at(1)[:3]] == ["demo/healthy", "completed", "82/82"]
        await pilot.press("down", "enter")
        assert isinstance(app.screen, MonitorScreen) and app.screen.run_dir.name == "healthy"
        await pilot.press("q")  # back to the list, not out of the app
        assert app.screen.query_one(DataTable) is table and app.is_running

    run(app, scenario)


def test_attached_to_a_real_training_process(tmp_path: Path) -> None:
    """What `ftc run` in a terminal does: the monitor of its child process. Memory comes from the process
    found by its command line; closing the monitor leaves the process running; its exit is noticed."""
    import subprocess
    import sys

    run_dir = copy_run("troubled", tmp_path)
    (run_dir / "train.py").write_text("import time\nblock = bytearray(30_000_000)\nprint('ready', flush=True)\n"
                                      "time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, str(run_dir / "train.py"), str(run_dir)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        app = make_app(run_dir, child=child, clock=lambda: T0 + 270)

        async def attached(app: Any, pilot: Any) -> None:
            screen = app.screen
            assert screen.alive and screen.sample.pid == child.pid and screen.sample.bytes > 30_000_000
            memory = str(screen.query_one("#memory").render())
            estimate = gib(read_plan(run_dir)["memory"]["total"])
            assert "RSS" in memory and f"pid {child.pid}" in memory and f"estimate {estimate}" in memory
            assert "ETA 1:57" in status(app)
            await pilot.press("d")
            await pilot.pause()
            assert not app.is_running

        run(app, attached)
        assert child.poll() is None  # the training process goes on
        again = make_app(run_dir, child=child, clock=lambda: T0 + 270)

        async def exited(app: Any, pilot: Any) -> None:
            child.kill()
            child.wait()
            await pilot.pause(0.8)
            assert app.screen.alive is False and "running? no process" in status(app)
            assert "no training process found" in str(app.screen.query_one("#memory").render())
            await pilot.press("q")  # nothing to stop: q closes
            await pilot.pause()
            assert not app.is_running

        run(again, exited)
    finally:
        child.kill()
        child.wait()
