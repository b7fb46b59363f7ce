"""Training data in memory: decode + resize every image ONCE, then cut batches from uint8 tensors.

`load_split` reads one stage of a processed dataset folder into uint8 tensors (images N x 3 x H x W resized with
PIL's antialiased bilinear filter, masks N x H x W nearest). `TensorLoader` yields float [0,1] image batches and
long mask batches on the target device; `Augment` works on whole batches there (random flip, zoom/crop, brightness,
contrast, optional colour jitter) with one `grid_sample` per tensor. `get_dls` wraps both splits as fastai
`DataLoaders`.

Rare classes (people are small): `out_size` smaller than the stored size trains on random crops of larger stored
frames, `focus` centres that share of the crops on a random pixel of a rare class (`focus_points`), and `weights`
draws images with replacement by weight (`rare_weights`: images with a rare class `k` times as often).

Memory: each split is ONE preallocated uint8 tensor filled in place (`frame_bytes` per frame, images + masks);
`check_memory` refuses a dataset that would not fit in RAM before decoding anything. On CUDA both splits stay on
the GPU when they fit (`data_placement`), else in pinned CPU memory; batches, augmentation and focus crops run on the
data's device without a host sync per step.
"""
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import reduce
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from fastai.data.core import DataLoaders
from PIL import Image

from bddseg import config, layout
from bddseg.cli import UserError

DATA_MEMORY_SHARE = 0.75  # of available RAM for the decoded splits; the rest for the model, activations, decoding
GPU_DATA_SHARE = 0.5  # of free GPU memory the splits may take on CUDA; the rest for the model and activations
MAX_ZOOM = 1.25  # augmentation zooms in by a factor drawn uniformly from 1..MAX_ZOOM (train.py --max_zoom)
LOG2_GAMMA = 2.0  # --color_jitter j: gamma between 2**(-LOG2_GAMMA*j) and 2**(LOG2_GAMMA*j)
SATURATION = 2.0  # --color_jitter j: saturation scaled by 1 +- SATURATION*j (channel gains: 1 +- j)
MAX_COLOR_JITTER = 1 / SATURATION  # above it, the saturation factor can turn negative (colours inverted about grey)


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
    """(images N x 3 x H x W uint8, masks N x H x W uint8, file names) of one stage, decoded with `threads` threads.

    Each pair is written into one preallocated tensor per split: the peak is the data plus one pair per thread."""
    df = layout.read_split(root, stage)
    if df.empty:
        raise UserError(f"{Path(root) / layout.SPLIT_CSV}: no rows with Stage == {stage!r}")
    images = torch.empty((len(df), 3, *size), dtype=torch.uint8)
    masks = torch.empty((len(df), *size), dtype=torch.uint8)
    config.reuse_image_memory()

    def fill(i):
        img, mask = load_pair(df.image.iloc[i], df.label.iloc[i], size)
        np.copyto(images[i].permute(1, 2, 0).numpy(), img)  # straight into the split's tensor
        np.copyto(masks[i].numpy(), mask)

    with ThreadPoolExecutor(threads or torch.get_num_threads()) as pool:
        list(pool.map(fill, range(len(df))))
    present = torch.bincount(masks.reshape(-1), minlength=256).nonzero()[:, 0].tolist()  # no sort, no int64 copy
    bad = set(present) - set(config.BDD_CLASSES) - {config.IGNORE}
    if bad:
        raise UserError(f"{root}: {stage} masks contain values {sorted(bad)} outside the classes "
                        f"{sorted(config.BDD_CLASSES)} and {config.IGNORE}")
    return images, masks, list(df.File_Name)


# ------------------------------------------------------------------ memory
def frame_bytes(size) -> int:
    """Bytes one frame takes in memory at size=(h, w): uint8 image (3 x h x w) + uint8 mask (h x w)."""
    h, w = size
    return 4 * h * w


