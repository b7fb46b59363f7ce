"""Course-facing constants (W&B project, artifact names, classes, recipes): re-exported from `bddseg.config`.

Edit the values there; this file keeps the course's `import params; params.WANDB_PROJECT` working.
"""
from bddseg.config import (BDD_CLASSES, CLASS_COLORS, ENTITY, IGNORE, PROCESSED_DATA_AT, RARE_CLASSES, RAW_DATA_AT,
                           RECIPES, WANDB_PROJECT, class_key, frame_size)

__all__ = ["WANDB_PROJECT", "ENTITY", "RAW_DATA_AT", "PROCESSED_DATA_AT", "BDD_CLASSES", "IGNORE", "RARE_CLASSES",
           "CLASS_COLORS", "RECIPES", "class_key", "frame_size"]
