"""The W&B table of validation predictions that `train.py --log_preds True` logs: image, prediction and truth overlays,
per-image per-class IoU."""
from contextlib import nullcontext

import numpy as np
import torch

from bddseg import config
from bddseg.metrics import confusion, iou_per_class


def prediction_table(model, loader, device, class_names, max_images=36, autocast=nullcontext):
    """W&B Table: file, image, prediction and ground truth (mask overlays) and per-image per-class IoU."""
    import wandb
    labels = {**class_names, config.IGNORE: "ignore"}
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
