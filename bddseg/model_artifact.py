"""Every run's checkpoint in one W&B model collection per dataset, `unet-<dataset>`, so that `:best` ranks runs.

Aliases: `latest` and `run-<run id>` always; `best` only when the run beats the collection's current best validation
miou, read online through W&B's API (the artifact `<entity>/<project>/unet-<dataset>:best`: runs of one project are
ranked together) and offline from the local run records beside the run's folder (`<output>/unet-<dataset>/`).
`--registry NAME` also links the version into the W&B Registry collection `wandb-registry-model/NAME` (online only).
Evaluate the best: `python eval.py --artifact ENTITY/PROJECT/unet-<dataset>:best`.
"""
import math
import sys
from pathlib import Path

from bddseg import lookup
from bddseg.wb import is_online

META_KEYS = ("arch", "img_size", "frame_size", "dataset", "epoch", "metrics", "run_name", "run_id", "data_artifact",
             "data_manifest_sha256")
REGISTRY = "wandb-registry-model"


def collection(dataset: str) -> str:
    """The model collection of a dataset: 'unet-<dataset>'."""
    return f"unet-{dataset}"


def online_best(run, name: str):
    """Validation miou of the collection's `best` version through W&B's API; None when it has none yet; +inf (no
    `best` for this run, said in one line) when W&B cannot tell (network, permissions)."""
    import wandb
    ref = f"{run.entity}/{run.project}/{name}:best"
    try:
        art = wandb.Api().artifact(ref, type="model")
    except Exception as e:
        if "not found" in str(e).lower() or "does not exist" in str(e).lower():
            return None  # no such collection or alias yet: this run is the first
        print(f"warning: could not read {ref} ({type(e).__name__}: {e}); the `best` alias stays where it is",
              file=sys.stderr)
        return math.inf
    return lookup.run_metric(art.metadata or {})


def offline_best(dataset: str, run_dir):
    """Best validation miou among the other local runs of this dataset (beside run_dir: <output>/unet-<dataset>/);
    None when there is none."""
    run_dir = Path(run_dir).resolve()
    runs = lookup.list_runs(run_dir.parent.parent)
    others = runs[(runs.dataset == dataset) & (runs.path.map(lambda p: Path(p).resolve()) != run_dir)]["miou"]
    others = others.dropna()
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

