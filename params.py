"""Course-facing constants (W&B projects, artifact names, classes, recipes): re-exported from `bddseg.config`.

Edit the values there; this file keeps the course's `import params; params.WANDB_PROJECT` working.
WANDB_PROJECT (= DATA_PROJECT) is where the data artifacts live; training runs go to `unet-<dataset>` by hand and to
the sweep's project under `wandb agent`.
"""
from bddseg.config import (BDD_CLASSES, CLASS_COLORS, DATA_ENTITY, DATA_PROJECT, ENTITY, IGNORE, PROCESSED_DATA_AT,
                           RARE_CLASSES, RAW_DATA_AT, RECIPES, WANDB_PROJECT, class_key, frame_size)

__all__ = ["WANDB_PROJECT", "DATA_PROJECT", "DATA_ENTITY", "ENTITY", "RAW_DATA_AT", "PROCESSED_DATA_AT", "BDD_CLASSES",
           "IGNORE", "RARE_CLASSES", "CLASS_COLORS", "RECIPES", "class_key", "frame_size"]
