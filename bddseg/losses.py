"""Segmentation losses selected by name (`ce`, `wce`, `focal`, `dice_ce`); IGNORE (255) pixels never count.

Class weights (`none`, `root4_inv`, `sqrt_inv`, `inv`: 1/f to the power 0, 1/4, 1/2, 1) come from pixel frequencies
of the training masks and are normalised so that the average pixel weight is 1 (the loss keeps the scale of plain
cross-entropy).
"""
import torch
import torch.nn.functional as F
from torch import nn

from bddseg import config

LOSSES = ("ce", "wce", "focal", "dice_ce")
WEIGHT_POWERS = {"none": 0.0, "root4_inv": 0.25, "sqrt_inv": 0.5, "inv": 1.0}  # weight = (1 / f) ** power
CLASS_WEIGHTS = tuple(WEIGHT_POWERS)


def class_frequencies(masks, n_classes=len(config.BDD_CLASSES), ignore_index=config.IGNORE) -> torch.Tensor:
    """Pixel share of each class in a mask tensor (any shape, uint8 for BDD), ignore pixels excluded.

    One bincount over the masks in their own dtype (no int64 copy, no mask of kept pixels); values >= n_classes,
    `ignore_index` among them, fall in bins that are dropped."""
    counts = torch.bincount(torch.as_tensor(masks).reshape(-1), minlength=n_classes)[:n_classes].double().cpu()
    if 0 <= ignore_index < n_classes:
        counts[ignore_index] = 0
    return counts / counts.sum().clamp(min=1)


def class_weights(freqs, kind="sqrt_inv") -> torch.Tensor:
    """Per-class weights (1/f) ** WEIGHT_POWERS[kind], pixel-weighted mean 1; absent classes get the max."""
    if kind not in CLASS_WEIGHTS:
        raise ValueError(f"class weights {kind!r}: expected one of {CLASS_WEIGHTS}")
    f = torch.as_tensor(freqs, dtype=torch.float64)
    if kind == "none":
        return torch.ones_like(f, dtype=torch.float32)
    present = f > 0
    if not present.any():
        raise ValueError("class weights: the training masks contain no labelled pixels")
    w = torch.zeros_like(f)
    w[present] = f[present] ** -WEIGHT_POWERS[kind]
    w[~present] = w[present].max()
    return (w / (w * f).sum()).float()


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017) over pixels, optional class weights (alpha), mean over non-ignored pixels."""

    def __init__(self, weight=None, gamma=2.0, ignore_index=config.IGNORE):
        super().__init__()
        self.register_buffer("weight", weight)
        self.gamma, self.ignore_index = gamma, ignore_index

    def forward(self, logits, target):
        ce = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index, reduction="none")
        focal = (1 - torch.exp(-ce)) ** self.gamma * ce
        keep = target != self.ignore_index
        w = keep.float() if self.weight is None else self.weight[target.clamp(max=len(self.weight) - 1)] * keep
        return (focal * w).sum() / w.sum().clamp(min=1e-8)


class DiceCELoss(nn.Module):
    """Cross-entropy plus soft multi-class Dice (1 - mean class Dice over the batch), ignore pixels masked out."""

    def __init__(self, weight=None, ignore_index=config.IGNORE, smooth=1.0):
        super().__init__()
        self.ce = nn.CrossEntropyLoss(weight=weight, ignore_index=ignore_index)
        self.register_buffer("weight", weight)
        self.ignore_index, self.smooth = ignore_index, smooth

    def forward(self, logits, target):
        logits = logits.float()
        keep = (target != self.ignore_index).unsqueeze(1)
        probs = logits.softmax(1) * keep
        onehot = F.one_hot(target.masked_fill(~keep[:, 0], 0), logits.shape[1]).permute(0, 3, 1, 2) * keep
        dims = (0, 2, 3)
        inter, total = (probs * onehot).sum(dims), probs.sum(dims) + onehot.sum(dims)
        dice = (2 * inter + self.smooth) / (total + self.smooth)
        w = torch.ones_like(dice) if self.weight is None else self.weight
        return self.ce(logits, target) + 1 - (dice * w).sum() / w.sum()


def get_loss(name="ce", weights=None) -> nn.Module:
    """The loss called `name`; `weights` (C,) or None; `wce` without weights is an error (pass sqrt_inv)."""
    if name not in LOSSES:
        raise ValueError(f"loss {name!r}: expected one of {LOSSES}")
    if name in ("ce", "wce"):
        if name == "wce" and weights is None:
            raise ValueError("loss 'wce' needs class weights")
        return nn.CrossEntropyLoss(weight=weights, ignore_index=config.IGNORE)
    if name == "focal":
        return FocalLoss(weight=weights)
    return DiceCELoss(weight=weights)


def loss_from_config(loss="ce", class_weights_kind="none", train_masks=None):
    """(loss module, weights list or None) for the CLI choices; weights from the train masks' pixel frequencies."""
    kind = "sqrt_inv" if loss == "wce" and class_weights_kind == "none" else class_weights_kind
    weights = None if kind == "none" else class_weights(class_frequencies(train_masks), kind)
    return get_loss(loss, weights), (None if weights is None else [round(float(w), 6) for w in weights])
