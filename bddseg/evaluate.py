"""Scoring a model over a split: one pixel confusion matrix, per-image IoUs, and the split's per-class metrics.

Per batch: per-image confusion matrices by bincount on the model's device, then one read back to the host
(predictions for the report). Each image's thumbnails are written on writer threads while the next batch runs; the
worst `report_images` images (by person IoU) are kept and written at full size at the end.
"""
import heapq
import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import precision_recall_fscore_support

from bddseg import config
from bddseg.eval_report import (REPORT_IMAGES, fit_masks, pixel_share, save_full, save_thumbnails, wandb_image,
                                worst_first)
from bddseg.inference import predict
from bddseg.metrics import iou_from_confusion

MAX_PENDING = 32  # images queued for the report writers before the loop waits
WORST_KEY = "person_iou"
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


def image_confusions(pred, target, n_classes: int) -> torch.Tensor:
    """N x C x C int64 confusion matrices (rows target, cols prediction) of N label maps on their device.

    CPU, C <= 15: one uint8 code per pixel, target * C + prediction wrapping at 256, so an IGNORE (255 = -1 mod 256)
    pixel's code is 256 - C + prediction, past the C * C cells; one bincount per image (masks hold only class ids
    and IGNORE: eval_data.read_mask checks). Other devices: one fixed-size index_add for the batch (bincount would
    sync), IGNORE pixels in a spare bin that is dropped."""
    n, cells = len(pred), n_classes * n_classes
    if pred.device.type == "cpu" and cells + n_classes <= 256 and config.IGNORE == 255:
        codes = torch.add(pred, target, alpha=n_classes).reshape(n, -1)
        return torch.stack([torch.bincount(c, minlength=256)[:cells] for c in codes]).reshape(n, n_classes, n_classes)
    image = torch.arange(n, device=pred.device).view(-1, *([1] * (pred.dim() - 1))) * cells
    idx = torch.where(target != config.IGNORE, image + target.long() * n_classes + pred.long(), n * cells).reshape(-1)
    counts = torch.zeros(n * cells + 1, dtype=torch.int64, device=idx.device).index_add_(0, idx, torch.ones_like(idx))
    return counts[:-1].reshape(n, n_classes, n_classes)


def worst_key(row: dict, order: int) -> tuple:
    """Sort key of `eval_report.worst_first`: WORST_KEY ascending, nan last, then input order."""
    v = row.get(WORST_KEY, 0.0)
    return (1, 0.0, order) if math.isnan(v) else (0, v, order)


def keep_worst(heap: list, k: int, key: tuple, make_item):
    """Keep the k smallest keys in `heap` (a max-heap on negated keys) with their items, made only when kept."""
    neg = tuple(-v for v in key)
    if len(heap) < k:
        heapq.heappush(heap, (neg, make_item()))
    elif k and neg > heap[0][0]:
        heapq.heapreplace(heap, (neg, make_item()))


def write_worst(folder, heap: list, images: list, files: list, class_labels: dict) -> tuple:
    """Full-size files and W&B images of the kept worst images: ({file: paths}, {file: wandb.Image})."""
    def one(item):
        i, thumb, mask, pred = item
        return files[i], save_full(folder, Path(files[i]).stem, images[i], mask, pred), \
            wandb_image(thumb, *fit_masks(thumb, mask, pred), class_labels)
    with ThreadPoolExecutor(config.cores()) as pool:
        done = list(pool.map(one, [item for _, item in heap]))
    return {f: p for f, p, _ in done}, {f: w for f, _, w in done}


def evaluate_split(model, loader, meta: dict, device, folder, split: str, tta=False, mixed_precision=True,
                   report_images: int = REPORT_IMAGES):
    """Run the model over the loader's images, report files written into `folder`; (metrics, cm, preds, images).

    preds: one row per image (file, IoUs, report paths), worst person IoU first; images: {file: wandb.Image} of the
    worst `report_images` images, the ones also written at full size.
    """
    names, ds = class_names(meta), loader.dataset
    keys, n_classes = [config.class_key(n) for n in names], len(names)
    class_labels = {**dict(enumerate(names)), config.IGNORE: "ignore"}
    cm = np.zeros((n_classes, n_classes), np.int64)
    loss_sum, rows, jobs, pending, heap = 0.0, [], {}, deque(), []
    with ThreadPoolExecutor(config.cores()) as writer:  # JPEG encoding (GIL released) overlaps the next batch
        for idx, thumbs, target, pred, loss in predict(model, loader, device, tta, mixed_precision):
            cms = image_confusions(pred, target, n_classes).cpu().numpy()
            masks, preds = target.cpu().numpy(), pred.cpu().numpy()
            loss_sum = loss_sum + loss
            for j, i in enumerate(idx):
                file = ds.files[i]
                cm += cms[j]
                rows.append({"file": file, **iou_from_confusion(cms[j], keys)})
                jobs[file] = writer.submit(save_thumbnails, folder, Path(file).stem, thumbs[j], masks[j], preds[j])
                keep_worst(heap, report_images, worst_key(rows[-1], len(rows)),
                           lambda: (i, thumbs[j], masks[j].copy(), preds[j].copy()))  # copies: not the batch
                pending.append(jobs[file])
                if len(pending) > MAX_PENDING:  # bound the memory held by queued images
                    pending.popleft().result()
    full, images = write_worst(folder, heap, ds.images, ds.files, class_labels)
    paths = {f: {**j.result(), **full.get(f, {})} for f, j in jobs.items()}
    preds = worst_first(pd.DataFrame([{**r, **paths[r["file"]]} for r in rows]), key=WORST_KEY)
    return split_metrics(cm, float(loss_sum), keys, split), cm, preds, images
