"""Which dataset folder a `--data` value means, the only place it is decided: a folder, a W&B artifact, a local copy.

`resolve_dataset("bdd_simple_1k_split", run)`: an existing folder wins; online, `run.use_artifact` downloads the
artifact from the data's own entity and project (`data_entity()` / config.DATA_PROJECT, or `entity/project/name:alias`
as given; never the sweep's) and records the lineage; offline, or when that fails (said on stderr), the local artifact
folder under config.ARTIFACTS_DIR. The result names the exact artifact version used, when there was one.
"""
import sys
from pathlib import Path
from typing import NamedTuple, Optional

from bddseg import config
from bddseg.cli import UserError
from bddseg.wb import is_online


class Dataset(NamedTuple):
    path: Path
    artifact: Optional[str] = None  # 'entity/project/name:v3' when it came from W&B


def dataset_name(data) -> str:
    """Dataset name of a folder path or an artifact reference ('ent/proj/bdd_simple_1k_split:v2' -> its name)."""
    return str(data).rstrip("/").split("/")[-1].split(":")[0]


def data_entity():
    """The data artifacts' entity: BDDSEG_DATA_ENTITY, else the API key's default entity (online only), never the
    entity of the run at hand (under `wandb agent` that is the sweep's)."""
    if config.DATA_ENTITY:
        return config.DATA_ENTITY
    import wandb
    return wandb.Api().default_entity


def artifact_ref(name_or_ref: str) -> str:
    """Full artifact reference: `name` -> 'data_entity()/DATA_PROJECT/name:latest'; given parts are kept."""
    ref = name_or_ref
    if "/" not in ref:
        ref = f"{data_entity()}/{config.DATA_PROJECT}/{ref}"
    return ref if ":" in ref.split("/")[-1] else f"{ref}:latest"


def version_ref(art) -> str:
    """'entity/project/name:vN' of a used artifact (its `name` keeps the alias it was asked by, e.g. ':latest')."""
    return f"{art.entity}/{art.project}/{art.name.split(':')[0]}:{art.version}"


def resolve_dataset(name_or_path=None, run=None) -> Dataset:
    """Dataset for an artifact name or a path: an existing folder, `use_artifact` online, or the local copy."""
    name_or_path = str(name_or_path or config.PROCESSED_DATA_AT)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return Dataset(path.resolve())
    if is_online(run):
        ref = artifact_ref(name_or_path)
        try:
            art = run.use_artifact(ref, type="split_data")
            return Dataset(Path(art.download()).resolve(), version_ref(art))
        except Exception as e:  # fall back to the local folder, but say so
            print(f"W&B: could not use artifact {name_or_path!r} ({e}); trying the local copy", file=sys.stderr)
    elif ":" in name_or_path:
        print(f"note: {name_or_path!r}: W&B is offline, so the version cannot be checked; using the local copy",
              file=sys.stderr)
    local = config.ARTIFACTS_DIR / dataset_name(name_or_path)
    if local.is_dir():
        return Dataset(local.resolve())
    raise UserError(f"dataset {name_or_path!r} not found: no such folder and no local artifact at {local} "
                    f"(run `python data/prepare.py` first, or pass --data with a processed dataset folder)")


def resolve_data(name_or_path=None, run=None) -> Path:
    """The folder of resolve_dataset (notebooks and scripts that need only the path)."""
    return resolve_dataset(name_or_path, run).path
