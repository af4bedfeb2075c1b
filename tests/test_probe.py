"""`ftc plan --probe` compiles the spec with its own overrides (a few steps, no checkpoints, no generation): the
spec's settings that only make sense beside what the probe turns off must not make that compile fail."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_jsonl

from ftc.cli.lrfind import short_run
from ftc.compiler import compile_spec


def test_the_probe_compiles_a_spec_with_epochs_and_generated_answer_metrics(tiny_model: Path, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"say {i}", "completion": f"ok {i}"} for i in range(40)])
    spec = tmp_path / "s.toml"
    spec.write_text(f'[model]\nbase = "{tiny_model}"\n[data]\nsource = "d.jsonl"\nformat = "completion"\n'
                    'max_length = 64\nvalidation = 0.1\n[method]\nkind = "lora"\n[train]\nepochs = 3\n'
                    '[hardware]\ndevice = "cpu"\n[eval]\ncompare = 4\nmax_new_tokens = 8\nmetrics = ["exact_match"]\n')
    plan = compile_spec(spec, overrides=short_run(4, "probe")).plan
    assert plan["max_steps"] == 4
    assert compile_spec(spec).plan["max_steps"] == -1  # without the probe's flags the spec plans its epochs
