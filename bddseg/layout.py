"""The dataset-folder contract shared by every step: where images, masks, the split and the manifest live.

A raw artifact folder holds `images/<stem>.<ext>`, `labels/<stem>_mask.png` (uint8 class ids 0..6, 255 = ignore),
`eda.csv`, `SOURCE.md` and `manifest.json`. A processed (split) folder holds the same plus `data_split.csv`
(columns File_Name, Stage with Stage in train/valid/test; File_Name is the image file name).
"""
import hashlib
import json
from collections import Counter
from pathlib import Path

import pandas as pd
from PIL import Image

from bddseg import config
from bddseg.cli import UserError

IMAGES, LABELS = "images", "labels"
SPLIT_CSV, MANIFEST, EDA_CSV, SOURCE_MD = "data_split.csv", "manifest.json", "eda.csv", "SOURCE.md"
STAGES = ("train", "valid", "test")


def label_name(file_name: str) -> str:
    """Mask file name for an image file name: 'v01-0003.jpg' -> 'v01-0003_mask.png'."""
    return f"{Path(file_name).stem}_mask.png"


def image_path(root, file_name) -> Path:
    """Path of an image inside a dataset folder."""
    return Path(root) / IMAGES / file_name


def label_path(root, file_name) -> Path:
    """Path of the mask that belongs to an image inside a dataset folder."""
    return Path(root) / LABELS / label_name(file_name)


def video_of(file_name: str) -> str:
    """Video (group) id of a file: the part before the first '-' ('v01-0003.jpg' -> 'v01'), else the stem."""
    stem = Path(file_name).stem
    return stem.split("-", 1)[0] if "-" in stem else stem


def read_split(root, stages=None) -> pd.DataFrame:
    """data_split.csv of a processed folder with absolute image/label paths, optionally filtered to stages."""
    root = Path(root)
    df = pd.read_csv(root / SPLIT_CSV)
    if stages is not None:
        df = df[df.Stage.isin([stages] if isinstance(stages, str) else list(stages))]
    df = df.reset_index(drop=True)
    df["image"] = [str(image_path(root, f)) for f in df.File_Name]
    df["label"] = [str(label_path(root, f)) for f in df.File_Name]
    return df


def image_aspect(root, stage="train") -> float:
    """Width / height of a stage's images (the most common one; headers only): `train.py --aspect auto`."""
    sizes = Counter()
    for path in read_split(root, stage).image:
        try:
            with Image.open(path) as im:
                sizes[im.size] += 1
        except OSError as e:
            raise UserError(f"{path}: not a readable image ({e})") from None
    if not sizes:
        raise UserError(f"{Path(root) / SPLIT_CSV}: no {stage} images to take an aspect from")
    (w, h), _ = sizes.most_common(1)[0]
    return w / h


def sha256(path, chunk=1 << 20) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(root) -> dict:
    """The manifest.json of a dataset folder."""
    return json.loads((Path(root) / MANIFEST).read_text())


def check_manifest(root, full: bool = False) -> list:
    """Problems with a dataset folder versus its manifest (missing/changed files); sizes always, hashes if full."""
    root = Path(root)
    if not (root / MANIFEST).exists():
        return [f"{root / MANIFEST}: missing (not a dataset folder made by data/prepare.py?)"]
    problems = []
    for rel, info in read_manifest(root)["files"].items():
        p = root / rel
        if not p.exists():
            problems.append(f"{p}: missing")
        elif p.stat().st_size != info["size"]:
            problems.append(f"{p}: size changed ({p.stat().st_size} != {info['size']} bytes)")
        elif full and sha256(p) != info["sha256"]:
            problems.append(f"{p}: content changed (sha256 differs from manifest)")
    return problems


def write_manifest(root, known=None, **meta) -> dict:
    """Write manifest.json: `meta` (name, type, source, ...) plus classes and size+sha256 of every file below root;
    `known` {relative path: {size, sha256}} gives entries already computed from the bytes written (used when the
    size still matches), so those files are not read again."""
    from bddseg.atomic import write_json
    root, known = Path(root), known or {}
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel, size = str(p.relative_to(root)), p.stat().st_size
            entry = known.get(rel)
            files[rel] = dict(entry) if entry and entry["size"] == size else {"size": size, "sha256": sha256(p)}
    manifest = {**meta, "classes": {str(k): v for k, v in config.BDD_CLASSES.items()},
                "ignore_index": config.IGNORE, "files": files}
    write_json(root / MANIFEST, manifest)
    return manifest
