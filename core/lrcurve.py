"""The loss smoothing of the learning-rate range test (`learning_rate = "auto"`), shared by the callback that stops
the test on divergence (ftc.runtime.lrrange) and the rule that reads its curve (ftc.compiler.lrrange), so both see
the same curve. An exponential moving average with bias correction, as fastai's `lr_find`."""

from __future__ import annotations

SMOOTHING = 0.6
"""Weight of the past in the average (fastai: 0.98 over 100 steps; 0.6 suits the ~10-20 steps of a CPU compile).
Raw per-batch losses of a fine-tuning task near 0 jump by 10x from batch to batch (0.0046 -> 0.047 measured on
the quality task `topic`), which a raw 4x rule reads as divergence."""


class Smoother:
    """The smoothed loss, one step at a time."""

    def __init__(self, beta: float = SMOOTHING) -> None:
        self.beta, self.average, self.count = beta, 0.0, 0

    def add(self, loss: float) -> float:
        """The smoothed value after `loss` (the first one is the first loss itself)."""
        self.count += 1
        self.average = self.beta * self.average + (1 - self.beta) * loss
        return self.average / (1 - self.beta**self.count)


def smoothed(losses: list[float], beta: float = SMOOTHING) -> list[float]:
    """Every step's smoothed loss."""
    smoother = Smoother(beta)
    return [smoother.add(loss) for loss in losses]
