"""Checks of `[eval] metrics`, `[eval] fail_if_worse` and `[train] report_to`: what each needs (answers to
compare, validation data, its package). A missing package is a spec error naming the extra that installs it."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

from ftc.compiler.spec import Spec
from ftc.core.metrics import GENERATED
METRIC_PACKAGES = {"bleu": "sacrebleu", "chrf": "sacrebleu", "rouge": "rouge_score"}
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb", "trackio": "trackio"}
EXTRAS = {"sacrebleu": "metrics", "rouge_score": "metrics", "tensorboard": "tensorboard", "mlflow": "mlflow",
          "wandb": "wandb", "trackio": "trackio"}


def metrics_of(spec: Spec) -> list[str]:
    """The metrics a run measures: the spec's, or exact match alone when only `compare` is set."""
    return list(spec.eval.metrics) or (["exact_match"] if spec.eval.compare else [])


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _missing(key: str, names: list[str], packages: dict[str, str], what: str) -> Iterator[tuple[str, str]]:
    for name in dict.fromkeys(names):
        package = packages.get(name)
        if package and not installed(package):
            yield key, (f"{what} {name!r} needs the {package} package, which is not installed; "
                        f"install it with pip install 'ftc[{EXTRAS[package]}]' (or remove {name!r})")


def eval_findings(spec: Spec) -> Iterator[tuple[str, str]]:
    """(key, message) for each problem of the evaluation and tracker settings."""
    e, metrics = spec.eval, metrics_of(spec)
    for key, names in (("eval.metrics", e.metrics), ("eval.fail_if_worse", e.fail_if_worse),
                       ("train.report_to", spec.train.report_to)):
        if len(set(names)) < len(names):
            yield key, f"lists a name twice ({', '.join(names)}); list each once"
    generated = [m for m in metrics if m in GENERATED]
    if generated and not e.compare:
        yield "eval.metrics", (f"{', '.join(generated)} score generated answers, but compare = 0; set "
                               "eval.compare to the number of validation examples to answer (e.g. 20)")
    if generated and spec.data.format == "text":
        yield "eval.metrics", (f"{', '.join(generated)} compare answers, which the text format has not; "
                               "keep loss and perplexity only")
    if e.metrics and spec.data.validation == 0:
        yield "eval.metrics", "measures on validation examples, but data.validation = 0; hold some out"
    if unmeasured := [m for m in e.fail_if_worse if m not in metrics]:
        yield "eval.fail_if_worse", (f"{', '.join(unmeasured)} is not measured; add it to eval.metrics "
                                     f"(measured: {', '.join(metrics) or 'none'})")
    yield from _missing("eval.metrics", metrics, METRIC_PACKAGES, "metric")
    yield from _missing("train.report_to", list(spec.train.report_to), TRACKER_PACKAGES, "tracker")
