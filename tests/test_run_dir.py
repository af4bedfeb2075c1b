"""`ftc run --run-dir` on a folder that is not a run: refused (it names the folder and --force); with --force the
run goes beside the user's files, never over them. And the exit code of a run that stopped: 77, not 0."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import run_ftc, write_jsonl

from ftc.core import checkpoint as ckpt

ROWS = [{"q": f"say {w} {i}", "a": w.upper()} for i in range(3) for w in "red green blue cat".split()]
SPEC = ('name = "rd"\n[model]\nbase = "tiny"\n[data]\nsource = "d.jsonl"\nformat = "completion"\nvalidation = 0\n'
        'max_length = 32\n[data.columns]\nprompt = "q"\ncompletion = "a"\n[method]\nkind = "lora"\nr = 4\n'
        '[train]\nmax_steps = 2\nbatch_size = 4\nlogging_steps = 1\nsave_steps = 1\n[hardware]\ndevice = "cpu"\n')


def _setup(root: Path, tiny_model: Path, files: dict[str, str]) -> Path:
    shutil.copytree(tiny_model, root / "tiny")
    write_jsonl(root / "d.jsonl", ROWS)
    (root / "s.toml").write_text(SPEC)
    (root / "mine").mkdir()
    for name, text in files.items():
        (root / "mine" / name).write_text(text)
    return root / "mine"


def _listing(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir()}


def test_a_folder_that_is_not_a_run_is_refused_and_force_never_replaces_a_file(tiny_model: Path,
                                                                                  tmp_path: Path) -> None:
    mine = _setup(tmp_path, tiny_model, {"notes.txt": "my notes", "train.py": "print('mine')", "plan.md": "# mine"})
    refused = run_ftc("run", "s.toml", "--run-dir", "mine", "--no-tui", cwd=tmp_path)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "--run-dir mine is a folder that is not an ftc run (no events.jsonl) and holds files" in refused.stderr
    assert "pass --force" in refused.stderr and "moving away plan.md, train.py" in refused.stderr
    forced = run_ftc("run", "s.toml", "--run-dir", "mine", "--no-tui", "--force", cwd=tmp_path)
    assert forced.returncode == 1
    assert "holds plan.md, train.py, which ftc run would write; --force never replaces a file of yours" in forced.stderr
    assert _listing(mine) == {"notes.txt": "my notes", "train.py": "print('mine')", "plan.md": "# mine"}  # untouched
    (mine / "control").mkdir()
    (mine / "control" / "mine.txt").write_text("x")  # a folder of that name with a file that is not a request
    assert "holds control, plan.md, train.py, which ftc run would write" in run_ftc(
        "run", "s.toml", "--run-dir", "mine", "--no-tui", "--force", cwd=tmp_path).stderr


def test_force_puts_the_run_beside_the_files_and_a_stopped_run_exits_77(tiny_model: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    mine = _setup(tmp_path, tiny_model, {"notes.txt": "my notes"})
    monkeypatch.setenv("FTC_INJECT", "sigterm@1")  # a scheduler's SIGTERM during step 1: saved, stopped
    stopped = run_ftc("run", "s.toml", "--run-dir", "mine", "--no-tui", "--force", cwd=tmp_path)
    assert stopped.returncode == ckpt.EXIT_STOPPED, stopped.stdout + stopped.stderr
    assert "stopped: stopped at step 1" in stopped.stdout and "resume with: ftc run s.toml --run-dir mine" in stopped.stdout
    final = json.loads((mine / "events.jsonl").read_text().splitlines()[-1])
    assert (final["state"], final["exit_code"]) == ("stopped", ckpt.EXIT_STOPPED)
    assert (mine / "notes.txt").read_text() == "my notes"
    assert all(ckpt.is_entry(p.name) for p in mine.iterdir() if p.name != "notes.txt")  # what ftc writes


@pytest.mark.slow
def test_a_forced_run_resumes_and_fresh_leaves_the_users_files(tiny_model: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    mine = _setup(tmp_path, tiny_model, {"notes.txt": "my notes"})
    monkeypatch.setenv("FTC_INJECT", "sigterm@1")
    assert run_ftc("run", "s.toml", "--run-dir", "mine", "--no-tui", "--force", cwd=tmp_path).returncode == 77
    monkeypatch.delenv("FTC_INJECT")
    done = run_ftc("run", "s.toml", "--run-dir", "mine", "--no-tui", cwd=tmp_path)  # a run now: no --force needed
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming from checkpoint-1" in done.stdout and (mine / "final").is_dir()
    again = run_ftc("run", "s.toml", "--run-dir", "mine", "--no-tui", "--fresh", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    (previous,) = (mine / "previous").iterdir()
    assert (previous / "final").is_dir() and not (previous / "notes.txt").exists()
    assert (mine / "notes.txt").read_text() == "my notes"
    assert all(ckpt.is_entry(p.name) for p in mine.iterdir() if p.name != "notes.txt")


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", "1e9"])
def test_a_bad_orphan_wait_is_refused_with_its_range(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftc.cli import rundir
    from ftc.core.errors import RunError

    monkeypatch.setenv(rundir.WAIT_ENV, value)
    with pytest.raises(RunError, match=rf"FTC_ORPHAN_WAIT='{value}' is not a number of seconds from 0 to 86400"):
        rundir._bound()
    monkeypatch.setenv(rundir.WAIT_ENV, "2.5")
    assert rundir._bound() == 2.5
