"""Which checkpoint folder: a local run (best by validation miou, latest, by run id), a sweep's best trial, an artifact.

A run folder is `<config.MODELS_DIR>/unet-<dataset>/<run-name>-<run-id>/` holding model.safetensors + meta.json
(and metrics.jsonl, summary.json), as train.py writes it. The run lookups only read; `download_artifact` writes the
W&B model artifact under config.ARTIFACTS_DIR/models/. `model_dir` is the choice eval.py's flags make.
"""
import math
from pathlib import Path

import pandas as pd

from bddseg import config
from bddseg.checkpoint import META, read_meta
from bddseg.cli import UserError
from bddseg.wb import wandb_mode

RUN_COLUMNS = ["run_id", "run_name", "project", "dataset", "arch", "img_size", "epoch"]


def run_metric(meta: dict, metric: str = "miou") -> float:
    """Validation metric of a run from its meta (best-epoch metrics); nan when absent."""
    metrics = meta.get("metrics") or {}
    for key in (metric, f"valid_{metric}", f"final_{metric}"):
        v = metrics.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return math.nan


def run_folders(models_dir=None) -> list:
    """Every run folder (one holding a meta.json) under models_dir (default config.MODELS_DIR), sorted."""
    root = Path(models_dir or config.MODELS_DIR)
    return sorted(p.parent for p in root.glob(f"*/*/{META}")) if root.is_dir() else []


def list_runs(models_dir=None, metric: str = "miou") -> pd.DataFrame:
    """One row per local run (run_id, run_name, dataset, arch, <metric>, saved mtime, path...), best first."""
    rows = []
    for folder in run_folders(models_dir):
        try:
            meta = read_meta(folder)
        except UserError:
            continue  # a folder being written or a broken one: not a run record
        rows.append({**{k: meta.get(k) for k in RUN_COLUMNS}, metric: run_metric(meta, metric),
                     "saved": (folder / META).stat().st_mtime, "path": str(folder)})
    df = pd.DataFrame(rows, columns=[*RUN_COLUMNS, metric, "saved", "path"])
    return df.sort_values(metric, ascending=False, na_position="last").reset_index(drop=True)


def best_run(models_dir=None, metric: str = "miou") -> Path:
    """Folder of the local run with the highest validation `metric` (UserError when there is none)."""
    df = list_runs(models_dir, metric).dropna(subset=[metric])
    if df.empty:
        raise UserError(f"no trained model with a validation {metric} under {Path(models_dir or config.MODELS_DIR)} "
                        f"(run `python train.py` first, or pass --model DIR / --run ID)")
    return Path(df.path.iloc[0])


def latest_run(models_dir=None) -> Path:
    """Folder of the most recently saved local run (UserError when there is none)."""
    df = list_runs(models_dir)
    if df.empty:
        raise UserError(f"no trained model under {Path(models_dir or config.MODELS_DIR)} (run `python train.py` first)")
    return Path(df.sort_values("saved").path.iloc[-1])


def find_run(run_id: str, models_dir=None) -> Path:
    """Folder of the local run with this W&B run id (or folder name); UserError listing known ids if unknown."""
    df = list_runs(models_dir)
    hit = df[(df.run_id == run_id) | (df.path.map(lambda p: Path(p).name) == run_id)]
    if hit.empty:
        known = ", ".join(map(str, df.run_id.head(10))) or "none"
        raise UserError(f"unknown run id {run_id!r}: no meta.json with that run_id under "
                        f"{Path(models_dir or config.MODELS_DIR)} (known: {known})")
    return Path(hit.path.iloc[0])


def sweep_run(sweep_id: str) -> Path:
    """Run folder of the best trial of an offline sweep (UserError when it has none recorded)."""
    from bddseg.sweeper.study import best_trial  # optuna: imported only for --sweep
    trial = best_trial(sweep_id)
    if not trial.get("run_dir"):
        raise UserError(f"sweep {sweep_id!r}: its best trial has no run folder recorded")
    return Path(trial["run_dir"])


def download_artifact(ref: str) -> Path:
    """Download a W&B model artifact to config.ARTIFACTS_DIR/models/ (online only)."""
    if wandb_mode() != "online":
        raise UserError(f"--artifact {ref}: W&B model artifacts need W&B online (an API key, WANDB_MODE not "
                        f"offline); offline, evaluate a local checkpoint with --model DIR or --run RUN_ID")
    import wandb
    try:
        art = wandb.Api().artifact(ref, type="model")
        return Path(art.download(root=str(config.ARTIFACTS_DIR / "models" / art.name.replace(":", "-"))))
    except Exception as e:
        raise UserError(f"--artifact {ref}: could not fetch the model artifact ({e})") from None


def model_dir(model=None, run=None, latest=False, sweep=None, artifact=None) -> Path:
    """Checkpoint folder: a folder, a run id, the latest run, a sweep's best, an artifact; else the best local run."""
    if model:
        return Path(model)
    if run:
        return find_run(run)
    if latest:
        return latest_run()
    if sweep:
        return sweep_run(sweep)
    if artifact:
        return download_artifact(artifact)
    return best_run()
