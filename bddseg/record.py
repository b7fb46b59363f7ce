"""What a training run records each epoch, as fastai callbacks: metrics lines, best checkpoint, W&B metrics.

Every epoch's line is one JSON object `{"epoch": k, "train_loss", "valid_loss", "miou", "<class>_iou"...,
"pixel_acc", "time", "run_id", "run_dir"}` (k counts completed epochs from 1; time in seconds; nan is written as
NaN, which Python's json reads) written to `<run dir>/metrics.jsonl` and, when the environment variable
SWEEP_METRICS_FILE is set, appended there too (flushed per line; the sweep agent tails it).
"""
import json
import math
import os
import time
from pathlib import Path

import numpy as np
from fastai.callback.core import Callback
from fastai.callback.wandb import WandbCallback
from fastai.learner import Recorder

SWEEP_METRICS_ENV = "SWEEP_METRICS_FILE"


def _num(v):
    """Plain float for JSON (tensors, numpy scalars); nan stays nan."""
    return float(v.item() if hasattr(v, "item") else v)


def epoch_metrics(learn) -> dict:
    """The Recorder's numbers for the epoch just finished, by name (no 'epoch'/'time')."""
    names = learn.recorder.metric_names[1:-1] if learn.recorder.add_time else learn.recorder.metric_names[1:]
    return {n: _num(v) for n, v in zip(names, learn.recorder.log[1:]) if v is not None}


def append_line(path, row):
    """Append one JSON line and flush it to disk (readers may tail the file)."""
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


class WandbMetrics(WandbCallback):
    """fastai's WandbCallback (per-step loss/lr, per-epoch metrics by Recorder name) without its config dump.

    The dump (`learn.gather_args` -> `_format_config`) raises TypeError on plain values with fastcore >= 2.2.21
    (fastai issue #4173); train.py puts every value the run used into wandb.config itself.
    """

    def __init__(self):
        super().__init__(log_preds=False, log_model=False)

    def before_fit(self):
        self.learn.gather_args = dict  # instance attribute shadows the patched Learner.gather_args
        super().before_fit()


class MetricsLog(Callback):
    """Write each epoch's metrics as a JSON line to `file` and to $SWEEP_METRICS_FILE when set."""
    order = Recorder.order + 3  # after BestCheckpoint: a line's checkpoint exists, its time includes the save

    def __init__(self, file, extra=None, echo=False):  # attributes named unlike the args (WandbCallback reads those)
        self.jsonl, self.additional, self.print_lines, self.rows = Path(file), extra or {}, echo, []

    def before_epoch(self):
        self.t0 = time.perf_counter()

    def after_epoch(self):
        row = {"epoch": self.epoch + 1, **epoch_metrics(self.learn),
               "time": round(time.perf_counter() - self.t0, 3), **self.additional}
        self.rows.append(row)
        append_line(self.jsonl, row)
        if os.environ.get(SWEEP_METRICS_ENV):
            append_line(os.environ[SWEEP_METRICS_ENV], row)
        if self.print_lines:
            print(f"epoch {row['epoch']}: " + " ".join(f"{k} {v:.4f}" for k, v in row.items()
                                                       if isinstance(v, float)), flush=True)


class BestCheckpoint(Callback):
    """Save the model with `save` (atomic) whenever `monitor` improves; nan counts as worst."""
    order = Recorder.order + 2

    def __init__(self, save, monitor="miou"):
        self.save, self.monitor = save, monitor
        self.best, self.best_epoch, self.best_metrics = -math.inf, None, None

    def after_epoch(self):
        metrics = epoch_metrics(self.learn)
        value = metrics.get(self.monitor, float("nan"))
        if np.isfinite(value) and value > self.best:
            self.best, self.best_epoch, self.best_metrics = value, self.epoch + 1, metrics
            self.save(self.learn.model, metrics, self.epoch + 1)
