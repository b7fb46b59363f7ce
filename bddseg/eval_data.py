"""The images an evaluation scores: the split's rows of a dataset folder whose classes are the model's, and a loader.

Inputs are resized to the model's input size exactly as in training (`loaders.load_pair`: JPEG draft decode, then
bilinear); masks stay at their own resolution, where the metrics are computed. Each image and mask is decoded once:
the report thumbnail comes from the same decoded image. Bad files fail as one UserError naming the file.
"""
import sys
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, get_worker_info

from bddseg import config, layout, loaders
from bddseg.checkpoint import META
from bddseg.cli import UserError
from bddseg.eval_report import THUMB_WIDTH, thumbnail_size

SPLITS = ("test", "valid", "all")  # 'all' = every labelled image of the dataset


def data_ref(meta: dict, data=None):
    """The dataset to evaluate on: `data`, else the training folder if it still exists, else the dataset name."""
    if data:
        return data
    for path in (meta.get("data_path"), (meta.get("config") or {}).get("data")):
        if path and Path(path).is_dir():
            return path
    return meta.get("dataset")


def check_classes(root, meta: dict, model_dir):
    """Refuse a dataset whose classes (manifest.json) differ from the model's (meta.json)."""
    path = Path(root) / layout.MANIFEST
    if not path.exists():
        print(f"warning: {path} missing: the dataset's classes cannot be checked against the model's",
              file=sys.stderr)
        return
    data = {str(k): v for k, v in layout.read_manifest(root).get("classes", {}).items()}
    model = {str(k): v for k, v in meta["classes"].items()}
    if data != model:
        raise UserError(f"{path}: the dataset's classes {data} differ from the model's {model} "
                        f"({Path(model_dir) / META}); evaluate it with a model trained on these classes")


def labelled_images(root) -> pd.DataFrame:
    """Every image of a dataset folder that has a mask (for split 'all' on a folder without data_split.csv)."""
    files = sorted(p.name for p in (Path(root) / layout.IMAGES).glob("*") if layout.label_path(root, p.name).exists())
    return pd.DataFrame({"File_Name": files, "Stage": "all",
                         "image": [str(layout.image_path(root, f)) for f in files],
                         "label": [str(layout.label_path(root, f)) for f in files]})


def split_rows(root, split: str, meta: dict, model_dir) -> pd.DataFrame:
    """Rows (File_Name, image, label) of `split` in a dataset folder, after checking the folder and its classes."""
    root = Path(root)
    has_split = (root / layout.SPLIT_CSV).exists()
    if has_split or split != "all":
        loaders.check_dataset(root)
    check_classes(root, meta, model_dir)
    df = layout.read_split(root, None if split == "all" else split) if has_split else labelled_images(root)
    if df.empty:
        where = root / (layout.SPLIT_CSV if has_split else layout.IMAGES)
        raise UserError(f"{where}: no labelled images for split {split!r}")
    return df


def input_size(meta: dict) -> tuple:
    """(h, w) the model was trained at: meta's frame_size, else the 16:9 frame of its img_size (height)."""
    size = meta.get("frame_size") or meta["img_size"]
    return tuple(size) if isinstance(size, (list, tuple)) else config.frame_size(size)


