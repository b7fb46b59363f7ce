"""Label statistics of an imported dataset: per image, which classes are present and their pixel shares (eda.csv),
computed on the masks at their own resolution; and the per-class summary the data step prints."""
from pathlib import Path

import numpy as np
import pandas as pd

from bddseg import config, layout

def get_eda(done) -> pd.DataFrame:
    """Per image: File_Name, video, <class>_present (0/1) and <class>_share (pixel share, ignore included)."""
    counts = np.stack([r.counts for r in done]).astype(np.float64)
    total = counts.sum(1, keepdims=True)
    df = pd.DataFrame({"File_Name": [r.name + r.ext for r in done], "video": [r.video for r in done]})
    for c, key in enumerate(config.CLASS_KEYS):
        df[f"{key}_present"] = (counts[:, c] > 0).astype(int)
    for c, key in enumerate(config.CLASS_KEYS):
        df[f"{key}_share"] = (counts[:, c] / total[:, 0]).round(6)
    return df


def summarize(eda) -> pd.DataFrame:
    """Overall pixel share and image presence per class."""
    return pd.DataFrame({"pixel_share": [eda[f"{k}_share"].mean() for k in config.CLASS_KEYS],
                         "images_with": [eda[f"{k}_present"].mean() for k in config.CLASS_KEYS]},
                        index=list(config.BDD_CLASSES.values()))


def classes_in_split(root, stage="train"):
    """Class ids with a pixel in some mask of `stage`, at the masks' own resolution (eda.csv + data_split.csv of a
    processed folder); None when the folder has no eda.csv. A class the training resize erases still counts."""
    path = Path(root) / layout.EDA_CSV
    if not path.is_file():
        return None
    eda = pd.read_csv(path).merge(layout.read_split(root, stage)[["File_Name"]], on="File_Name")
    return {c for c, key in enumerate(config.CLASS_KEYS) if eda[f"{key}_present"].any()}
