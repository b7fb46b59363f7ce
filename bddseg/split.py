"""Train/valid/test split grouped by video (no video in two stages) and stratified on a rare class's presence.

scikit-learn's StratifiedGroupKFold does the work: the data is cut into k grouped, stratified folds and m of
them become `test` (m/k ~ the test fraction: 1 of 10 for 0.1); the rest is cut again for `valid`. Deterministic
for a given seed; every stage gets at least one video.
"""
import importlib
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from bddseg import config
from bddseg.cli import UserError
from bddseg.layout import STAGES

FRACTIONS = (0.8, 0.1, 0.1)
FOLDS = 20  # finest split resolution: a stage is m of k <= 20 grouped, stratified folds


def stratify_class(eda: pd.DataFrame, choice: str = "auto") -> str:
    """Class key to stratify on: `choice`, or for 'auto' the rare class in fewest images (but in >= 3 videos)."""
    if choice == "none":
        return "none"
    keys = [config.class_key(config.BDD_CLASSES[c]) for c in config.RARE_CLASSES]
    if choice != "auto":
        if f"{choice}_present" not in eda:
            known = [config.class_key(n) for n in config.BDD_CLASSES.values()]
            raise UserError(f"--stratify {choice!r}: unknown class key (use auto, none or one of {known})")
        return choice
    videos = {k: eda.video[eda[f"{k}_present"] > 0].nunique() for k in keys}
    usable = [k for k in keys if videos[k] >= 3]
    return min(usable, key=lambda k: (eda[f"{k}_present"].sum(), keys.index(k))) if usable else "none"


def fold_plan(fraction: float, max_folds: int) -> tuple:
    """(k, m): m of k equal folds come closest to `fraction` (fewest folds on ties): 0.1 -> (10, 1), 0.6 -> (5, 3)."""
    def m_of(k):
        return min(max(round(fraction * k), 1), k - 1)
    k = min(range(2, max(max_folds, 2) + 1), key=lambda k: (abs(m_of(k) / k - fraction), k))
    return k, m_of(k)


def preload():
    """Import scikit-learn's splitter now (2 s on a 2-core AMD EPYC): data/prepare.py does it while its import
    workers run, instead of after them."""
    importlib.import_module("sklearn.model_selection")


def take_folds(idx: np.ndarray, y: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices (subset of idx) of m of k grouped, stratified folds, m/k close to `fraction` (k <= FOLDS, groups)."""
    from sklearn.model_selection import StratifiedGroupKFold  # imported here: 2 s that error paths should not pay
    k, m = fold_plan(fraction, int(min(FOLDS, len(np.unique(groups[idx])))))
    y = y[idx] if np.bincount(y[idx]).max() >= k else np.zeros(len(idx), int)  # too few images to stratify
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "least populated class has only N members": expected for rare classes
        warnings.simplefilter("ignore", UserWarning)
        folds = [test for _, test in cv.split(idx, y, groups[idx]) if len(test)]
    m = min(m, len(folds) - 1)  # at least one fold left (sklearn may leave a fold empty)
    per_fold = fraction * len(idx) / m
    chosen = sorted(folds, key=lambda f: abs(len(f) - per_fold))[:m]  # fold sizes vary: take the best-sized
    return idx[np.sort(np.concatenate(chosen))]


def split(eda: pd.DataFrame, fractions=FRACTIONS, seed: int = 42, stratify: str = "auto") -> pd.DataFrame:
    """DataFrame (File_Name, Stage) in eda's order; eda needs File_Name, video and <class>_present columns."""
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise UserError(f"split fractions {fractions}: need three positive numbers (train, valid, test) summing to 1")
    groups = eda.video.astype(str).to_numpy()
    n_groups = len(np.unique(groups))
    if n_groups < 3:
        raise UserError(f"only {n_groups} video group(s) in {len(eda)} images: a train/valid/test split without "
                        f"leakage needs at least 3 (more images, or a finer --video-delim / --clip)")
    key = stratify_class(eda, stratify)
    y = (eda[f"{key}_present"].to_numpy() > 0).astype(int) if key != "none" else np.zeros(len(eda), int)
    everything = np.arange(len(eda))
    test = take_folds(everything, y, groups, fractions[2], seed)
    rest = np.setdiff1d(everything, test)
    valid = take_folds(rest, y, groups, fractions[1] / (fractions[0] + fractions[1]), seed)
    stage = np.full(len(eda), STAGES[0], dtype=object)
    stage[valid], stage[test] = STAGES[1], STAGES[2]
    out = pd.DataFrame({"File_Name": eda.File_Name.to_numpy(), "Stage": stage})
    out.attrs["stratify"] = key
    return out


def describe(eda: pd.DataFrame, split_df: pd.DataFrame) -> pd.DataFrame:
    """Per stage: images, videos and images containing each rare class (for the log and the tests)."""
    df = eda.merge(split_df, on="File_Name")
    rare = [f"{config.class_key(config.BDD_CLASSES[c])}_present" for c in config.RARE_CLASSES]
    out = df.groupby("Stage").agg(images=("File_Name", "size"), videos=("video", "nunique"),
                                  **{k.replace("_present", ""): (k, "sum") for k in rare})
    return out.reindex(list(STAGES))


def given_split(eda: pd.DataFrame, stage_of: dict) -> pd.DataFrame:
    """The split the source folders already have (--stages); warns when a video group is in two stages."""
    split_df = pd.DataFrame({"File_Name": eda.File_Name, "Stage": [stage_of[Path(f).stem] for f in eda.File_Name]})
    shared = eda.video[split_df.groupby(eda.video).Stage.transform("nunique").to_numpy() > 1].unique()
    if len(shared):
        print(f"warning: {len(shared)} video group(s) appear in more than one of the given stages "
              f"({', '.join(sorted(shared)[:5])}): frames of one scene on both sides (finer --clip?)", file=sys.stderr)
    split_df.attrs["stratify"] = "given"
    return split_df
