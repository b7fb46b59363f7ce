"""Local run records: find the checkpoint folders train.py wrote, pick the best by validation miou, or one by run id.

A run folder is `<params.MODELS_DIR>/unet-<dataset>/<run-name>-<run-id>/` holding model.safetensors + meta.json
(and metrics.jsonl, summary.json). Everything here reads only; nothing is modified.
"""
import math
from pathlib import Path

import pandas as pd

import params
from bddseg.checkpoint import META, read_meta
from utils import UserError


def run_metric(meta: dict, metric: str = "miou") -> float:
    """Validation metric of a run from its meta (best-epoch metrics); nan when absent."""
    metrics = meta.get("metrics") or {}
    for key in (metric, f"valid_{metric}", f"final_{metric}"):
        v = metrics.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return math.nan


def run_folders(models_dir=None) -> list:
    """Every run folder (one holding a meta.json) under models_dir (default params.MODELS_DIR), sorted."""
    root = Path(models_dir or params.MODELS_DIR)
    return sorted(p.parent for p in root.glob(f"*/*/{META}")) if root.is_dir() else []


def list_runs(models_dir=None, metric: str = "miou") -> pd.DataFrame:
    """One row per local run (run_id, run_name, dataset, arch, <metric>, saved mtime, path...), best first."""
    rows = []
    for folder in run_folders(models_dir):
        try:
            meta = read_meta(folder)
        except UserError:
            continue  # a folder being written or a broken one: not a run record
        rows.append({"run_id": meta.get("run_id"), "run_name": meta.get("run_name"),
                     "project": meta.get("project"), "dataset": meta.get("dataset"), "arch": meta.get("arch"),
                     "img_size": meta.get("img_size"), "epoch": meta.get("epoch"),
                     metric: run_metric(meta, metric), "saved": (folder / META).stat().st_mtime, "path": str(folder)})
    cols = ["run_id", "run_name", "project", "dataset", "arch", "img_size", "epoch", metric, "saved", "path"]
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values(metric, ascending=False, na_position="last").reset_index(drop=True)


def best_run(models_dir=None, metric: str = "miou") -> Path:
    """Folder of the local run with the highest validation `metric` (UserError when there is none)."""
    df = list_runs(models_dir, metric).dropna(subset=[metric])
    if df.empty:
        raise UserError(f"no trained model with a validation {metric} under {Path(models_dir or params.MODELS_DIR)} "
                        f"(run `python train.py` first, or pass --model DIR / --run ID)")
    return Path(df.path.iloc[0])


def latest_run(models_dir=None) -> Path:
    """Folder of the most recently saved local run (UserError when there is none)."""
    df = list_runs(models_dir)
    if df.empty:
        raise UserError(f"no trained model under {Path(models_dir or params.MODELS_DIR)} (run `python train.py` first)")
    return Path(df.sort_values("saved").path.iloc[-1])


def find_run(run_id: str, models_dir=None) -> Path:
    """Folder of the local run with this W&B run id (or folder name); UserError listing known ids if unknown."""
    df = list_runs(models_dir)
    hit = df[(df.run_id == run_id) | (df.path.map(lambda p: Path(p).name) == run_id)]
    if hit.empty:
        known = ", ".join(map(str, df.run_id.head(10))) or "none"
        raise UserError(f"unknown run id {run_id!r}: no meta.json with that run_id under "
                        f"{Path(models_dir or params.MODELS_DIR)} (known: {known})")
    return Path(hit.path.iloc[0])