class EvalImages(Dataset):
    """Images resized to the model's input size exactly as in training; masks at their own resolution."""

    def __init__(self, df, size, n_classes):
        self.files, self.images, self.labels = list(df.File_Name), list(df.image), list(df.label)
        self.size, self.n_classes, self.pool = size, n_classes, None

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        try:
            return self.load(i)
        except UserError as e:
            return e  # raised in the main process: one clear line instead of a worker traceback

    def __getitems__(self, idx):
        """A batch (the DataLoader's batched fetch): in the main process decoded on one thread per core (PIL and
        numpy release the GIL) while the model waits, so decoding never competes with the forward for the cores."""
        if get_worker_info() is not None or len(idx) < 2:
            return [self[i] for i in idx]
        if self.pool is None:
            self.pool = ThreadPoolExecutor(config.cores(), thread_name_prefix="eval-decode")
            weakref.finalize(self, self.pool.shutdown, wait=False)  # threads end with the dataset
        return list(self.pool.map(self.__getitem__, idx))

    def __getstate__(self):
        return {**self.__dict__, "pool": None}  # threads do not travel to worker processes

    def load(self, i):
        """(input uint8 3 x h x w, mask uint8 H x W, report thumbnail, i); UserError naming a bad file."""
        mask = read_mask(self.labels[i], self.n_classes)
        img, thumb = read_image(self.images[i], self.size, mask.shape)
        return torch.from_numpy(img).permute(2, 0, 1), torch.from_numpy(mask), thumb, i


def read_mask(path, n_classes: int) -> np.ndarray:
    """A mask's uint8 class ids at its own resolution; UserError when unreadable or with values outside the classes."""
    try:
        with Image.open(path) as m:
            if m.mode not in ("L", "P"):
                raise UserError(f"{path}: mask mode {m.mode!r}, expected single-channel class ids (L or P)")
            mask = np.array(m)
    except FileNotFoundError:
        raise UserError(f"{path}: mask missing") from None
    except OSError as e:
        raise UserError(f"{path}: unreadable mask ({e})") from None
    if mask.size and mask.max() >= n_classes:  # one pass for the usual mask; two more where IGNORE pixels are
        bad = np.unique(mask[(mask >= n_classes) & (mask != config.IGNORE)])
        if bad.size:
            raise UserError(f"{path}: mask values {bad.tolist()} outside the classes 0..{n_classes - 1} and "
                            f"{config.IGNORE}")
    return mask


def read_image(path, size, mask_shape) -> tuple:
    """(model input h x w x 3, report thumbnail) from ONE decode: the JPEG draft scale training uses for `size`."""
    h, w = size
    try:
        with Image.open(path) as im:
            if im.size != mask_shape[::-1]:
                raise UserError(f"{path}: image size {im.size} differs from its mask {mask_shape[::-1]}")
            im.draft("RGB", (w, h))
            rgb = im.convert("RGB")
    except OSError as e:
        raise UserError(f"{path}: unreadable image ({e})") from None
    th, tw = thumbnail_size(*mask_shape, max_width=min(THUMB_WIDTH, rgb.width))  # never upscaled
    return np.array(rgb.resize((w, h), Image.BILINEAR)), np.asarray(rgb.resize((tw, th), Image.BILINEAR))


def collate(items):
    """Stack the (same-size) inputs; masks and report thumbnails, which may differ in size, stay lists."""
    errors = [it for it in items if isinstance(it, UserError)]
    if errors:
        return errors[0]
    xs, masks, thumbs, idx = zip(*items)
    return torch.stack(xs), list(masks), list(thumbs), list(idx)


def decode_workers(device) -> int:
    """Default decode worker processes: one per core beside an accelerator; none on a CPU, where workers would take
    the cores from the forward (2-core AMD EPYC, resnet18 at 180 px: `evaluate_split` at 0.69x the bare forward's
    images/s with 2 workers, 0.77x with none; batches are then decoded on threads between forwards,
    `EvalImages.__getitems__`)."""
    return 0 if torch.device(device).type == "cpu" else config.cores()


def eval_loader(df: pd.DataFrame, meta: dict, batch_size: int = 8, num_workers: int = 0) -> DataLoader:
    """Batched, ordered loader over the rows (its dataset's `files` name them by index)."""
    ds = EvalImages(df, input_size(meta), len(meta["classes"]))
    config.reuse_image_memory()
    return DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers,
                      persistent_workers=False, worker_init_fn=reuse_image_memory_in_worker)


def reuse_image_memory_in_worker(worker_id):
    """DataLoader worker_init_fn: PIL's block cache in each decode worker, whatever the start method."""
    config.reuse_image_memory()
