"""`learning_rate = "auto"`: the learning-rate range test's bounds and the rule that picks a rate from its curve.

The test (Smith 2015, "Cyclical Learning Rates for Training Neural Networks", sec. 3.3; fastai's `lr_find`)
trains the emitted script for a few optimizer steps on the first batches of the training data, the learning
rate rising geometrically from LOW x the planned rate to HIGH x it, and records the loss of each step. It stops
early when the loss diverges (its smoothed value over DIVERGE x the lowest, or not finite) or its time budget is
spent.
The run is the compiled train.py itself (ftc.runtime.lrrange sets the rates; ftc.cli.lrfind runs it): the model,
method, precision and batch are the plan's. This module is pure: it turns the curve into a rate and a reason.

The pick: a tenth of the rate at which the loss diverged (Smith's reading of the curve: the largest usable rate
is where the loss stops falling and turns up; a tenth of it is safely below), kept within CLAMP of the planned
rate. A sweep that never diverged (stopped by its budget on a slow machine, or every step run) shows only that
the loss would diverge above its last rate: a tenth of that, or the planned rate when it is higher (measured:
`ftc compile` on the loaded development machine ran 5 of 8 steps, 1.4e-4 to 3.6e-3, in the budget; a tenth of
its lowest point would have given 3.6e-4, a quarter of the rule's rate, from a curve that only fell). On a
fine-tuning task the loss falls from learning as much as from the rate, all through the sweep, so the lowest
point (fastai's `minimum` / 10) and the steepest descent (fastai's `steep`) land where batch noise puts them;
both are reported beside the pick, not used. Measured on the bundled SmolLM2, LoRA r8 (the rule's rate 1.4e-3,
the hand-tuned 2e-3), five curves of the quality tasks (dates at 14 and 20 steps; topic, polite, codeword at 14):
divergence / 10 gives 1.7e-3 .. 4.2e-3 over the four tasks (2.5x) and 1.35x between dates' two sweeps; the
lowest point / 10 4.7e-4 .. 1.7e-3 (3.6x; 1.6x on dates); the steepest descent 3.4e-4 .. 1.9e-3 (5.6x; 1.5x);
benchmarks/quality/README.md, "learning_rate = auto".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ftc.core.lrcurve import smoothed

LOW, HIGH = 0.1, 30.0
"""The sweep's bounds, as multiples of the planned rate: a decade under it to where adapters diverge."""
MAX_STEPS = 20
"""Optimizer steps of the sweep at most (fastai uses 100 on a GPU; a CPU compile can afford ~20)."""
MIN_STEPS = 8
"""Fewest steps the sweep is spread over, when the budget would allow fewer (see ftc.runtime.lrrange)."""
BUDGET_S = 60.0
"""Seconds of training steps the test may take (loading the model and the data comes on top)."""
TIMEOUT_S = 300.0
"""Seconds the whole test run may take, start-up included, before it is stopped."""
DIVERGE = 4.0
"""The loss is diverging once its smoothed value exceeds this multiple of the lowest smoothed value (fastai: 4)."""
CLAMP = 4.0
"""The chosen rate stays within the planned rate / CLAMP and x CLAMP."""
FEWEST_POINTS = 4
"""Fewest steps a curve needs to be read."""


@dataclass(frozen=True)
class Sweep:
    """What the runtime callback is told (as FTC_LR_RANGE): the rates and the stopping rules."""

    low: float
    high: float
    steps: int = MAX_STEPS
    min_steps: int = MIN_STEPS
    budget_s: float = BUDGET_S
    diverge: float = DIVERGE

    @classmethod
    def around(cls, planned: float) -> Sweep:
        return cls(low=float(f"{planned * LOW:.3g}"), high=float(f"{planned * HIGH:.3g}"))


@dataclass(frozen=True)
class Curve:
    """The measured curve: (learning rate, training loss) per step, why it stopped, and how long it took."""

    points: tuple[tuple[float, float], ...]
    stopped: str
    """"diverged", "budget" (time spent) or "done" (every step run)."""
    seconds: float
    planned_steps: int
    """Steps the sweep was spread over (MAX_STEPS, fewer when a step is too slow for the budget)."""


@dataclass(frozen=True)
class Pick:
    value: float
    why: str


class RangeTestError(ValueError):
    """The curve cannot be read (diverged at once, too few steps); the message says why and what to do."""


