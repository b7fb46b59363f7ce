"""Which dataset folder a `--data` value means, the only place it is decided: a folder, a W&B artifact, a local copy.

`resolve_data("bdd_simple_1k_split", run)`: an existing folder wins; online, `run.use_artifact` downloads the
artifact (and records the lineage); offline, or when that fails (said on stderr), the local artifact folder
under config.ARTIFACTS_DIR.
"""
import sys
from pathlib import Path

from bddseg import config
from bddseg.cli import UserError
from bddseg.wb import is_online


def dataset_name(data) -> str:
    """Dataset name of a folder path or an artifact reference ('ent/proj/bdd_simple_1k_split:v2' -> its name)."""
    return str(data).rstrip("/").split("/")[-1].split(":")[0]


def resolve_data(name_or_path=None, run=None) -> Path:
    """Dataset folder for an artifact name or a path: an existing folder, `use_artifact` online, or the local copy."""
    name_or_path = str(name_or_path or config.PROCESSED_DATA_AT)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.resolve()
    name = dataset_name(name_or_path)
    if is_online(run):
        ref = name_or_path if "/" in name_or_path else f"{config.WANDB_PROJECT}/{name_or_path}"  # data step's project
        ref = ref if ":" in ref else f"{ref}:latest"
        try:
            return Path(run.use_artifact(ref).download()).resolve()
        except Exception as e:  # fall back to the local folder, but say so
            print(f"W&B: could not use artifact {ref!r} ({e}); trying the local copy", file=sys.stderr)
    local = config.ARTIFACTS_DIR / name
    if local.is_dir():
        return local.resolve()
    raise UserError(f"dataset {name_or_path!r} not found: no such folder and no local artifact at {local} "
                    f"(run `python data/prepare.py` first, or pass --data with a processed dataset folder)")