def available_memory() -> int:
    """Bytes of RAM this process can still take: MemAvailable of /proc/meminfo, else free pages (os.sysconf)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(n_frames, size, available=None):
    """UserError, before any decoding, when n_frames at size=(h, w) would take over DATA_MEMORY_SHARE of free RAM;
    it gives the bytes needed and the largest img_size (frame height, same aspect) that fits."""
    available = available_memory() if available is None else available
    budget, (h, w) = int(available * DATA_MEMORY_SHARE), size
    needed = n_frames * frame_bytes(size)
    if needed <= budget:
        return
    at = lambda k: (k, int(round(k * w / h / 2)) * 2)  # noqa: E731  (frame of height k, same aspect, even width)
    fits = next((k for k in range(h - 1, 0, -1) if n_frames * frame_bytes(at(k)) <= budget), 0)
    raise UserError(f"{n_frames} frames at {h}x{w} need {needed:,} bytes of memory ({frame_bytes(size):,} per "
                    f"frame), over {DATA_MEMORY_SHARE:.0%} of the {available:,} bytes available; the largest "
                    f"img_size that fits is {fits}" + ("" if fits else " (none: use fewer frames or more memory)"))


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
def to_device(t, device):
    """A small CPU tensor on `device` without a host sync (pinned, asynchronous copy on CUDA)."""
    device = torch.device(device)
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t.to(device)


def is_rare(masks, classes=config.RARE_CLASSES):
    """Boolean tensor: pixel is one of `classes` (elementwise compares: no index tensor to copy to the device)."""
    return reduce(torch.logical_or, (masks == c for c in classes))


def focus_points(masks, classes=config.RARE_CLASSES, generator=None):
    """N x 2 crop centres (x, y in [-1, 1]): a random pixel of one of `classes` per mask, nan where there is none.

    Vectorised on the masks' device (no host sync): the argmax of random scores kept only on rare-class pixels;
    `generator` is used when it is on that device (else the device's default generator)."""
    n, h, w = masks.shape
    hit = is_rare(masks, classes).reshape(n, -1)
    gen = generator if generator is not None and generator.device == masks.device else None
    k = torch.rand(hit.shape, generator=gen, device=masks.device).masked_fill_(~hit, -1).argmax(1)
    xy = torch.stack([(k % w + 0.5) / w, (k // w + 0.5) / h], 1) * 2 - 1
    return torch.where(hit.any(1, keepdim=True), xy, float("nan"))


def rare_weights(masks, k, classes=config.RARE_CLASSES) -> torch.Tensor:
    """Sampling weight per image: k for images containing one of `classes`, 1 for the others (in chunks of 64
    images: the boolean temporaries stay small next to the split)."""
    has = torch.cat([is_rare(m, classes).flatten(1).any(1) for m in masks.split(64)])
    return 1 + (float(k) - 1) * has.double()


class Augment:
    """Random flip, zoom-in + crop (to `out_size`), colour, brightness and contrast on a whole batch (float x, int y).

    `focus`: the share of crops centred on a rare-class pixel (as far as the frame edge allows; see focus_points).
    `color_jitter` (0 = off): per image a gamma, a gain per channel and a saturation (see `jitter_color`): light and
    white balance other than the training drives' (dusk, street lamps).
    The random numbers are drawn on the CPU (`generator`), copied once per batch; the rest runs on x's device.
    """

    def __init__(self, flip=True, max_zoom=MAX_ZOOM, brightness=0.15, contrast=0.2, focus=0.0, color_jitter=0.0):
        self.flip, self.max_zoom, self.brightness, self.contrast = flip, max_zoom, brightness, contrast
        self.focus, self.color_jitter = focus, color_jitter

    def __call__(self, x, y, out_size=None, generator=None):
        n, _, h, w = x.shape
        oh, ow = out_size or (h, w)
        r = to_device(torch.rand(n, 7, generator=generator), x.device)  # all random numbers in one call
        zoom = 1 + (self.max_zoom - 1) * r[:, 0]
        half = torch.stack([ow / w / zoom, oh / h / zoom], 1)  # half-extent of the crop in [-1, 1] coordinates
        centre = (2 * r[:, 2:4] - 1) * (1 - half)  # uniform over the positions that keep the crop inside the frame
        if self.focus > 0:
            pts = focus_points(y, generator=generator)
            centre = torch.where(((r[:, 6] < self.focus) & ~pts[:, 0].isnan())[:, None], pts, centre)
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0] = torch.where(r[:, 1] < 0.5, -half[:, 0], half[:, 0]) if self.flip else half[:, 0]
        theta[:, 1, 1] = half[:, 1]
        theta[:, :, 2] = torch.maximum(torch.minimum(centre, 1 - half), half - 1)
        grid = F.affine_grid(theta, (n, 1, oh, ow), align_corners=False)
        x = F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)
        y = F.grid_sample(y[:, None].float(), grid, mode="nearest", align_corners=False)[:, 0].to(torch.uint8)
        if self.color_jitter > 0:  # its own draw, after the others: the stream without jitter is unchanged
            x = jitter_color(x, self.color_jitter, to_device(torch.rand(n, 5, generator=generator), x.device))
        c = (1 + self.contrast * (2 * r[:, 4] - 1))[:, None, None, None]
        b = (self.brightness * (2 * r[:, 5] - 1))[:, None, None, None]
        mean = x.mean((1, 2, 3), keepdim=True)
        return ((x - mean) * c + mean + b).clamp_(0, 1), y


def jitter_color(x, j, r):
    """Per-image gamma, channel gains and saturation of x (N x 3 x H x W in [0, 1]) at strength j, from r (N x 5).

    With u = 2r - 1 (uniform in [-1, 1]): x ** 2 ** (LOG2_GAMMA * j * u0), times 1 + j * u1..u3 per channel, then the
    distance to the grey value (the channels' mean) times 1 + SATURATION * j * u4; clipped to [0, 1]."""
    u = (2 * r - 1)[:, :, None, None]  # N x 5 x 1 x 1
    x = x ** torch.exp2(LOG2_GAMMA * j * u[:, :1])  # x >= 0: grid_sample's bilinear mix of [0, 1] values
    x = x * (1 + j * u[:, 1:4])
    grey = x.mean(1, keepdim=True)
    return (grey + (x - grey) * (1 + SATURATION * j * u[:, 4:5])).clamp_(0, 1)


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

    def gather(self, t, idx):
        """Rows `idx` of `t` on self.device: indexed there, or gathered in pinned memory and copied asynchronously."""
        if t.device.type == self.device.type:  # (cuda:0 data for a loader told "cuda": no copy)
            return t[idx]
        if t.is_pinned():
            out = torch.empty((len(idx), *t.shape[1:]), dtype=t.dtype, pin_memory=True)
            return torch.index_select(t, 0, idx, out=out).to(self.device, non_blocking=True)
        return t[idx].to(self.device)

    def __iter__(self):
        order = self.order()
        order = order if self.images.device.type == "cpu" else to_device(order, self.images.device)
        for i in range(len(self)):
            idx = order[i * self.bs:(i + 1) * self.bs]
            x = self.gather(self.images, idx).float().div_(255)
            y = self.gather(self.masks, idx)
            if self.augment is not None:
                x, y = self.augment(x, y, self.out_size, self.generator)
            yield x.contiguous(memory_format=self.memory_format), y.long()

    def one_batch(self):
        """The first batch (fastai's API)."""
        return next(iter(self))


def data_placement(nbytes, device) -> str:
    """Where decoded splits of `nbytes` live: 'cuda' when they fit in GPU_DATA_SHARE of the GPU's free memory,
    'pinned' (CPU memory the GPU copies from asynchronously) when they do not, 'cpu' for any other device."""
    device = torch.device(device)
    if device.type != "cuda":
        return "cpu"
    free, _ = torch.cuda.mem_get_info(device)
    return "cuda" if nbytes <= free * GPU_DATA_SHARE else "pinned"


def place(tensors, device) -> list:
    """`tensors` where `data_placement` puts them; a one-line note when they stay in pinned CPU memory."""
    nbytes = sum(t.nbytes for t in tensors)
    where = data_placement(nbytes, device)
    if where == "cuda":
        return [t.to(device) for t in tensors]
    if where == "pinned":
        pin = nbytes <= available_memory() * DATA_MEMORY_SHARE  # pinning copies: a second copy has to fit first
        print(f"note: the decoded data ({nbytes / 2**30:.2f} GiB) is over {GPU_DATA_SHARE:.0%} of the GPU's free "
              f"memory: kept in {'pinned' if pin else 'ordinary (too large to pin a copy)'} CPU memory, copied per "
              f"batch", file=sys.stderr)
        return [t.pin_memory() if pin else t for t in tensors]
    return list(tensors)


def get_dls(root, size, bs, augment=True, device="cpu", threads=0, seed=42, out_size=None, focus=0.0,
            oversample=1.0, channels_last=False, max_zoom=MAX_ZOOM, color_jitter=0.0):
    """fastai DataLoaders (train: shuffled, augmented, drop_last; valid: in order) from a processed dataset folder.

    out_size: train on random crops of that (h, w) from frames stored at `size`; focus: share of those crops centred
    on a rare-class pixel; oversample: images with a rare class are drawn that many times as often (1 = shuffle);
    max_zoom: augmented frames are zoomed in by a factor drawn uniformly from 1..max_zoom; color_jitter: the strength of
    their gamma, channel gains and saturation (`jitter_color`; 0 = off).
    On CUDA the uint8 splits are kept on the GPU when they fit (see `data_placement`).
    """
    check_dataset(root)
    check_memory(sum(len(layout.read_split(root, s)) for s in ("train", "valid")), size)
    train_x, train_y, train_names = load_split(root, "train", size, threads)
    valid_x, valid_y, valid_names = load_split(root, "valid", size, threads)
    weights = rare_weights(train_y, oversample) if oversample != 1 else None
    train_x, train_y, valid_x, valid_y = place([train_x, train_y, valid_x, valid_y], device)
    aug = (Augment(max_zoom=max_zoom, focus=focus, color_jitter=color_jitter) if augment
           else Augment(False, 1.0, 0, 0, focus) if out_size or focus else None)
    train = TensorLoader(train_x, train_y, bs, shuffle=True, drop_last=True, augment=aug, out_size=out_size,
                         weights=weights, names=train_names, seed=seed, channels_last=channels_last)
    valid = TensorLoader(valid_x, valid_y, bs, names=valid_names, channels_last=channels_last)
    return DataLoaders(train, valid, path=root, device=torch.device(device))
