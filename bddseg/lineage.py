"""Which data a model saw, and whether an evaluation may use a dataset: the split's manifest hash and the
training images' content hashes, recorded at training time and checked by eval.py.

- `data_manifest_sha256`: sha256 of the processed folder's manifest.json (which hashes every file, the split
  csv included): it changes whenever the data step is re-run with another seed, source or split.
- `train_images.json` in the run folder: {image file name: sha256} of the model's training split (from the manifest,
  no re-hashing), so an evaluation on other data can prove that it scores no image the model trained on.
"""
import hashlib
import json
import sys
from pathlib import Path

from bddseg import layout
from bddseg.cli import UserError

TRAIN_IMAGES = "train_images.json"


def manifest_sha256(root):
    """sha256 of a dataset folder's manifest.json, or None when it has none."""
    path = Path(root) / layout.MANIFEST
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def image_hashes(root, files) -> dict:
    """{file name: sha256} of images of a dataset folder, from its manifest (hashed here when not listed)."""
    listed = layout.read_manifest(root)["files"] if (Path(root) / layout.MANIFEST).is_file() else {}
    out = {}
    for f in files:
        entry = listed.get(f"{layout.IMAGES}/{f}")
        out[f] = entry["sha256"] if entry else layout.sha256(layout.image_path(root, f))
    return out


def train_images(root) -> dict:
    """{file name: sha256} of the training split of a processed dataset folder."""
    return image_hashes(root, layout.read_split(root, "train").File_Name)


def check_eval_data(meta: dict, model_dir, root, files, explicit: bool):
    """Refuse data that is not what the model was trained with (UserError, exit 2), unless `explicit` (--data):
    then warn, and refuse only when one of the images to evaluate was one the model trained on."""
    recorded, now = meta.get("data_manifest_sha256"), manifest_sha256(root)
    if recorded is None or recorded == now:
        return
    where = Path(model_dir) / "meta.json"
    if not explicit:
        raise UserError(f"{Path(root) / layout.MANIFEST} is not the dataset the model was trained on (manifest sha256 "
                        f"{str(now)[:12]} != {recorded[:12]} recorded in {where}): the data step was re-run since, so "
                        f"its split may put the model's training images in the evaluated one. Evaluate on the data the "
                        f"model saw (its W&B artifact {meta.get('data_artifact') or '-'}), or pass --data explicitly")
    print(f"warning: {root} is not the dataset the model was trained on (manifest sha256 differs from {where}); "
          f"checking that no evaluated image is one it trained on", file=sys.stderr)
    path = Path(model_dir) / TRAIN_IMAGES
    if not path.is_file():
        raise UserError(f"{path} is missing: cannot check that the evaluated images exclude the model's training "
                        f"images (checkpoint made before train_images.json was recorded)")
    trained = set(json.loads(path.read_text()).values())
    overlap = [f for f, h in image_hashes(root, files).items() if h in trained]
    if overlap:
        raise UserError(f"{len(overlap)} of the {len(files)} images to evaluate in {root} were in the model's "
                        f"training split ({', '.join(overlap[:3])}...; {path}): the scores would not be held-out")
