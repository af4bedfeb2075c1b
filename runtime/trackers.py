"""`[train] report_to`: where the experiment trackers the Trainer logs to (TrainingArguments.report_to) write. Each
one writes under RUN_DIR unless its own environment variable already says otherwise, so a run keeps its logs with
it and nothing is sent anywhere a user did not set up:

  tensorboard  TENSORBOARD_LOGGING_DIR = RUN_DIR/tensorboard (event files; `tensorboard --logdir RUN_DIR/tensorboard`)
  mlflow       MLFLOW_TRACKING_URI = file:RUN_DIR/mlruns (a local file store), experiment = the run's name; with a
               file: URI, MLFLOW_ALLOW_FILE_STORE = true (MLflow 3 refuses its file store without it)
  wandb        WANDB_DIR = RUN_DIR (online needs `wandb login`; WANDB_MODE=offline writes RUN_DIR/wandb only)
  trackio      TRACKIO_DIR = RUN_DIR/trackio (a local database; `trackio show` reads it), project = the run's name
"""

from __future__ import annotations

import os
from pathlib import Path


def tracker_env(run_dir: str | Path, report_to: list[str], name: str) -> dict[str, str]:
    """Set the defaults above for the trackers in `report_to`; the variables as they now are."""
    run = Path(run_dir).resolve()
    defaults = {"tensorboard": {"TENSORBOARD_LOGGING_DIR": str(run / "tensorboard")},
                "mlflow": {"MLFLOW_TRACKING_URI": f"file:{run / 'mlruns'}", "MLFLOW_EXPERIMENT_NAME": name},
                "wandb": {"WANDB_DIR": str(run), "WANDB_PROJECT": name},
                "trackio": {"TRACKIO_DIR": str(run / "trackio")}}
    chosen: dict[str, str] = {}
    for tracker in report_to:
        for key, value in defaults.get(tracker, {}).items():
            chosen[key] = os.environ.setdefault(key, value)
    if "mlflow" in report_to and os.environ["MLFLOW_TRACKING_URI"].startswith("file:"):
        chosen["MLFLOW_ALLOW_FILE_STORE"] = os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return chosen
