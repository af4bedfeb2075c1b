"""Checkpoints and the other state of a run directory that must survive a crash. Pure standard library:
`ftc run` reads it without importing torch, and the training script's callbacks (ftc.runtime.guard) write it.

Layout of RUN_DIR:
  checkpoints/checkpoint-N/     complete checkpoints only; each holds ftc-checkpoint.json (the manifest)
  checkpoints.partial/          where the Trainer writes a checkpoint; it is renamed into checkpoints/
                                only once whole and flushed to disk, so a crash (kill -9, power loss,
                                full disk) leaves at worst a partial folder here, removed at the next start
  overrides.json                what `ftc run` changed after a fault (smaller micro-batch, lower learning rate);
                                train.py applies it to CONFIG before its start event, so the event shows it
  .ftc-lock                     held (flock) by the `ftc run` writing this run and by its training process;
                                it names both ({"pid": ftc run, "child": training process})
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

MANIFEST = "ftc-checkpoint.json"
FOLDER = "checkpoints"
STAGING = "checkpoints.partial"
OVERRIDES = "overrides.json"
LOCK = ".ftc-lock"
PREFIX = "checkpoint-"

ENTRIES = frozenset({"spec.toml", "train.py", "plan.md", "plan.json", "events.jsonl", "train.log", LOCK, OVERRIDES,
                     FOLDER, STAGING, "final", "final.partial", "control", "previous", "data", "pissa_init", "merged",
                     "ranks", "accelerate.yaml", "ds_config.json", "launch.sh", "sbatch.sh",
                     "eval.json", "report.html", "report"})
"""Every name ftc writes at the top of a run directory (`ftc run`, the script, `ftc merge`, `ftc report`), besides
`launch_node<K>.sh` (is_entry): a folder that is not a run may be used with `ftc run --force` only when it holds none
of them, so that no file of the user's is replaced."""


def is_entry(name: str) -> bool:
    """Whether ftc writes `name` at the top of a run directory (ENTRIES, or a node's launch script)."""
    return name in ENTRIES or re.fullmatch(r"launch_node\d+\.sh", name) is not None
SUPERVISOR_ENV = "FTC_SUPERVISOR_PID"
"""Set by `ftc run` for its training process (and whatever a launcher starts): the supervisor's process id, which
the script watches (ftc.runtime.orphan) so that it saves a checkpoint and stops when `ftc run` dies."""

