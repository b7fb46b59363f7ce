"""Every constant of the project in one place: W&B names, artifact names, classes, output folders, recipes.

The course-facing ones are re-exported by the top-level `params.py`. Paths and the data's W&B project can be set
from the environment (BDDSEG_ARTIFACTS, BDDSEG_MODELS, BDDSEG_EVAL, BDDSEG_SWEEPS, BDDSEG_REPORTS,
BDDSEG_DATA_PROJECT, BDDSEG_DATA_ENTITY); nothing here changes the environment.
"""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository (the package is installed editable)

# W&B: the project (and entity) of the data artifacts, where data/prepare.py logs them and train/eval look them up.
# Its own setting, never $WANDB_PROJECT: `wandb agent` sets that to the sweep's project, where training runs go.
WANDB_PROJECT = DATA_PROJECT = os.environ.get("BDDSEG_DATA_PROJECT", "bddseg")
DATA_ENTITY = os.environ.get("BDDSEG_DATA_ENTITY") or None  # None: the API key's default entity (resolve.py)
ENTITY = os.environ.get("WANDB_ENTITY") or None  # where runs go (wandb's own variable; a sweep sets its own)

# Artifacts (course names)
RAW_DATA_AT = "bdd_simple_1k"
PROCESSED_DATA_AT = "bdd_simple_1k_split"

# Classes: ids 0..6 in this order everywhere; 255 is ignored by losses, metrics and reports.
BDD_CLASSES = {0: "background", 1: "road", 2: "traffic light", 3: "traffic sign",
               4: "person", 5: "vehicle", 6: "bicycle"}
IGNORE = 255
RARE_CLASSES = (2, 3, 4, 6)  # traffic light, traffic sign, person, bicycle
CLASS_COLORS = {0: (0, 0, 0), 1: (128, 64, 128), 2: (250, 170, 30), 3: (220, 220, 0),
                4: (220, 20, 60), 5: (0, 0, 142), 6: (119, 11, 32), IGNORE: (255, 255, 255)}

# Local outputs (all gitignored)
ARTIFACTS_DIR = Path(os.environ.get("BDDSEG_ARTIFACTS", ROOT / "artifacts"))
MODELS_DIR = Path(os.environ.get("BDDSEG_MODELS", ROOT / "models"))
EVAL_DIR = Path(os.environ.get("BDDSEG_EVAL", ROOT / "eval"))
SWEEPS_DIR = Path(os.environ.get("BDDSEG_SWEEPS", ROOT / "sweeps_db"))
REPORTS_DIR = Path(os.environ.get("BDDSEG_REPORTS", ROOT / "reports"))

# ImageNet statistics (encoders trained from scratch use them too, so checkpoints stay comparable)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def class_key(name: str) -> str:
    """Metric-key form of a class name: 'traffic light' -> 'traffic_light'."""
    return name.replace(" ", "_")


CLASS_KEYS = [class_key(n) for n in BDD_CLASSES.values()]  # metric keys in class-id order: <key>_iou


def cores() -> int:
    """CPUs this process may run on (cgroup/affinity aware): threads, decode workers and writers default to it."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


IMAGE_BLOCKS = 64  # freed PIL image blocks kept for reuse (Pillow's PILLOW_BLOCKS_MAX; its default 0 keeps none)


def reuse_image_memory(blocks: int = IMAGE_BLOCKS):
    """Let PIL reuse freed image memory (its block cache): a loop that decodes frame after frame otherwise maps and
    page-faults fresh memory for each (import of 1,000 BDD frames on a 2-core AMD EPYC: 475k minor page faults,
    58k with the cache, 1 s less system time). Raises the cache to `blocks`, never lowers a larger setting."""
    from PIL import Image
    Image.core.set_blocks_max(max(blocks, Image.core.get_blocks_max()))


ASPECT = 16 / 9  # BDD frames are 16:9; img_size is the height, the width follows


def frame_size(height: int, aspect: float = ASPECT) -> tuple:
    """(height, width) for a frame of the given height and width/height `aspect` (default BDD's 16:9), width rounded
    to an even number (180 -> (180, 320); 240 at 4:3 -> (240, 320))."""
    return int(height), int(round(height * aspect / 2)) * 2


# Named training configurations: `python train.py --recipe NAME` takes these as defaults (explicit flags win).
RECIPES = {
    # The course project's way, in train.py: resnet18 U-Net from scratch (offline), fp32, 96 px, plain CE, 10 epochs.
    "course": dict(arch="resnet18", img_size=96, batch_size=8, lr=2e-3, epochs=10, loss="ce", class_weights="none",
                   pretrained=False, mixed_precision=False, freeze_epochs=0, augment=True),
    # Rare classes on a 21-minute CPU budget, no pretrained weights (README "Recipes"; every run: docs/results.md).
    # Constant sqrt_inv weights, whole frames: the best validation mIoU on the AVX2 CPU against annealed weights,
    # 240 px and `--crop auto` (docs/results.md "Recipes": test mIoU 0.545 against 0.435, 0.367 and 0.402, one run each;
    # the recipe with another seed: 0.390). Frames at the images' own aspect, as high as the machine's measured step
    # time allows (bddseg/operating_point.py): 240 px bought the most person IoU on a fast bf16 CPU, not on AVX2.
    # Colour jitter 0.2: valid mIoU 0.401 against 0.372 over two seeds (docs/results.md, 2026-12-07). timm's
    # resnet10t (deep tiered stem, one block per stage; 8.1M-param U-Net against resnet18's 14.3M): valid mIoU 0.485
    # against 0.401 over two seeds, test mIoU 0.610 and 0.631 (docs/results.md, 2026-12-08).
    "person": dict(arch="timm/resnet10t", img_size="auto", aspect="auto", batch_size=8, lr=3e-3, loss="dice_ce",
                   class_weights="sqrt_inv", weight_anneal=False, pretrained=False, mixed_precision=True,
                   freeze_epochs=0, augment=True, time_budget=21, crop=0, focus=0.0, oversample=1.0,
                   color_jitter=0.2),
}

