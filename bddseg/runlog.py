"""The local run record as fastai callbacks: per-epoch metrics lines, best checkpoint, stop on non-finite loss.

Every epoch's line is one JSON object `{"epoch": k, "train_loss", "valid_loss", "miou", "<class>_iou"...,
"pixel_acc", "time", "run_id", "run_dir"}` (k counts completed epochs from 1; time in seconds; nan is written as
NaN, which Python's json reads) written to `<run dir>/metrics.jsonl` and, when the environment variable
SWEEP_METRICS_FILE is set, appended there too (flushed per line; the sweep agent tails it).
"""
import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.callback.fp16 import MixedPrecision
from fastai.callback.wandb import WandbCallback
from fastai.learner import Recorder

import params
import utils

SWEEP_METRICS_ENV = "SWEEP_METRICS_FILE"
RECORD_FILES = ("metrics.jsonl", "config.json", "summary.json")


def save_run_checkpoint(run_dir, model, meta):
    """save_checkpoint into the run folder, atomically, keeping the run-record files that live beside it.

    save_checkpoint replaces the whole folder it is given; so it writes into a temp folder that also receives
    copies of RECORD_FILES, and that folder then replaces run_dir in one rename (Ctrl-C leaves the old one).
    """
    from bddseg.checkpoint import save_checkpoint
    run_dir = Path(run_dir)
    with utils.atomic_dir(run_dir) as tmp:
        save_checkpoint(tmp, model, meta)
        for name in RECORD_FILES:
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, tmp / name)
    return run_dir


class NonFiniteLoss(RuntimeError):
    """Training produced a nan/inf loss; `message` survives fastai's rewrapping of the exception's args."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


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


class StopOnNonFinite(Callback):
    """Raise NonFiniteLoss (before the backward pass) as soon as a training loss is nan or inf."""
    order = MixedPrecision.order + 1  # after autocast has exited (raising inside it would leave it on), before backward

    def after_loss(self):
        if self.training and not torch.isfinite(self.learn.loss_grad.detach()).all():
            lr = self.opt.hypers[-1].get("lr", float("nan")) if self.opt is not None else float("nan")
            raise NonFiniteLoss(f"non-finite training loss ({self.learn.loss_grad.item():g}) at epoch "
                                f"{self.epoch + 1}, batch {self.iter + 1} (lr={lr:.3g}); the run is stopped. "
                                f"Try a lower --lr or --mixed_precision False")


def prediction_table(model, loader, device, class_names, max_images=36, autocast=nullcontext):
    """W&B Table: file, image, prediction and ground truth (mask overlays) and per-image per-class IoU."""
    import wandb

    from bddseg.metrics import confusion, iou_per_class
    labels = {**class_names, params.IGNORE: "ignore"}
    cols = ["File_Name", "Images", "Predictions", "Ground_Truth"] + [f"iou_{n}" for n in class_names.values()]
    table, done = wandb.Table(columns=cols), 0
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            with autocast():
                pred = model(x.to(device)).argmax(1).cpu()
            for img, p, t in zip(x.cpu(), pred, y.cpu()):
                if done >= max_images:
                    return table
                img = (img.permute(1, 2, 0).float().numpy() * 255).astype(np.uint8)
                p, t = p.numpy().astype(np.uint8), t.numpy().astype(np.uint8)
                ious = iou_per_class(confusion(torch.from_numpy(p), torch.from_numpy(t), len(class_names)).numpy())
                table.add_data(loader.names[done], wandb.Image(img),
                               wandb.Image(img, masks={"predictions": {"mask_data": p, "class_labels": labels}}),
                               wandb.Image(img, masks={"ground_truth": {"mask_data": t, "class_labels": labels}}),
                               *[float(v) for v in ious])
                done += 1
    return table