def steepest(lrs: list[float], smooth: list[float]) -> float:
    """The rate where the smoothed loss falls fastest per log-rate step (central differences)."""
    slopes = [(smooth[i + 1] - smooth[i - 1]) / math.log(lrs[i + 1] / lrs[i - 1]) for i in range(1, len(lrs) - 1)]
    return lrs[1 + min(range(len(slopes)), key=slopes.__getitem__)]


def _fmt(x: float) -> str:
    return f"{x:.2g}"


def check_curve(curve: Curve) -> list[tuple[float, float]]:
    """The finite points of the curve; RangeTestError when it cannot be read."""
    points = list(curve.points)
    first = points[0] if points else None
    if first is not None and (not math.isfinite(first[1]) or (len(points) > 1 and (
            not math.isfinite(points[1][1]) or points[1][1] > DIVERGE * first[1]))):
        raise RangeTestError(f"the range test diverged from its first steps (loss {first[1]:.4g} at "
                             f"{_fmt(first[0])}, then {points[1][1] if len(points) > 1 else float('nan'):.4g}): even "
                             "a tenth of the planned rate is unstable; set a float learning_rate well below "
                             f"{_fmt(first[0])}, or look at the data (ftc data) and train.max_grad_norm")
    finite = [p for p in points if math.isfinite(p[1])]
    if len(finite) < FEWEST_POINTS:
        raise RangeTestError(f"the range test ran {len(finite)} step(s) in {curve.seconds:.0f} s (budget "
                             f"{BUDGET_S:.0f} s), fewer than the {FEWEST_POINTS} it needs; this machine is too slow "
                             "for the plan's batch: set a float learning_rate, or a smaller train.batch_size")
    return finite


def pick(curve: Curve, planned: float) -> Pick:
    """The rate the curve suggests, within CLAMP of `planned`, with its reason: a tenth of the rate the loss
    diverged at; without divergence, a tenth of the last rate tried, or `planned` if that is higher."""
    points = check_curve(curve)
    lrs, losses = [p[0] for p in points], [p[1] for p in points]
    smooth = smoothed(losses)
    best = min(range(len(smooth)), key=smooth.__getitem__)
    steep = steepest(lrs, smooth) if len(lrs) >= 3 else lrs[0]
    if curve.stopped == "diverged":
        edge = curve.points[-1][0]  # the step whose loss diverged (kept when it was not finite)
        suggested, how = edge / 10, f"diverged at {_fmt(edge)}: a tenth of it"
    else:  # every rate tried was stable: the last one is a lower bound of where the loss would diverge
        edge = lrs[-1]
        suggested = max(planned, edge / 10)
        how = (f"no divergence up to {_fmt(edge)}: the larger of a tenth of it ({_fmt(edge / 10)}) and the rule's "
               "rate, since the curve shows nothing against the rule")
    value = float(_fmt(min(planned * CLAMP, max(planned / CLAMP, suggested))))
    if value != float(_fmt(suggested)):
        how += f" ({_fmt(suggested)}), held to {_fmt(planned)} {'x' if value > planned else '/'} {CLAMP:g}"
    why = (f"measured: range test (Smith 2015) over {len(points)} of {curve.planned_steps} steps, "
           f"{_fmt(lrs[0])} to {_fmt(curve.points[-1][0])} ({_stopped(curve)}, {curve.seconds:.0f} s, budget "
           f"{BUDGET_S:.0f} s); {how}; smoothed loss {smooth[0]:.3g} -> lowest {smooth[best]:.3g} at "
           f"{_fmt(lrs[best])} (a tenth: {_fmt(lrs[best] / 10)}), steepest descent at {_fmt(steep)}; the rule's "
           f"rate is {_fmt(planned)}")
    return Pick(value, why)


def _stopped(curve: Curve) -> str:
    return {"diverged": f"stopped: loss over {DIVERGE:g}x its lowest", "budget": "stopped: time budget spent",
            "done": "every step run"}.get(curve.stopped, curve.stopped)


def summary(curve: Curve) -> str:
    """The curve, one `rate: loss (smoothed)` per step, for plan.md (a last, non-finite loss shown as is)."""
    finite = [p for p in curve.points if math.isfinite(p[1])]
    cells = [f"{_fmt(lr)}: {loss:.3g} ({s:.3g})" for (lr, loss), s in zip(finite, smoothed([p[1] for p in finite]))]
    cells += [f"{_fmt(lr)}: {loss}" for lr, loss in curve.points[len(finite):]]
    return "learning-rate range test, rate: loss (smoothed): " + ", ".join(cells)
