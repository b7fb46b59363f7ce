"""Training data in memory: decode + resize every image ONCE, then cut batches from uint8 tensors.

`load_split` reads one stage of a processed dataset folder into uint8 tensors (images N x 3 x H x W resized with
PIL's antialiased bilinear filter, masks N x H x W nearest). `TensorLoader` yields float [0,1] image batches and
long mask batches on the target device; `Augment` works on whole batches there (random flip, zoom/crop, brightness,
contrast) with one `grid_sample` per tensor. `get_dls` wraps both splits as fastai `DataLoaders`.

Rare classes (people are small): `out_size` smaller than the stored size trains on random crops of larger stored
frames, `focus` centres that share of the crops on a random pixel of a rare class (`focus_points`), and `weights`
draws images with replacement by weight (`rare_weights`: images with a rare class `k` times as often).
"""
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from fastai.data.core import DataLoaders
from PIL import Image

from bddseg import config, layout
from bddseg.cli import UserError


# ------------------------------------------------------------------ decode once
def load_pair(image_file, label_file, size):
    """(image uint8 H x W x 3, mask uint8 H x W) of one pair resized to size=(h, w); UserError names a bad file."""
    h, w = size
    try:
        with Image.open(image_file) as im:
            full = im.size
            im.draft("RGB", (w, h))  # JPEG: decode at a reduced DCT scale that is still >= the target size
            img = np.asarray(im.convert("RGB").resize((w, h), Image.BILINEAR))
    except (OSError, ValueError) as e:
        raise UserError(f"{image_file}: unreadable image ({e})") from None
    try:
        with Image.open(label_file) as m:
            if m.size != full:
                raise UserError(f"{label_file}: mask size {m.size} differs from its image {full}")
            if m.mode not in ("L", "P"):
                raise UserError(f"{label_file}: mask mode {m.mode!r}, expected single-channel class ids (L or P)")
            mask = np.asarray(m.resize((w, h), Image.NEAREST))
    except FileNotFoundError:
        raise UserError(f"{label_file}: mask missing for {image_file}") from None
    except OSError as e:
        raise UserError(f"{label_file}: unreadable mask ({e})") from None
    return img, mask


def load_split(root, stage, size, threads=0):
    """(images N x 3 x H x W uint8, masks N x H x W uint8, file names) of one stage, decoded with `threads` threads."""
    df = layout.read_split(root, stage)
    if df.empty:
        raise UserError(f"{Path(root) / layout.SPLIT_CSV}: no rows with Stage == {stage!r}")
    threads = threads or torch.get_num_threads()
    with ThreadPoolExecutor(threads) as pool:
        pairs = list(pool.map(lambda r: load_pair(r[0], r[1], size), zip(df.image, df.label)))
    images = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).contiguous()
    masks = torch.from_numpy(np.stack([p[1] for p in pairs]))
    bad = set(torch.unique(masks).tolist()) - set(config.BDD_CLASSES) - {config.IGNORE}
    if bad:
        raise UserError(f"{root}: {stage} masks contain values {sorted(bad)} outside the classes "
                        f"{sorted(config.BDD_CLASSES)} and {config.IGNORE}")
    return images, masks, list(df.File_Name)


def check_dataset(root):
    """UserError when a processed dataset folder is not usable (missing split, files changed since the manifest)."""
    root = Path(root)
    if not (root / layout.SPLIT_CSV).exists():
        raise UserError(f"{root}: no {layout.SPLIT_CSV} (not a processed dataset folder; run data/prepare.py)")
    problems = layout.check_manifest(root)
    if problems and problems[0].endswith("missing (not a dataset folder made by data/prepare.py?)"):
        print(f"warning: {problems[0]}; files cannot be checked", file=sys.stderr)
    elif problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise UserError(f"dataset {root} does not match its manifest: " + "; ".join(problems[:5]) + more)


