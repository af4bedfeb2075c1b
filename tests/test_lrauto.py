"""`learning_rate = "auto"`: the range test's pick on synthetic curves (compiler/lrrange.py), the spec's strictness,
and the test itself on the tiny model through the emitted script (cli/lrfind.py, runtime/lrrange.py): bounded in
steps, stopped on divergence, cached so a second compile does not run it, and located errors when it cannot run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from helpers import build_tiny_model, write_jsonl
from pydantic import ValidationError

from ftc.cli.lrfind import run_range_test
from ftc.compiler import compile_spec
from ftc.compiler.lrrange import CLAMP, MAX_STEPS, Curve, RangeTestError, Sweep, pick, summary
from ftc.compiler.spec import TrainSpec
from ftc.core.errors import SpecError
from ftc.core.lrcurve import smoothed


def curve(losses: list[float], low: float = 1e-4, high: float = 1e-1, stopped: str = "done") -> Curve:
    n = len(losses)
    rates = [low * (high / low) ** (i / (n - 1)) for i in range(n)]
    return Curve(tuple(zip(rates, losses)), stopped, 30.0, n)


def test_the_smoothed_loss_starts_at_the_first_loss_and_follows_a_constant() -> None:
    assert smoothed([5.0]) == [5.0]
    assert smoothed([2.0] * 6) == pytest.approx([2.0] * 6)  # bias-corrected: no pull towards 0
    assert smoothed([4.0, 0.0])[1] == pytest.approx(4.0 * 0.6 / 1.6)


def test_the_pick_is_a_tenth_of_the_rate_the_loss_diverged_at() -> None:
    losses = [3.0, 2.9, 2.6, 2.0, 1.4, 1.0, 0.8, 0.7, 0.9, 1.8, 4.0]  # a valley, then divergence
    c = curve(losses, stopped="diverged")
    edge = c.points[-1][0]
    chosen = pick(c, planned=edge / 10)
    assert chosen.value == pytest.approx(edge / 10, rel=0.01)
    assert f"diverged at {edge:.2g}: a tenth of it" in chosen.why and "steepest descent" in chosen.why
    assert "loss over 4x" in chosen.why
    inf = Curve((*c.points[:-1], (edge, math.inf)), "diverged", 30.0, len(losses))  # a blown-up last step
    assert pick(inf, edge / 10).value == chosen.value


def test_without_divergence_the_pick_never_goes_under_the_rule() -> None:
    c = curve([3.0, 2.5, 2.0, 1.5, 1.2, 1.1, 1.0, 1.05, 1.0, 0.9], stopped="done")  # 1e-4 .. 0.1, all stable
    assert pick(c, planned=5e-3).value == pytest.approx(1e-2)  # a tenth of the last rate, over the rule's
    short = Curve(c.points[:4], "budget", 60.0, 10)  # a slow machine: the budget ended the sweep at 1e-3
    chosen = pick(short, planned=5e-3)
    assert chosen.value == 5e-3 and "no divergence up to 0.001:" in chosen.why and "time budget spent" in chosen.why


@pytest.mark.parametrize(("planned", "stopped"), [(1e-5, "done"), (1.0, "diverged")])
def test_the_pick_stays_within_the_clamp_of_the_planned_rate(planned: float, stopped: str) -> None:
    chosen = pick(curve([3.0, 2.5, 2.0, 1.5, 1.2, 1.1, 1.0, 0.9], stopped=stopped), planned)  # 1e-4 .. 0.1
    assert chosen.value == pytest.approx(planned * CLAMP if planned < 1e-3 else planned / CLAMP)
    assert "held to" in chosen.why


def test_a_curve_that_diverges_at_once_or_is_too_short_is_refused() -> None:
    with pytest.raises(RangeTestError, match="diverged from its first steps"):
        pick(curve([2.0, 9.0, 50.0, 300.0]), 1e-3)
    with pytest.raises(RangeTestError, match="diverged from its first steps"):
        pick(curve([math.nan, 1.0, 1.0, 1.0]), 1e-3)
    with pytest.raises(RangeTestError, match="fewer than the 4"):
        pick(curve([2.0, 1.9, 1.8], stopped="budget"), 1e-3)


def test_the_summary_lists_every_step_and_a_last_non_finite_loss() -> None:
    text = summary(curve([3.0, 2.0, 1.0, math.inf]))
    assert text.count("(") == 4 and text.endswith(": inf")


def test_the_spec_takes_a_float_or_exactly_auto() -> None:
    assert TrainSpec.model_validate({"learning_rate": "auto"}).learning_rate == "auto"
    assert TrainSpec.model_validate({"learning_rate": 2e-3}).learning_rate == 2e-3
    for bad in ("Auto", "fast", "1e-3", 0.0, 1.5):
        with pytest.raises(ValidationError):
            TrainSpec.model_validate({"learning_rate": bad})


def _spec(tmp: Path, model: str, train: str = 'learning_rate = "auto"\n', name: str = "s") -> Path:
    write_jsonl(tmp / "d.jsonl", [{"prompt": f"say {i}", "completion": f"ok {i}"} for i in range(100)])
    path = tmp / f"{name}.toml"
    path.write_text(f'[model]\nbase = "{model}"\n[data]\nsource = "d.jsonl"\nformat = "completion"\nmax_length = 64\n'
                    f'[method]\nkind = "lora"\n[train]\n{train}[hardware]\ndevice = "cpu"\n')
    return path


def test_auto_runs_the_range_test_once_and_plans_its_rate(tiny_model: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = _spec(tmp_path, str(tiny_model))
    calls: list[Sweep] = []

    def counted(*args: Any, **kwargs: Any) -> Curve:
        calls.append(args[5])
        return run_range_test(*args, **kwargs)

    result = compile_spec(path, range_test=counted)
    plan = result.plan
    assert len(calls) == 1 and calls[0].steps == MAX_STEPS
    rule = compile_spec(_spec(tmp_path, str(tiny_model), train="", name="rule")).plan["learning_rate"]
    assert calls[0].low == pytest.approx(rule / 10) and calls[0].high == pytest.approx(rule * 30)
    assert rule / CLAMP <= plan["learning_rate"] <= rule * CLAMP
    assert plan.settings["learning_rate"].why.startswith("measured: range test (Smith 2015)")
    note = next(n for n in plan.notes if n.startswith("learning-rate range test"))
    assert 1 <= note.split("(smoothed): ")[1].count(", ") + 1 <= MAX_STEPS  # one cell per step: the bound kept
    assert f"LEARNING_RATE = {plan['learning_rate']!r}" in result.emitted.files["train.py"]
    assert "range test" in result.emitted.files["plan.md"]

    path.write_text(path.read_text())  # same spec: the curve comes from the cache
    again = compile_spec(path, range_test=counted)
    assert len(calls) == 1 and again.plan["learning_rate"] == plan["learning_rate"]
    assert compile_spec(path).plan["learning_rate"] == plan["learning_rate"]  # no runner needed once cached

    changed = _spec(tmp_path, str(tiny_model), train='learning_rate = "auto"\nbatch_size = 8\n', name="b8")
    with pytest.raises(SpecError, match=r"b8.toml:\d+: train.learning_rate: \"auto\" is measured by a learning-rate"):
        compile_spec(changed)  # another batch is another key, and no runner was handed in


def test_the_sweep_keeps_its_step_bound_and_stops_on_divergence(tiny_model: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = _spec(tmp_path, str(tiny_model), train="")
    bounded = run_range_test(str(path), (), 1e-3, 4, 4, Sweep(low=1e-4, high=1e-2, steps=5, min_steps=3))
    assert bounded.stopped == "done" and len(bounded.points) == 5
    assert [lr for lr, _ in bounded.points] == pytest.approx([1e-4 * 10 ** (i / 2) for i in range(5)])
    # the tiny model's loss is bounded (a final norm before a frozen head: ~log(vocab) at worst), so it diverges
    # by 1.3x its lowest smoothed loss, not 4x (measured, smoothed: 7.01 -> 5.26 at 0.8, then 6.31, 7.23)
    wild = run_range_test(str(path), (), 1e-3, 4, 4, Sweep(low=1e-3, high=1e5, steps=12, min_steps=3, diverge=1.3))
    assert wild.stopped == "diverged" and len(wild.points) < 12
    smooth = smoothed([loss for _, loss in wild.points])
    assert not math.isfinite(smooth[-1]) or smooth[-1] > 1.3 * min(smooth[:-1])


def test_a_model_that_cannot_load_is_a_located_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    build_tiny_model(tmp_path / "broken")
    (tmp_path / "broken" / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(SpecError) as caught:
        compile_spec(_spec(tmp_path, str(tmp_path / "broken")), range_test=run_range_test)
    message = str(caught.value)
    assert message.startswith("s.toml:10: train.learning_rate: \"auto\": the range test run failed (exit code 1)")
    assert "header too large" in message and "set a float learning_rate" in message


def test_auto_needs_the_sft_objective(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rows = [{"prompt": f"p {i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(40)]
    write_jsonl(tmp_path / "p.jsonl", rows)
    (tmp_path / "p.toml").write_text(f'[model]\nbase = "{tiny_model}"\n[data]\nsource = "p.jsonl"\n'
                                     'format = "preference"\nmax_length = 64\n[method]\nkind = "lora"\n'
                                     '[train]\nobjective = "dpo"\nlearning_rate = "auto"\n[hardware]\ndevice = "cpu"\n')
    with pytest.raises(SpecError, match="train.learning_rate: \"auto\" is measured for train.objective = \"sft\""):
        compile_spec(tmp_path / "p.toml", range_test=run_range_test)


def test_what_if_plans_for_other_hardware_use_the_rule_for_auto() -> None:
    from ftc.compiler.overrides import parse_overrides
    from ftc.compiler.whatif import parse_gpus, what_if

    spec = Path(__file__).resolve().parent.parent / "specs" / "mistral" / "7b_full_h100.toml"
    rows = what_if(spec, parse_gpus("H100"), [1], parse_overrides(["train.learning_rate=auto"]))
    assert rows[0].fits and "learning_rate" not in (rows[0].note or "")


def test_auto_needs_local_data(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "h.toml").write_text(f'[model]\nbase = "{tiny_model}"\n[data]\nsource = "someone/some-data"\n'
                                     'format = "completion"\nmax_length = 64\n[method]\nkind = "lora"\n'
                                     '[train]\nlearning_rate = "auto"\n[hardware]\ndevice = "cpu"\n')
    with pytest.raises(SpecError, match="h.toml:10: train.learning_rate: \"auto\" needs the training data as local"):
        compile_spec(tmp_path / "h.toml", range_test=run_range_test)