EXIT_OOM = 75
"""Exit code of a training script that ran out of memory: `ftc run` retries with half the micro-batch."""
EXIT_ROLLBACK = 76
"""Exit code of a training script whose steps kept giving NaN/inf: `ftc run` rolls back to the last good
checkpoint with a lower learning rate."""
EXIT_STOPPED = 77
"""Exit code of a training script that stopped on request (Ctrl-C, SIGTERM, a stop file, a full disk, its `ftc run`
gone) after saving what it could: the run is resumable. `ftc run` exits with it too when the run stopped on SIGTERM,
a stop file or the monitor's stop (130 after Ctrl-C)."""


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint: its folder, optimizer step and manifest."""

    path: Path
    step: int
    manifest: dict[str, Any]


def checkpoints_dir(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / FOLDER


def staging_dir(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / STAGING


def _fsync_tree(path: Path) -> None:
    """Flush every file and folder entry under `path` to disk, so a rename publishes durable bytes."""
    for folder, _, files in os.walk(path):
        for name in files:
            _fsync(os.path.join(folder, name))
        _fsync(folder)


def _fsync(path: str | Path) -> None:
    """Flush one file, or one folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` as JSON to `path`: a temporary file, flushed, then renamed over it."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, ensure_ascii=False, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def _discard(path: Path) -> None:
    """Remove a folder so that it leaves every listing at once: rename, then delete."""
    if not path.exists():
        return
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def publish(staged: str | os.PathLike[str], run_dir: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Move a checkpoint the Trainer finished writing in checkpoints.partial/ into checkpoints/, whole:
    the manifest goes in last, everything is flushed, then one rename makes it visible."""
    staged = Path(staged)
    write_json_atomic(staged / MANIFEST, manifest)
    _fsync_tree(staged)
    folder = checkpoints_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / staged.name
    if target.exists():  # the same step saved again after a rollback: the old one belongs to an abandoned path
        _discard(target)
    os.rename(staged, target)
    _fsync(folder)
    return target


def replace_folder(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Put the finished folder `source` in place of `target` (flushed, then renamed; an older `target`
    is moved aside first, as a rename cannot replace a folder that has files)."""
    source, target = Path(source), Path(target)
    _fsync_tree(source)
    _discard(target)
    os.rename(source, target)
    _fsync(target.parent)


def complete(run_dir: str | os.PathLike[str]) -> list[Checkpoint]:
    """The complete checkpoints of a run, oldest first (folders without a readable manifest are ignored)."""
    found = []
    try:
        entries = list(os.scandir(checkpoints_dir(run_dir)))
    except FileNotFoundError:
        return []
    for entry in entries:
        if not entry.name.startswith(PREFIX) or not entry.is_dir():
            continue
        try:
            step = int(entry.name[len(PREFIX):])
            manifest = complete_manifest(entry.path)
        except (ValueError, OSError):
            continue
        if manifest.get("step") == step:
            found.append(Checkpoint(Path(entry.path), step, manifest))
    return sorted(found, key=lambda c: c.step)


def complete_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of one checkpoint folder."""
    data = json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}/{MANIFEST} is not a JSON object")
    return data


def file_sha256(path: str | os.PathLike[str]) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def latest(run_dir: str | os.PathLike[str]) -> Checkpoint | None:
    found = complete(run_dir)
    return found[-1] if found else None


def best(checkpoints: list[Checkpoint]) -> Checkpoint | None:
    """The checkpoint with the lowest validation loss measured at its own step (None without any)."""
    scored = [c for c in checkpoints if isinstance(c.manifest.get("eval_loss"), (int, float))]
    return min(scored, key=lambda c: (c.manifest["eval_loss"], c.step)) if scored else None


def rotate(run_dir: str | os.PathLike[str], keep: int) -> list[Path]:
    """Delete all but the last `keep` checkpoints and the best one by validation loss; the removed paths."""
    found = complete(run_dir)
    kept = {c.path for c in found[-keep:]}
    if (top := best(found)) is not None:
        kept.add(top.path)
    removed = [c.path for c in found if c.path not in kept]
    for path in removed:
        _discard(path)
    return removed


def discard_after(run_dir: str | os.PathLike[str], step: int) -> list[Path]:
    """Delete the checkpoints later than `step` (they belong to a path a rollback abandons)."""
    removed = [c.path for c in complete(run_dir) if c.step > step]
    for path in removed:
        _discard(path)
    return removed


def clean_partial(run_dir: str | os.PathLike[str]) -> list[str]:
    """Remove what a crash left half-written: checkpoints.partial/ and trash folders; the names removed."""
    removed = []
    staging = staging_dir(run_dir)
    with contextlib.suppress(FileNotFoundError):  # gone meanwhile: nothing left to clean
        removed += [p.name for p in staging.iterdir()]
        shutil.rmtree(staging, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        for entry in checkpoints_dir(run_dir).iterdir():
            if entry.name.startswith(".trash-"):
                shutil.rmtree(entry, ignore_errors=True)
    return removed


def folder_bytes(path: str | os.PathLike[str]) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(folder, name))
            except OSError:
                continue
    return total


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


# ---------------------------------------------------------------------------- overrides
def read_overrides(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What `ftc run` changed in this run after a fault ({} when nothing): micro_batch_size and grad_accum
    after an out-of-memory error, lr_scale after a NaN rollback (train.py multiplies it into CONFIG's
    LEARNING_RATE), and the history of changes."""
    try:
        data = json.loads((Path(run_dir) / OVERRIDES).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def write_overrides(run_dir: str | os.PathLike[str], overrides: dict[str, Any]) -> None:
    write_json_atomic(Path(run_dir) / OVERRIDES, overrides)


# ---------------------------------------------------------------------------- fingerprints
def data_fingerprint(files: str | None, source: str | None, validation: Any = None) -> str:
    """sha256 of the training data (files, a glob, or a saved dataset folder; a hub dataset counts by
    its id). Each file's hash is remembered with its size and time in the data cache, so a resume
    re-hashes only changed files (ftc.core.data.files). Paths are relative to the working directory."""
    from ftc.core.data.cache import hashes_file
    from ftc.core.data.files import fingerprint

    return fingerprint([files, source, validation if isinstance(validation, str) else None], hashes_file())


# ---------------------------------------------------------------------------- lock
class RunLock:
    """An exclusive lock on a run directory (flock on RUN_DIR/.ftc-lock), so that two `ftc run`s never
    write the same run. The training process inherits it: a lock held by an orphaned script still counts."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.path = Path(run_dir) / LOCK
        self._handle: TextIO | None = None

    def acquire(self) -> None:
        """Take the lock; raises BlockingIOError (with the holder in its message) when it is taken."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise BlockingIOError(f"held by {holder}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid()}))
        handle.flush()
        self._handle = handle

    def note_child(self, pid: int) -> None:
        """Record the training process's id beside ours (tests and people read it)."""
        if self._handle is not None:
            self._handle.seek(0)
            self._handle.truncate()
            self._handle.write(json.dumps({"pid": os.getpid(), "child": pid}))
            self._handle.flush()

    def holder(self) -> dict[str, Any]:
        """What the lock file says of its holder ({} when it cannot be read)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def fileno(self) -> int:
        assert self._handle is not None
        return self._handle.fileno()

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the last descriptor releases the flock
            self._handle = None


def pid_alive(pid: Any) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped by its parent, counts as gone)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:  # Linux: state Z (zombie) or X (dead) in /proc/PID/stat, after the command name in parentheses
        state = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace").rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")
