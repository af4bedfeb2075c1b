"""`ftc run` over 2 CPU processes (gloo), end to end: DDP and DeepSpeed ZeRO-3 with the optimizer
offloaded end where the 1-process run with the same effective batch and seed ends.

Tolerance: every logged step loss within 1 % (relative) of the 1-process run's. The same 8 examples make up
each optimizer step in both (accelerate hands micro-batch i to process i mod 2 from the same seeded order),
so only the reduction order of the gradients differs (measured: < 0.05 % over 4 steps).

The DDP case runs in the default suite (~30 s with its 1-process reference on 2 idle cores; minutes when
they are shared); ZeRO-3 (~40-90 s; the first ZeRO run also builds DeepSpeed's CPU
communication extension, ~4 min, cached after), the kill, stop/resume and two-node tests are slow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import run_ftc, write_jsonl

SLOW = pytest.mark.slow

SPEC = """[model]
base = "{model}"
[data]
source = "d.jsonl"
format = "completion"
validation = 0
max_length = 64
[method]
kind = "lora"
r = 4
[train]
max_steps = 4
batch_size = 8
micro_batch_size = 2
learning_rate = 1e-3
save_steps = 2
[hardware]
device = "cpu"
devices = {devices}
{extra}"""


def _write(folder: Path, model: Path, devices: int, extra: str = "", steps: int = 4) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    words = ["red", "green", "blue", "cat", "dog", "one", "two", "three"]
    write_jsonl(folder / "d.jsonl", [{"prompt": f"say {w} {i}", "completion": f"{w} {w}"}
                                     for i, w in enumerate(words * 4)])
    spec = SPEC.format(model=model, devices=devices, extra=extra).replace("max_steps = 4", f"max_steps = {steps}")
    (folder / "s.toml").write_text(spec, encoding="utf-8")


def _losses(run: Path) -> list[float]:
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    return [e["loss"] for e in events if e["type"] == "step"]


def _run(folder: Path, model: Path, devices: int, extra: str = "", steps: int = 4) -> tuple[list[float], Path]:
    _write(folder, model, devices, extra, steps)
    done = run_ftc("run", "s.toml", "--run-dir", "run", "--no-tui", cwd=folder, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return _losses(folder / "run"), folder / "run"


def _params(run: Path) -> tuple[int, int]:
    event = next(json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()
                 if json.loads(line)["type"] == "params")
    return event["trainable"], event["total"]


def _shapes(run: Path) -> dict[str, list[int]]:
    from safetensors import safe_open

    with safe_open(str(run / "final" / "adapter_model.safetensors"), framework="pt") as saved:
        return {name: list(saved.get_slice(name).get_shape()) for name in saved.keys()}


@pytest.fixture(scope="module")
def one_process(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[float], Path]:
    return _run(tmp_path_factory.mktemp("one"), tiny_model, 1)


@pytest.mark.parametrize("extra", ["", pytest.param('strategy = "zero3"\noffload = "optimizer"', marks=SLOW)],
                         ids=["ddp", "zero3-offload"])  # FSDP2 is refused on CPU (accelerate runs it as DDP)
def test_two_processes_end_where_one_does(extra: str, one_process: tuple[list[float], Path], tiny_model: Path,
                                          tmp_path: Path) -> None:
    if "zero" in extra:
        pytest.importorskip("deepspeed")
    losses, run = _run(tmp_path, tiny_model, 2, extra)
    one_losses, one_run = one_process
    assert len(losses) == len(one_losses) == 4  # rank 0 alone writes events.jsonl: one line per step
    for two, one in zip(losses, one_losses):
        assert abs(two - one) <= 0.01 * abs(one), (losses, one_losses)
    plan = json.loads((run / "plan.json").read_text())["settings"]
    assert plan["strategy"] == ("ddp" if not extra else extra.split('"')[1])
    assert (run / "ranks" / "1" / "events.jsonl").is_file()  # the other rank's events, apart
    assert not list((run / "ranks").glob("data.*.pickle"))  # every rank opened the data cache: no hand-off file
    assert (run / "ranks" / "1" / "data" / "stats.json").is_file()  # rank 1 ran the data stage itself
    assert (run / "final" / "adapter_model.safetensors").is_file()
    assert _shapes(run) == _shapes(one_run)  # every adapter tensor whole: no empty or 1/2-size slice
    # ZeRO-3 builds the model partitioned (zero.Init: a parameter's own tensor is empty); counted whole (ds_numel)
    assert _params(run) == _params(one_run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]


def _rank_pid(launcher_children: list[int], rank: str) -> int | None:
    for pid in launcher_children:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env:
            return pid
    return None


@SLOW
def test_kill_9_of_one_rank_then_ftc_run_resumes_to_the_same_result(tiny_model: Path, tmp_path: Path) -> None:
    """One of 2 DDP processes killed after the first checkpoint: the job ends (torchrun stops the other),
    `ftc run` on the same run directory resumes, and every step matches an uninterrupted 1-process run."""
    from ftc.cli.launch import _workers

    reference, _ = _run(tmp_path / "one", tiny_model, 1, steps=6)
    folder = tmp_path / "two"
    _write(folder, tiny_model, 2, steps=6)
    with (folder / "first.log").open("w") as log:
        job = subprocess.Popen([sys.executable, "-m", "ftc.cli.main", "run", "s.toml", "--run-dir", "run", "--no-tui"],
                               cwd=folder, stdout=log, stderr=subprocess.STDOUT)
        killed, deadline = None, time.monotonic() + 600
        while killed is None and time.monotonic() < deadline and job.poll() is None:
            if (folder / "run" / "checkpoints" / "checkpoint-2").is_dir():
                workers = [w for launcher in _workers(job.pid) for w in _workers(launcher)]  # ftc > torchrun > ranks
                if (killed := _rank_pid(workers, "1")) is not None:
                    os.kill(killed, signal.SIGKILL)
            time.sleep(0.05)
        job.wait(timeout=600)
    assert killed is not None and job.returncode != 0, (folder / "first.log").read_text()[-3000:]
    done = run_ftc("run", "s.toml", "--run-dir", "run", "--no-tui", cwd=folder, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    events = [json.loads(line) for line in (folder / "run" / "events.jsonl").read_text().splitlines()]
    assert any(e["type"] == "resume" for e in events)
    losses = {e["step"]: e["loss"] for e in events if e["type"] == "step"}  # the resumed run's, last
    for step, one in enumerate(reference, start=1):
        assert abs(losses[step] - one) <= 0.01 * abs(one), (losses, reference)
    assert max(losses) == 6 and (folder / "run" / "final" / "adapter_model.safetensors").is_file()


@SLOW
def test_two_nodes_simulated_on_localhost(one_process: tuple[list[float], Path], tiny_model: Path,
                                          tmp_path: Path) -> None:
    """nodes = 2 x devices = 1: `ftc run --node-rank K --master 127.0.0.1:PORT` on each "node" (two run
    directories, as two machines would have); node 0 holds the events and the result."""
    import socket

    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folders = [tmp_path / f"node{k}" for k in (0, 1)]
    jobs = []
    for rank, folder in enumerate(folders):
        _write(folder, tiny_model, 1, "nodes = 2\n")
        log = (folder / "ftc.log").open("w")
        jobs.append(subprocess.Popen([sys.executable, "-m", "ftc.cli.main", "run", "s.toml", "--run-dir", "run",
                                      "--no-tui", "--node-rank", str(rank), "--master", f"127.0.0.1:{port}"],
                                     cwd=folder, stdout=log, stderr=subprocess.STDOUT))
    codes = [job.wait(timeout=1200) for job in jobs]
    assert codes == [0, 0], [(f / "ftc.log").read_text()[-2000:] for f in folders]
    losses = _losses(folders[0] / "run")
    for two, one in zip(losses, one_process[0], strict=True):
        assert abs(two - one) <= 0.01 * abs(one), (losses, one_process[0])
    assert (folders[0] / "run" / "final").is_dir() and not (folders[1] / "run" / "final").exists()
    assert "node 1 finished its part" in (folders[1] / "ftc.log").read_text()


@SLOW
def test_stop_request_reaches_both_ranks_and_a_ddp_run_resumes_on_one_process(tiny_model: Path, tmp_path: Path
                                                                              ) -> None:
    """control/stop read by rank 0 stops both DDP processes at the same step with a checkpoint; the spec
    then says devices = 1 and `ftc run` resumes the run there (DDP checkpoints hold whole states) and ends
    where an uninterrupted 1-process run of the same 6 steps does."""
    reference, _ = _run(tmp_path / "one", tiny_model, 1, steps=6)
    folder = tmp_path / "two"
    _write(folder, tiny_model, 2, steps=6)
    with (folder / "first.log").open("w") as log:
        job = subprocess.Popen([sys.executable, "-m", "ftc.cli.main", "run", "s.toml", "--run-dir", "run", "--no-tui"],
                               cwd=folder, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and job.poll() is None:
            if (folder / "run" / "events.jsonl").is_file() and '"type": "step"' in (folder / "run" / "events.jsonl").read_text():
                (folder / "run" / "control").mkdir(exist_ok=True)
                (folder / "run" / "control" / "stop").touch()
                break
            time.sleep(0.05)
        assert job.wait(timeout=600) == 77, (folder / "first.log").read_text()[-3000:]  # stopped, resumable
    events = [json.loads(line) for line in (folder / "run" / "events.jsonl").read_text().splitlines()]
    stopped = [e for e in events if e["type"] == "status"][-1]
    assert stopped["state"] == "stopped" and (folder / "run" / "checkpoints").is_dir()
    (folder / "s.toml").write_text((folder / "s.toml").read_text().replace("devices = 2", "devices = 1"))
    done = run_ftc("run", "s.toml", "--run-dir", "run", "--no-tui", cwd=folder, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    plan = json.loads((folder / "run" / "plan.json").read_text())["settings"]
    assert (plan["strategy"], plan["devices"]) == ("single", 1)
    losses = {e["step"]: e["loss"] for e in map(json.loads, (folder / "run" / "events.jsonl").read_text().splitlines())
              if e["type"] == "step"}
    assert max(losses) == 6
    for step, one in enumerate(reference, start=1):
        assert abs(losses[step] - one) <= 0.01 * abs(one), (losses, reference)
