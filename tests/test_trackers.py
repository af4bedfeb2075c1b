"""[train] report_to: one run of the tiny model with every tracker that is installed, offline, each writing under
the run directory; a tracker whose package is missing skips its test here and is a spec error at compile time."""

from __future__ import annotations

import importlib.util
import shutil
import sqlite3
from pathlib import Path

import pytest
from helpers import run_ftc, write_jsonl

TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb", "trackio": "trackio"}
INSTALLED = [name for name, package in TRACKERS.items() if importlib.util.find_spec(package) is not None]
ROWS = [{"prompt": f"translate {w}", "completion": w.upper()} for w in "red green blue yellow cat dog".split()]


def _spec(trackers: list[str]) -> str:
    names = ", ".join(f'"{t}"' for t in trackers)
    return ('name = "t"\n[model]\nbase = "tiny"\n[data]\nsource = "d.jsonl"\nformat = "completion"\nvalidation = 0.25\n'
            'max_length = 32\n[method]\nkind = "lora"\n[train]\nmax_steps = 4\nbatch_size = 4\nlearning_rate = 1e-2\n'
            f'logging_steps = 1\nwarmup = 0\nreport_to = [{names}]\n[hardware]\ndevice = "cpu"\n')


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    if not INSTALLED:
        pytest.skip("no tracker package is installed (pip install 'ftc[tensorboard]')")
    tmp_path = tmp_path_factory.mktemp("trackers")
    shutil.copytree(tiny_model, tmp_path / "tiny")
    write_jsonl(tmp_path / "d.jsonl", ROWS * 4)
    (tmp_path / "t.toml").write_text(_spec(INSTALLED))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_MODE", "offline")  # nothing leaves the machine
        env.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")  # MLflow's local file store
        env.setenv("HF_HUB_OFFLINE", "1")
        env.delenv("TRACKIO_DIR", raising=False)  # ftc's default: RUN_DIR/trackio
        done = run_ftc("run", "t.toml", "--run-dir", "runs/t", "--no-tui", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return tmp_path / "runs" / "t"


def _needs(name: str) -> None:
    if name not in INSTALLED:
        pytest.skip(f"{TRACKERS[name]} is not installed (pip install 'ftc[{name}]')")


def test_tensorboard_event_files(tracked: Path) -> None:
    _needs("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = list((tracked / "tensorboard").glob("events.out.tfevents.*"))
    assert files, list(tracked.iterdir())
    scalars = EventAccumulator(str(files[0].parent)).Reload().Tags()["scalars"]
    assert "train/loss" in scalars and "train/learning_rate" in scalars


def test_mlflow_local_file_store(tracked: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _needs("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=f"file:{tracked.parent.parent / 'mlruns'}")
    experiment = client.get_experiment_by_name("t")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and "loss" in runs[0].data.metrics


def test_wandb_offline_run(tracked: Path) -> None:
    _needs("wandb")
    runs = list((tracked / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb")), list((tracked / "wandb").iterdir())


def test_trackio_local_database(tracked: Path) -> None:
    _needs("trackio")
    databases = list((tracked / "trackio").rglob("*.db"))
    assert databases, list((tracked / "trackio").rglob("*"))
    with sqlite3.connect(databases[0]) as db:
        tables = [row[0] for row in db.execute("select name from sqlite_master where type = 'table'")]
        assert "metrics" in tables
        assert db.execute("select count(*) from metrics").fetchone()[0] > 0


def test_a_missing_tracker_is_a_spec_error(tmp_path: Path, tiny_model: Path, monkeypatch) -> None:
    from ftc.compiler import evalchecks
    from ftc.compiler.compile import compile_spec
    from ftc.core.errors import SpecError

    shutil.copytree(tiny_model, tmp_path / "tiny")
    write_jsonl(tmp_path / "d.jsonl", ROWS * 4)
    (tmp_path / "t.toml").write_text(_spec(["tensorboard", "wandb"]))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(evalchecks, "installed", lambda package: package not in ("tensorboard", "wandb"))
    with pytest.raises(SpecError) as caught:
        compile_spec("t.toml")
    message = str(caught.value)
    assert "pip install 'ftc[tensorboard]'" in message and "pip install 'ftc[wandb]'" in message
    assert "train.report_to" in message
