"""The monitor's pure parts: warnings in the event log, chart downsampling and drawing, the memory of a
real training process, the plain summaries, and the `ftc monitor` / `ftc runs` commands without a terminal."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from tui_fixtures import RUNS, crashed, healthy, troubled, write_run

from ftc.core.events import read_events
from ftc.tui import chart
from ftc.tui.format import gib
from ftc.tui.memory import MemorySampler, find_training_process, rss_bytes
from ftc.tui.state import RunState, log_line, read_plan, read_state, warning_kind
from ftc.tui.summary import run_summary
from ftc.tui.widgets import memory_text, plan_text, status_text

RECORDED = Path(__file__).parent / "fixtures" / "recorded" / "faults"


def test_fixture_files_are_what_the_helper_writes(tmp_path: Path) -> None:
    for name, make in (("healthy", healthy), ("troubled", troubled)):
        write_run(tmp_path / name, make())
        assert (tmp_path / name / "events.jsonl").read_text() == (RUNS / name / "events.jsonl").read_text()


def test_warnings_are_classified_and_counted() -> None:
    assert warning_kind({"type": "oom", "message": "out of memory at step 21 with micro-batch 8", "step": 21}) == "oom"
    assert warning_kind({"type": "nan", "step": 27, "streak": 1}) == "nan"
    assert warning_kind({"type": "nan", "step": 37, "rollback": True, "last_good_step": 34}) == "rollback"
    assert warning_kind({"type": "resume", "message": "resumed from checkpoint-16", "step": 16}) == "resume"
    assert warning_kind({"type": "early_stop", "step": 40, "best_loss": 0.5, "best_step": 24}) == "early_stop"
    assert warning_kind({"type": "disk_full", "step": 48}) == "disk_full"
    assert warning_kind({"type": "retry", "reason": "oom"}) is None  # counted by the oom before it
    assert warning_kind({"type": "warning", "message": "train: 3 examples were truncated"}) == "other"
    assert warning_kind({"type": "warning", "message": "resumed although the data changed"}) == "other"
    assert warning_kind({"type": "checkpoint", "step": 3, "path": "c", "removed": ["checkpoint-1"]}) is None
    assert warning_kind({"type": "gpu_nan_guard", "message": "non-finite loss"}) == "nan"  # unknown: by its words
    state = read_state(RUNS / "troubled")
    assert state.warning_counts == {"oom": 1, "resume": 2, "nan": 3, "rollback": 1}
    warned = [line for line in state.log if line.level == "warning"]
    assert [line.step for line in warned] == [21, None, 16, 27, 35, 36, 37, None, 32]
    assert warned[0].text.startswith("out of memory at step 21 with micro-batch 8: CUDA out of memory.")
    assert warned[1].text.startswith("out of memory with micro-batch 8 x 1: retrying from checkpoint-16 (step 16)")


def test_resume_replaces_the_steps_done_again() -> None:
    """A resume at step N: the points after N are done again (the last event of a step counts), so each step is
    charted once and `step` goes back to N until the run passes it again."""
    state = RunState()
    for step in range(1, 9):
        state.apply({"type": "step", "time": float(step), "step": step, "loss": 10.0 - step, "learning_rate": 1e-3,
                     "tokens_per_s": 100.0})
        if step in (4, 8):
            state.apply({"type": "eval", "time": step + 0.5, "step": step, "loss": 20.0 - step})
    state.apply({"type": "oom", "time": 9.0, "message": "out of memory at step 9 with micro-batch 8", "step": 9,
                 "micro_batch_size": 8})
    state.apply({"type": "resume", "time": 20.0, "message": "resumed from c/checkpoint-6 at step 6 of 10", "step": 6,
                 "path": "c/checkpoint-6"})
    assert state.step == 6 and [s for s, _ in state.train_loss] == [1, 2, 3, 4, 5, 6]
    assert state.eval_loss == [(4, 16.0)]
    assert [s for s, _ in state.learning_rate] == [s for s, _ in state.tokens_per_s] == [1, 2, 3, 4, 5, 6]
    for step in (7, 8):
        state.apply({"type": "step", "time": 20.0 + step, "step": step, "loss": 1.0, "learning_rate": 5e-4})
    state.apply({"type": "eval", "time": 29.0, "step": 8, "loss": 0.5})
    assert state.step == 8 and state.train_loss[-3:] == [(6, 4.0), (7, 1.0), (8, 1.0)]
    assert len(state.train_loss) == 8 and state.learning_rate[-1] == (8, 5e-4)
    assert state.eval_loss == [(4, 16.0), (8, 0.5)] and state.best_eval_loss == 0.5
    assert state.first_step == (6, 20.0)  # the pace counts from the resume
    assert state.warning_counts == {"oom": 1, "resume": 1}
    # a restart from the start (no checkpoint yet: no resume event) re-does step 1: the last events count
    state.apply({"type": "step", "time": 40.0, "step": 2, "loss": 9.5})
    assert state.step == 2 and state.train_loss == [(1, 9.0), (2, 9.5)] and state.eval_loss == []


def test_checkpoints_drop_the_removed_and_the_abandoned() -> None:
    state = RunState()
    for step, removed in ((3, []), (6, []), (9, ["checkpoint-3"])):
        state.apply({"type": "checkpoint", "time": float(step), "step": step, "path": f"r/checkpoints/checkpoint-{step}",
                     "eval_loss": None, "removed": removed})
    assert state.checkpoints == [(6, "r/checkpoints/checkpoint-6"), (9, "r/checkpoints/checkpoint-9")]
    assert state.log[-1].text == "checkpoint at step 9 (removed checkpoint-3)" and state.log[-1].level == "info"
    # a NaN rollback to checkpoint 6: `ftc run` deleted checkpoint 9, and checkpoint 9 is written again later
    state.apply({"type": "resume", "time": 10.0, "message": "resumed from r/checkpoints/checkpoint-6 at step 6 of 12",
                 "step": 6, "path": "r/checkpoints/checkpoint-6"})
    assert state.checkpoints == [(6, "r/checkpoints/checkpoint-6")]
    state.apply({"type": "checkpoint", "time": 11.0, "step": 9, "path": "r/checkpoints/checkpoint-9",
                 "eval_loss": 0.5, "removed": []})
    state.apply({"type": "checkpoint", "time": 12.0, "step": 12, "path": "r/checkpoints/checkpoint-12",
                 "eval_loss": 0.4, "removed": ["checkpoint-6"]})
    assert [s for s, _ in state.checkpoints] == [9, 12]
    troubled = read_state(RUNS / "troubled")  # 16 removed by 48; 32 kept through the rollback to it
    assert [s for s, _ in troubled.checkpoints] == [32, 48]
    assert [s for s, _ in read_state(RUNS / "healthy").checkpoints] == [80, 82]


def test_a_recorded_run_with_injected_faults() -> None:
    """events.jsonl of a real tiny-model `ftc run` with FTC_INJECT=oom@5,nan@7,nan@8,nan@10 (micro-batch 4,
    nan_patience 2, save_steps 3): OOM -> retry from checkpoint 3; NaN skip at 7, rollback at 8 -> retry from
    checkpoint 6 with half the learning rate; NaN skip at 10; completed."""
    state = read_state(RECORDED)
    assert state.state == "completed" and state.step == 12
    assert [s for s, _ in state.train_loss] == list(range(1, 13))
    assert [s for s, _ in state.eval_loss] == [2, 4, 6, 8, 10, 12]
    assert [Path(p).name for _, p in state.checkpoints] == ["checkpoint-9", "checkpoint-12"]
    assert state.warning_counts == {"oom": 1, "resume": 2, "nan": 2, "rollback": 1}
    lr = dict(state.learning_rate)
    raw = [e for e in read_events(RECORDED / "events.jsonl") if e["type"] == "step" and e["step"] == 7]
    assert lr[7] == raw[-1]["learning_rate"] and abs(raw[-1]["learning_rate"] - raw[0]["learning_rate"] / 2) < 1e-9


def test_every_event_type_gets_a_log_line() -> None:
    assert log_line({"type": "gpu_swap", "message": "moved to GPU 1"}).text == "gpu_swap: moved to GPU 1"
    assert log_line({"type": "mystery", "a": 1}).text == "mystery: a=1"
    assert log_line({"type": "eval", "step": 3}).text == "eval: step=3"  # a known type missing its loss
    failed = log_line({"type": "status", "state": "failed", "message": "exit code 1"})
    assert failed.level == "error" and failed.text == "failed: exit code 1"
    assert log_line({"type": "oom_retry", "message": "micro-batch 8 -> 4", "step": 5}).level == "warning"
    state = RunState().extend([{"type": "step", "step": 1, "loss": 1.0}, {"type": "control", "message": "checkpoint requested"}])
    assert [line.text for line in state.log] == ["checkpoint requested"] and state.log_count == 1


def test_log_is_bounded_but_counted() -> None:
    state = RunState().extend({"type": "warning", "message": f"w{i}"} for i in range(1500))  # type: ignore[arg-type]
    assert len(state.log) == 1000 and state.log_count == 1500 and len(state.warnings) == 1500
    assert state.log[-1].text == "w1499"


def test_bucket_keeps_order_means_and_limit() -> None:
    points = [(float(i), float(i % 10)) for i in range(100_000)]
    out = chart.bucket(points, 300)
    assert len(out) == 300
    assert [x for x, _ in out] == sorted(x for x, _ in out)
    assert all(abs(y - 4.5) < 0.1 for _, y in out)  # each bucket averages whole cycles of 0..9
    assert chart.bucket(points[:5], 300) == points[:5]
    assert chart.bucket(points, 0) == []


def test_render_fills_the_area_and_skips_bad_values() -> None:
    series = [chart.Series("train", [(1, 3.0), (2, float("nan")), (3, 2.0), (4, 1.0)], "cyan"),
              chart.Series("val", [(2, 2.5), (4, 0.0)], "magenta", marker=True)]
    text = chart.render(series, 40, 8)
    lines = text.plain.split("\n")
    assert len(lines) == 8 and all(len(line) <= 40 for line in lines)
    assert lines[0].strip().startswith("3") and "┤" in lines[0]  # the top label is the highest value
    assert lines[-1].strip().startswith("└1") and lines[-1].endswith("4")  # the step range
    assert any(ord(ch) > 0x2800 for ch in text.plain)  # braille dots were drawn
    log = chart.render(series, 40, 8, log=True)  # the 0.0 cannot be drawn on a log scale
    assert log.plain.split("\n")[-2].strip().startswith("1")  # lowest drawable value: 1.0
    assert "waiting" in chart.render([chart.Series("x", [], "red")], 40, 8).plain
    assert chart.render(series, 5, 2).plain == ""


def test_render_of_100k_points_uses_every_column() -> None:
    points = [(float(i), 1.0 + math.exp(-i / 20_000)) for i in range(1, 100_001)]
    text = chart.render([chart.Series("train", points, "cyan")], 60, 10)
    body = [line[8:] for line in text.plain.split("\n")[:-1]]
    used = {i for line in body for i, ch in enumerate(line) if ch != " "}
    assert used == set(range(52))


@pytest.fixture
def training_process(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real python process running RUN_DIR/train.py (it holds ~20 MB and sleeps)."""
    run_dir = write_run(tmp_path / "runs" / "demo" / "live", troubled())
    (run_dir / "train.py").write_text("import sys, time\nblock = bytearray(20_000_000)\nprint('ready', flush=True)\n"
                                      "time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "train.py", str(run_dir)], cwd=run_dir, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    yield run_dir, child
    child.kill()
    child.wait()


def test_memory_of_the_training_process(training_process) -> None:  # type: ignore[no-untyped-def]
    run_dir, child = training_process
    assert find_training_process(run_dir) == child.pid
    assert find_training_process(run_dir.parent) is None
    assert rss_bytes(child.pid) > 20_000_000
    sample = MemorySampler(run_dir).sample()
    assert sample is not None and (sample.pid, sample.source) == (child.pid, "rss") and sample.bytes > 20_000_000
    plan = read_plan(run_dir)
    text = memory_text(sample, sample.bytes, plan, finished=False).plain
    assert f"pid {child.pid}" in text and f"estimate {gib(plan['memory']['total'])}" in text and "%" in text
    child.kill()
    child.wait()
    sampler = MemorySampler(run_dir)
    assert sampler.sample() is None


def test_status_and_plan_text() -> None:
    state, plan = read_state(RUNS / "troubled"), read_plan(RUNS / "troubled")
    live = status_text(state, plan, "demo/live", now=state.updated + 10, alive=True).plain
    assert "demo  demo/live  lora  smollm2-135m-instruct" in live and "step 50/82 (61 %)" in live  # name, run dir
    assert "ETA 1:57" in live  # 66 s from the resume at step 32 to the step-50 event: 66 / 18 x 32 steps left = 117 s
    assert "1 OOM, 3 NaN skips, 1 rollback, 2 resumes" in live
    gone = status_text(state, plan, "demo/live", now=None, alive=False).plain
    assert "running? no process" in gone and "ETA" not in gone
    done = status_text(read_state(RUNS / "healthy"), plan, "x", now=None, alive=None).plain
    assert "completed" in done and "exact match 0/20 -> 20/20" in done and "elapsed 5:02" in done
    settings = plan_text(plan).plain
    assert "lr           0.002" in settings  # the micro-batch `ftc run` halved after the OOM, as its plan.json says:
    assert "micro-batch  4" in settings and "accumulation 2" in settings
    assert "no plan.json" in plan_text({}).plain
    assert status_text(state, {}, "demo/live", now=None, alive=None).plain.startswith("demo/live  ?  smollm2")  # no plan.json


def _printed(renderable) -> str:  # type: ignore[no-untyped-def]
    console = Console(width=120, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


def test_summary_of_a_crashed_run(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "crashed", crashed(), torn='{"type": "step", "lo')
    out = _printed(run_summary(run_dir))
    assert "failed: training process exited with code -9" in out and "22/82" in out
    assert "checkpoints" in out and "16" in out and "watch it live" not in out


def test_ftc_monitor_without_a_terminal(tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from ftc.cli.main import main

    monkeypatch.setenv("COLUMNS", "160")
    assert main(["monitor", str(RUNS / "troubled")]) == 0
    out = capsys.readouterr().out
    assert "out of memory at step 21" in out and "step 27: NaN/inf gradients; step skipped" in out
    assert "resumed from runs/demo/fixture/checkpoints/checkpoint-32 at step 32" in out and "ftc monitor" in out
    assert "1 OOM, 3 NaN skips, 1 rollback, 2 resumes" in out and "step 27: step 27" not in out
    assert main(["runs", str(RUNS / "healthy")]) == 0  # one run directory: its summary
    assert "0/20 -> 20/20" in capsys.readouterr().out
    assert main(["monitor", str(tmp_path)]) == 1
    assert "is not a run directory (it has no events.jsonl); list the runs with: ftc runs" in capsys.readouterr().err
    assert main(["monitor", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_compiler_import_does_not_load_textual() -> None:
    code = "import sys, ftc.cli.main; sys.exit('textual' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_sampler_looks_through_proc_rarely_when_nothing_runs(tmp_path: Path) -> None:
    sampler = MemorySampler(write_run(tmp_path / "run", healthy()))
    started = time.monotonic()
    assert [sampler.sample() for _ in range(50)] == [None] * 50
    assert sampler._scanned >= started  # scanned once, then waits RESCAN_S before the next look


def test_axis_shows_the_real_step_range_after_bucketing() -> None:
    points = [(float(i), 1.0) for i in range(2, 1003)]  # 1001 points into 2 x 12 dot columns
    last = chart.render([chart.Series("lr", points, "green")], 20, 4).plain.split("\n")[-1]
    assert last.split() == ["└2", "1002"]
