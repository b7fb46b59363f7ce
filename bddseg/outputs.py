"""Print where the latest outputs of each step are (the last lines of `make demo`): `python -m bddseg.outputs`."""
from pathlib import Path

from bddseg import config
from bddseg.lookup import list_runs


def newest(pattern_root, pattern):
    """The most recently modified path matching `pattern` under `pattern_root`, or None."""
    root = Path(pattern_root)
    hits = sorted(root.glob(pattern), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    return hits[-1] if hits else None


def outputs() -> list:
    """(label, path) of the newest output of every step; missing ones say so."""
    art = config.ARTIFACTS_DIR
    df = list_runs()
    latest = df.sort_values("saved").path.iloc[-1] if len(df) else None
    best = df.dropna(subset=["miou"]).path.iloc[0] if df.miou.notna().any() else None
    return [
        ("raw dataset (artifact folder)", art / config.RAW_DATA_AT),
        ("split dataset (artifact folder)", art / config.PROCESSED_DATA_AT),
        ("best checkpoint + run record (validation miou)", best),
        ("latest checkpoint + run record", latest),
        ("W&B offline runs (`wandb sync` to upload)", newest(config.ROOT / "wandb", "offline-run-*") and
         config.ROOT / "wandb"),
        ("offline sweep storage", config.SWEEPS_DIR),
        ("sweep report", newest(config.REPORTS_DIR, "sweep-*.html")),
        ("evaluation report (newest)", newest(config.EVAL_DIR, "*/index.html")),
        ("evaluation reports (a folder per model)", config.EVAL_DIR),
    ]


def main():
    print("\nwhere the outputs are:")
    for label, path in outputs():
        shown = path if path is not None and Path(path).exists() else "(none yet)"
        print(f"  {label:44s} {shown}")


if __name__ == "__main__":
    main()