# ------------------------------------------------------------------ batched augmentation
def focus_points(masks, classes=config.RARE_CLASSES, generator=None):
    """N x 2 crop centres (x, y in [-1, 1]): a random pixel of one of `classes` per mask, nan where there is none."""
    n, h, w = masks.shape
    out = torch.full((n, 2), float("nan"))
    hit = torch.isin(masks, torch.tensor(classes, dtype=masks.dtype))
    for i in range(n):
        where = hit[i].flatten().nonzero()[:, 0]
        if len(where):
            k = where[torch.randint(len(where), (1,), generator=generator)].item()
            out[i, 0], out[i, 1] = (k % w + 0.5) / w * 2 - 1, (k // w + 0.5) / h * 2 - 1
    return out


def rare_weights(masks, k, classes=config.RARE_CLASSES) -> torch.Tensor:
    """Sampling weight per image: k for images containing one of `classes`, 1 for the others."""
    has = torch.isin(masks, torch.tensor(classes, dtype=masks.dtype)).flatten(1).any(1)
    return 1 + (float(k) - 1) * has.double()


class Augment:
    """Random flip, zoom-in + crop (to `out_size`), brightness and contrast on a whole batch (float x, int y).

    `focus`: the share of crops centred on a rare-class pixel (as far as the frame edge allows; see focus_points).
    """

    def __init__(self, flip=True, max_zoom=1.25, brightness=0.15, contrast=0.2, focus=0.0):
        self.flip, self.max_zoom, self.brightness, self.contrast = flip, max_zoom, brightness, contrast
        self.focus = focus

    def __call__(self, x, y, out_size=None, generator=None):
        n, _, h, w = x.shape
        oh, ow = out_size or (h, w)
        r = torch.rand(n, 7, generator=generator)  # all random numbers drawn on the CPU, one call
        zoom = 1 + (self.max_zoom - 1) * r[:, 0]
        sx, sy = ow / w / zoom, oh / h / zoom  # half-extent of the crop in [-1, 1] coordinates
        centre = 2 * r[:, 2:4] - 1  # uniform over the positions that keep the crop inside the frame
        if self.focus > 0:
            pts = focus_points(y.cpu(), generator=generator)
            use = (r[:, 6] < self.focus) & ~pts[:, 0].isnan()
            centre[use] = pts[use]
            centre[~use] *= torch.stack([1 - sx, 1 - sy], 1)[~use]
        else:
            centre *= torch.stack([1 - sx, 1 - sy], 1)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = torch.where(r[:, 1] < 0.5, -sx, sx) if self.flip else sx
        theta[:, 1, 1] = sy
        theta[:, 0, 2] = torch.maximum(torch.minimum(centre[:, 0], 1 - sx), sx - 1)
        theta[:, 1, 2] = torch.maximum(torch.minimum(centre[:, 1], 1 - sy), sy - 1)
        grid = F.affine_grid(theta.to(x.device), (n, 1, oh, ow), align_corners=False)
        x = F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)
        y = F.grid_sample(y[:, None].float(), grid, mode="nearest", align_corners=False)[:, 0].to(torch.uint8)
        c = (1 + self.contrast * (2 * r[:, 4] - 1)).to(x.device)[:, None, None, None]
        b = (self.brightness * (2 * r[:, 5] - 1)).to(x.device)[:, None, None, None]
        mean = x.mean((1, 2, 3), keepdim=True)
        return ((x - mean) * c + mean + b).clamp_(0, 1), y


# ------------------------------------------------------------------ batches from memory
class TensorLoader:
    """Iterable of (x float N x 3 x H x W in [0,1], y long N x H x W) batches cut from in-memory uint8 tensors."""

    def __init__(self, images, masks, bs, shuffle=False, drop_last=False, augment=None, out_size=None,
                 weights=None, names=None, seed=None, device="cpu", channels_last=False):
        self.images, self.masks, self.bs = images, masks, bs
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.shuffle, self.drop_last, self.augment, self.out_size = shuffle, drop_last, augment, out_size
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.names = names or [str(i) for i in range(len(images))]
        self.generator = torch.Generator().manual_seed(0 if seed is None else seed)
        self.device = torch.device(device)
        self.n_inp = 1

    @property
    def n(self):
        return len(self.images)

    @property
    def dataset(self):
        return self.names

    def __len__(self):
        return max(1, self.n // self.bs) if self.drop_last else math.ceil(self.n / self.bs)

    def to(self, device):
        """Deliver batches on `device` (fastai's DataLoaders call this)."""
        self.device = torch.device(device)
        return self

    def order(self):
        """Image indices for one epoch: weighted draw, shuffled, or in order."""
        if self.weights is not None:
            return torch.multinomial(self.weights, self.n, replacement=True, generator=self.generator)
        return torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)

    def __iter__(self):
        order = self.order()
        for i in range(len(self)):
            idx = order[i * self.bs:(i + 1) * self.bs]
            x = self.images[idx].to(self.device, non_blocking=True).float().div_(255)
            y = self.masks[idx].to(self.device, non_blocking=True)
            if self.augment is not None:
                x, y = self.augment(x, y, self.out_size, self.generator)
            yield x.contiguous(memory_format=self.memory_format), y.long()

    def one_batch(self):
        """The first batch (fastai's API)."""
        return next(iter(self))


def get_dls(root, size, bs, augment=True, device="cpu", threads=0, seed=42, out_size=None, focus=0.0,
            oversample=1.0, channels_last=False):
    """fastai DataLoaders (train: shuffled, augmented, drop_last; valid: in order) from a processed dataset folder.

    out_size: train on random crops of that (h, w) from frames stored at `size`; focus: share of those crops centred
    on a rare-class pixel; oversample: images with a rare class are drawn that many times as often (1 = shuffle).
    """
    check_dataset(root)
    train_x, train_y, train_names = load_split(root, "train", size, threads)
    valid_x, valid_y, valid_names = load_split(root, "valid", size, threads)
    aug = Augment(focus=focus) if augment else Augment(False, 1.0, 0, 0, focus) if out_size or focus else None
    weights = rare_weights(train_y, oversample) if oversample != 1 else None
    train = TensorLoader(train_x, train_y, bs, shuffle=True, drop_last=True, augment=aug, out_size=out_size,
                         weights=weights, names=train_names, seed=seed, channels_last=channels_last)
    valid = TensorLoader(valid_x, valid_y, bs, names=valid_names, channels_last=channels_last)
    return DataLoaders(train, valid, path=root, device=torch.device(device))
