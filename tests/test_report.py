"""report.html from a run directory's events.jsonl, plan.json and eval.json: curves as PNGs (files and inline),
the before/after table and the key settings in one self-contained page; rendered by headless Chromium where it
is installed (`apt-get install -y chromium`), else that test skips."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import run_ftc

from ftc.core.events import EventLog


def _run_dir(tmp_path: Path) -> Path:
    """A run directory as train.py leaves one: 40 steps, 4 evaluations, eval.json, plan.json."""
    run = tmp_path / "runs" / "r" / "1"
    events = EventLog(run / "events.jsonl")
    events.write("status", "launching", state="starting")
    for step in range(1, 41):
        events.write("step", step=step, total_steps=40, loss=3.0 * math.exp(-step / 15) + 0.5,
                     learning_rate=1e-3 * min(1.0, step / 4) * (1 - step / 41), tokens_per_s=900 + 10 * (step % 5),
                     memory_bytes=int((1.2 + 0.01 * step) * 2**30))
        if step % 10 == 0:
            events.write("eval", step=step, loss=3.0 * math.exp(-step / 18) + 0.7)
    events.write("compare", "exact match", examples=1, exact_before=0, exact_after=1,
                 samples=[{"prompt": "<b>hi</b>", "expected": "Hello", "before": "hey", "after": "Hello"}])
    events.write("status", "finished: training loss 0.9", state="completed", step=40)
    plan = {"name": "r", "spec": "specs/r.toml", "ftc_version": "0.1.0", "memory": {"total": 2 * 2**30},
            "settings": {"method": "lora", "learning_rate": 1e-3, "batch_size": 8},
            "key_settings": {"method": "method", "learning_rate": "lr", "batch_size": "batch"}}
    (run / "plan.json").write_text(json.dumps(plan))
    evaluation = {"before": {"loss": 3.2, "exact_match": 0.0, "bleu": 4.1}, "after": {"loss": 1.1, "exact_match": 50.0,
                  "bleu": 38.5}, "generation": {"examples": 2, "max_new_tokens": 16, "decoding": "greedy"},
                  "loss_examples": 10, "gate": {"fail_if_worse": ["loss"], "regressions": []}}
    (run / "eval.json").write_text(json.dumps(evaluation))
    return run


def test_report_is_one_self_contained_page(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    done = run_ftc("report", str(run), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    page = (run / "report.html").read_text()
    assert not re.search(r"""(src|href)=['"](?!data:)""", page)  # nothing loaded from outside the file
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(images) == 5  # loss, perplexity, learning rate, tokens/s, memory against the estimate
    for name in ("loss", "perplexity", "learning_rate", "tokens_per_s", "memory"):
        png = (run / "report" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and base64.b64encode(png).decode() in images
    assert "<td>BLEU</td><td>4.1</td><td>38.5</td><td>+34.4</td>" in page
    assert "<td>lr</td><td>0.001</td>" in page
    assert "&lt;b&gt;hi&lt;/b&gt;" in page  # prompts are escaped
    assert "Regression gate on loss: worse: none" in page


def test_report_of_a_folder_that_is_no_run(tmp_path: Path) -> None:
    done = run_ftc("report", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 1 and "is not a run directory" in done.stderr


def test_chromium_renders_the_report(tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium enables this test)")
    from PIL import Image

    run = _run_dir(tmp_path)
    assert run_ftc("report", str(run), cwd=tmp_path).returncode == 0
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1200,1400", (run / "report.html").resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 1400)
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50  # text, tables and curves: a blank page has one colour
    dark = sum(n for n, (r, g, b) in colours if r + g + b < 200)
    assert dark > 2000, "almost nothing dark on the page: the report rendered blank"
