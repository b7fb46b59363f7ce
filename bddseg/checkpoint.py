"""Checkpoint folders: model.safetensors (tensors only, never pickle) + meta.json (everything to rebuild and use it)."""
import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from bddseg.atomic import atomic_dir, write_json
from bddseg.cli import UserError
from bddseg.models import DECODER_WIDTH, build_model

WEIGHTS, META = "model.safetensors", "meta.json"
FORMAT_VERSION = 1
REQUIRED = ("arch", "n_classes")
RECORD_FILES = ("metrics.jsonl", "config.json", "summary.json", "train_images.json")  # kept across saves


def save_checkpoint(folder, model, meta: dict) -> Path:
    """Atomically write `folder` with the weights and meta.json (+ the model's mean/std and format_version)."""
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"checkpoint meta needs {missing}")
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}  # channels_last -> dense
    # the normalisation the model applies (rounded: 0.485, not float32's 0.48500001)
    stats = {k: [round(v, 6) for v in getattr(model, k).flatten().tolist()] for k in ("mean", "std")}
    meta = {**meta, **stats, "format_version": FORMAT_VERSION}
    with atomic_dir(folder) as tmp:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt", "arch": str(meta["arch"])})
        write_json(tmp / META, meta)
    return Path(folder)


def save_run_checkpoint(run_dir, model, meta):
    """save_checkpoint into the run folder, atomically, keeping the run-record files that live beside it.

    save_checkpoint replaces the whole folder it is given; so it writes into a temp folder that also receives
    copies of RECORD_FILES, and that folder then replaces run_dir in one rename (Ctrl-C leaves the old one).
    """
    run_dir = Path(run_dir)
    with atomic_dir(run_dir) as tmp:
        save_checkpoint(tmp, model, meta)
        for name in RECORD_FILES:
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, tmp / name)
    return run_dir


def read_meta(folder) -> dict:
    """meta.json of a checkpoint folder, validated (UserError naming the file otherwise)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"checkpoint folder {folder} not found")
    path = folder / META
    if not path.is_file():
        raise UserError(f"{path} is missing: a checkpoint folder holds {WEIGHTS} + {META}")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path} must hold a JSON object, not {type(meta).__name__}")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}")
    n = meta["n_classes"]
    if not isinstance(meta["arch"], str) or not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UserError(f"{path}: arch must be a name and n_classes a positive integer "
                        f"(got {meta['arch']!r}, {n!r})")
    if not isinstance(meta.get("model_info", {}), dict):
        raise UserError(f"{path}: model_info must be a JSON object, not {type(meta['model_info']).__name__}")
    if meta.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise UserError(f"{path}: format_version {meta['format_version']!r} is not {FORMAT_VERSION} "
                        f"(written by another bddseg version)")
    return meta


def mismatch(model, state) -> str:
    """'' when `state` fits `model` exactly, else a short account of missing/unexpected/reshaped tensors."""
    own = model.state_dict()
    missing, extra = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    shaped = [k for k in sorted(own.keys() & state.keys()) if own[k].shape != state[k].shape]
    parts = [f"{len(missing)} tensors missing (e.g. {missing[0]})" if missing else "",
             f"{len(extra)} unexpected (e.g. {extra[0]})" if extra else "",
             f"{len(shaped)} of another shape (e.g. {shaped[0]}: file {tuple(state[shaped[0]].shape)}, "
             f"model {tuple(own[shaped[0]].shape)})" if shaped else ""]
    return "; ".join(p for p in parts if p)


def load_checkpoint(folder, device="cpu"):
    """(model in eval mode on `device`, meta) rebuilt from meta.json alone (no pretrained download), weights strict."""
    folder = Path(folder)
    meta = read_meta(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise UserError(f"{weights} is missing: a checkpoint folder holds {WEIGHTS} + {META}")
    try:
        info = meta.get("model_info", {})
        model, _ = build_model(meta["arch"], meta["n_classes"], pretrained=False,
                               absent=info.get("absent_classes", ()), width=info.get("decoder_width", DECODER_WIDTH))
    except UserError as e:
        raise UserError(f"{folder / META}: {e}") from None
    except (TypeError, ValueError) as e:  # e.g. absent_classes: 5
        raise UserError(f"{folder / META}: malformed model_info ({type(e).__name__}: {e})") from None
    try:
        state = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types for truncated or foreign files
        raise UserError(f"{weights} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    problem = mismatch(model, state)
    if problem:
        raise UserError(f"{weights} does not match {META} (arch {meta['arch']!r}, n_classes {meta['n_classes']}, "
                        f"decoder width {model.head.in_channels}): {problem}")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), meta
