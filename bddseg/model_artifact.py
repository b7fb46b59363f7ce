"""Every run's checkpoint in one W&B model collection per dataset, `unet-<dataset>`, so that `:best` ranks runs.

Aliases: `latest` and `run-<run id>` always; `best` only when the run beats the collection's current best validation
miou, read online through W&B's API (the artifact `<entity>/<project>/unet-<dataset>:best`) and offline from the local
run records (config.MODELS_DIR). `--registry NAME` also links the version into the W&B Registry collection
`wandb-registry-model/NAME` (online only). `python eval.py --artifact ENTITY/PROJECT/unet-<dataset>:best`.
"""
import math
import sys

from bddseg import lookup
from bddseg.wb import is_online

META_KEYS = ("arch", "img_size", "dataset", "epoch", "metrics", "run_name", "run_id", "data_artifact",
             "data_manifest_sha256")
REGISTRY = "wandb-registry-model"


def collection(dataset: str) -> str:
    """The model collection of a dataset: 'unet-<dataset>'."""
    return f"unet-{dataset}"


def online_best(run, name: str):
    """Validation miou of the collection's `best` version through W&B's API; None when it has none yet."""
    import wandb
    try:
        art = wandb.Api().artifact(f"{run.entity}/{run.project}/{name}:best", type="model")
    except Exception:  # no such collection or alias yet (wandb raises CommError/ValueError)
        return None
    return lookup.run_metric(art.metadata or {})


def offline_best(dataset: str, run_dir):
    """Best validation miou among the other local runs of this dataset; None when there is none."""
    runs = lookup.list_runs()
    others = runs[(runs.dataset == dataset) & (runs.path != str(run_dir))]["miou"].dropna()
    return float(others.max()) if len(others) else None


def aliases(run_id: str, miou, best_so_far) -> list:
    """['latest', 'run-<id>'] plus 'best' when `miou` beats `best_so_far` (or there is no best yet)."""
    beats = miou is not None and math.isfinite(miou) and (best_so_far is None or miou > best_so_far)
    return ["latest", f"run-{run_id}"] + (["best"] if beats else [])


def log_model(run, run_dir, meta: dict, registry=None) -> list:
    """Log the run folder into the dataset's collection with its aliases; link it into the registry when asked."""
    import wandb
    name = collection(meta["dataset"])
    best = online_best(run, name) if is_online(run) else offline_best(meta["dataset"], run_dir)
    tags = aliases(run.id, lookup.run_metric(meta), best)
    art = wandb.Artifact(name, type="model", metadata={k: meta[k] for k in META_KEYS if k in meta})
    art.add_dir(str(run_dir))
    run.log_artifact(art, aliases=tags)
    if registry and is_online(run):
        run.link_artifact(art, f"{REGISTRY}/{registry}")
    elif registry:
        print(f"note: --registry {registry}: linking needs W&B online; after `wandb sync`, link {name}:run-{run.id} "
              f"in the W&B app", file=sys.stderr)
    return tags

