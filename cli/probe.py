"""`ftc plan SPEC --probe`: measure the step time on this machine by running the emitted train.py itself
for a few optimizer steps (compiled with `--set train.max_steps=N`, no mid-run checkpoints or
evaluations), in a temporary directory, with a time limit. The first step (warm-up: allocation,
kernel choice) is left out of the average."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ftc.cli.lrfind import run_range_test, short_run
from ftc.compiler.compile import compile_spec
from ftc.compiler.overrides import Override
from ftc.core.errors import RunError


@dataclass(frozen=True)
class Probe:
    """Seconds per optimizer step as measured, over `steps` steps after the first."""

    seconds_per_step: float
    steps: int
    tokens_per_s: float | None


def _steps(events_path: Path) -> list[dict[str, object]]:
    if not events_path.exists():
        return []
    lines = events_path.read_text(encoding="utf-8").splitlines()
    return [e for e in map(json.loads, lines) if e.get("type") == "step"]


def probe(spec: str, overrides: tuple[Override, ...], steps: int = 4, timeout: float = 300) -> Probe:
    """Run the spec's script for `steps` optimizer steps and time steps 2..N; raises RunError on a
    failure or after `timeout` seconds, with the end of the script's log."""
    if steps < 2:
        raise RunError("--probe-steps must be at least 2 (the first step is warm-up)")
    with tempfile.TemporaryDirectory(prefix="ftc-probe-") as tmp:
        result = compile_spec(spec, Path(tmp) / "compiled", (*overrides, *short_run(steps, "probe")), range_test=run_range_test)
        result.write()
        run_dir = Path(tmp) / "run"
        env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false",
                   HF_DATASETS_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
        log = Path(tmp) / "probe.log"
        with log.open("w", encoding="utf-8") as handle:
            try:
                code = subprocess.run([sys.executable, str(result.out_dir / "train.py"), str(run_dir)], stdout=handle,
                                      stderr=subprocess.STDOUT, env=env, timeout=timeout, check=False).returncode
            except subprocess.TimeoutExpired:
                code = None
        events = _steps(run_dir / "events.jsonl")
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-8:])
    if code is None and len(events) < 2:
        raise RunError(f"the probe did not finish 2 steps in {timeout:.0f} s; give it longer with --probe-timeout")
    if code not in (0, None) or len(events) < 2:
        raise RunError(f"the probe run failed (exit code {code}); the end of its log:\n{tail}")
    times = [float(e["time"]) for e in events]  # type: ignore[arg-type]
    rates = [float(e["tokens_per_s"]) for e in events[1:] if e.get("tokens_per_s")]  # type: ignore[arg-type]
    return Probe((times[-1] - times[0]) / (len(times) - 1), len(times) - 1,
                 sum(rates) / len(rates) if rates else None)
