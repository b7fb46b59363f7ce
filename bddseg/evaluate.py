"""Scoring a model over a split: one pixel confusion matrix, per-image IoUs, and the split's per-class metrics.

Each image's report files are written on a writer thread while the next batch runs (`eval_report.save_prediction`).
"""
import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import precision_recall_fscore_support

from bddseg import config
from bddseg.eval_report import pixel_share, save_prediction, worst_first
from bddseg.inference import predict
from bddseg.metrics import confusion, iou_from_confusion

MAX_PENDING = 16  # images queued for the report writer before the loop waits
STATS = ("iou", "precision", "recall", "f1")


def class_names(meta: dict) -> list:
    """Class names in id order from meta.json's {id: name}."""
    return [name for _, name in sorted((int(k), v) for k, v in meta["classes"].items())]


def precision_recall_f1(cm) -> dict:
    """Per-class pixel precision, recall and F1 by sklearn, fed the confusion matrix as weighted (true, pred) cells.

    Exactly sklearn's numbers over every scored pixel (ignore pixels are not in the matrix), without a second pass
    over the pixels: a per-pixel torchmetrics update cost as much as the model's forward at BDD mask sizes.
    """
    n = len(cm)
    true, pred = np.divmod(np.arange(n * n), n)
    p, r, f1, _ = precision_recall_fscore_support(true, pred, sample_weight=np.asarray(cm).ravel(), labels=range(n),
                                                  zero_division=0)
    return {"precision": p, "recall": r, "f1": f1}


def split_metrics(cm, loss_sum: float, keys: list, split: str) -> dict:
    """`<split>_miou`, `<split>_<class>_iou`, `<split>_pixel_acc`, per-class precision/recall/F1, `<split>_loss`."""
    m = iou_from_confusion(cm, keys, prefix=f"{split}_")
    for name, values in precision_recall_f1(cm).items():
        m.update({f"{split}_{k}_{name}": float(v) for k, v in zip(keys, values)})
    n = int(np.asarray(cm).sum())
    m[f"{split}_loss"] = loss_sum / n if n else math.nan
    return m


def per_class_table(metrics: dict, cm, names: list, split: str) -> pd.DataFrame:
    """One row per class: IoU, precision, recall, F1, true and predicted pixel shares."""
    keys, share = [config.class_key(n) for n in names], pixel_share(cm, names)
    return pd.DataFrame({"class": names, **{s: [metrics[f"{split}_{k}_{s}"] for k in keys] for s in STATS},
                         "true_share": share.true_share, "pred_share": share.pred_share})


def evaluate_split(model, loader, meta: dict, device, folder, split: str, tta=False, mixed_precision=True):
    """Run the model over the loader's images, per-image files written into `folder`; (metrics, cm, preds, images).

    preds: one row per image (file, IoUs, report paths), worst person IoU first; images: {file: wandb.Image}.
    """
    names = class_names(meta)
    keys, n_classes = [config.class_key(n) for n in names], len(names)
    class_labels = {**dict(enumerate(names)), config.IGNORE: "ignore"}
    cm = np.zeros((n_classes, n_classes), np.int64)
    loss_sum, rows, jobs, pending = 0.0, [], {}, deque()
    with ThreadPoolExecutor(1) as writer:  # PNG encoding (GIL released) overlaps the next batch
        for i, thumb, mask, pred, loss in predict(model, loader, device, tta, mixed_precision):
            file = loader.dataset.files[i]
            img_cm = confusion(torch.from_numpy(pred), torch.from_numpy(mask), n_classes).numpy()
            cm += img_cm
            loss_sum += loss
            rows.append({"file": file, **iou_from_confusion(img_cm, keys)})
            jobs[file] = writer.submit(save_prediction, folder, Path(file).stem, thumb, mask, pred, class_labels)
            pending.append(jobs[file])
            if len(pending) > MAX_PENDING:  # bound the memory held by queued images
                pending.popleft().result()
    done = {f: j.result() for f, j in jobs.items()}
    preds = worst_first(pd.DataFrame([{**r, **done[r["file"]][0]} for r in rows]), key="person_iou")
    return split_metrics(cm, loss_sum, keys, split), cm, preds, {f: d[1] for f, d in done.items()}
