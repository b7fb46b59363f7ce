"""Data step: import street scenes with masks (synthetic by default, BDD100K 10k, or any folder), write the raw
artifact (images, 7-class masks, EDA), split it by video into train/valid/test, and log both to W&B.

    python data/prepare.py                                    # 1000 synthetic 640x360 frames
    python data/prepare.py --source bdd100k --root ~/data/bdd100k
    python data/prepare.py --source folder --images camvid/train --masks camvid/trainannot --mapping camvid
    python data/prepare.py --source folder --images camvid/train camvid/val --masks camvid/trainannot \
        camvid/valannot --stages train,valid --mapping camvid-sign --clip 300     # keep the data's own split
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from multiprocessing import Pool  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import params  # noqa: E402
import utils  # noqa: E402
from bddseg import layout, sources, split, synthetic  # noqa: E402

CLASS_KEYS = {c: params.class_key(n) for c, n in params.BDD_CLASSES.items()}
TABLE_MAX_ROWS = 1000     # W&B EDA table: first N images (thumbnails), so the step stays fast on big imports
MAX_PROBLEMS = 20         # without --skip-bad, stop after this many bad pairs and report them
SOURCE_OPTIONS = {"synthetic": {"n", "size", "frames_per_video"}, "bdd100k": {"root", "limit"},
                  "folder": {"images", "masks", "mapping", "video_delim", "clip", "limit", "stages"}}


def parse_args(argv=None):
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", choices=["synthetic", "bdd100k", "folder"], default="synthetic")
    p.add_argument("--n", type=int, default=1000, help="synthetic: number of images")
    p.add_argument("--seed", type=int, default=42, help="synthetic generator and split seed")
    p.add_argument("--size", type=parse_size, default=synthetic.SIZE, help="synthetic: frame WxH (default 640x360)")
    p.add_argument("--frames-per-video", type=int, default=synthetic.FRAMES_PER_VIDEO, help="synthetic (default 5)")
    p.add_argument("--root", help="bdd100k: folder with images/10k and labels/sem_seg")
    p.add_argument("--images", nargs="+", help="folder: image folder(s)")
    p.add_argument("--masks", nargs="+", help="folder: mask folder(s), one per image folder (x.jpg pairs with x.png "
                   "or x_mask.png)")
    p.add_argument("--stages", type=parse_stages,
                   help="folder: the stage of each image folder, e.g. train,valid: keep a split the data already "
                        "has instead of splitting (--fractions and --stratify then do not apply)")
    p.add_argument("--mapping", default="identity",
                   help=f"folder: source id -> class, a preset ({', '.join(sources.MAPPINGS)}) or a JSON file")
    p.add_argument("--video-delim", help="folder: video = file stem before this (default '_' for camvid, else '-')")
    p.add_argument("--clip", type=int, default=0, help="folder: also group by frame number // CLIP (CamVid: 300)")
    p.add_argument("--limit", type=int, help="bdd100k/folder: import only the first N images (sorted by name)")
    p.add_argument("--skip-bad", action="store_true", help="drop bad image/mask pairs (listed) instead of failing")
    p.add_argument("--fractions", type=parse_fractions, default=split.FRACTIONS, help="train,valid,test (0.8,0.1,0.1)")
    p.add_argument("--stratify", default="auto", help="class key to stratify the split on (auto, none, person...)")
    p.add_argument("--out", type=Path, default=params.ARTIFACTS_DIR, help="where the artifact folders go")
    p.add_argument("--name", default=params.RAW_DATA_AT, help="raw artifact name")
    p.add_argument("--split-name", default=params.PROCESSED_DATA_AT, help="processed (split) artifact name")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    p.add_argument("--no-wandb", action="store_true", help="skip W&B logging (local folders only)")
    return p.parse_args(argv)


def parse_size(text):
    """'640x360' -> (640, 360)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT like 640x360, got {text!r}")
    if w < 32 or h < 18:
        raise argparse.ArgumentTypeError(f"frame {w}x{h} too small (at least 32x18)")
    return w, h


def parse_fractions(text):
    """'0.8,0.1,0.1' -> (0.8, 0.1, 0.1)."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers like 0.8,0.1,0.1, got {text!r}")


def parse_stages(text):
    """'train,valid' -> ('train', 'valid'); each one of layout.STAGES."""
    stages = tuple(v.strip() for v in text.split(","))
    bad = [v for v in stages if v not in layout.STAGES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown stage(s) {bad}: use {', '.join(layout.STAGES)}")
    return stages


def get_items(args):
    """The source's items, a short description of it (for SOURCE.md, manifest and W&B) and {name: stage} of --stages."""
    if args.source == "synthetic":
        w, h = args.size
        info = {"source": "synthetic", "seed": args.seed, "n": args.n, "size": f"{w}x{h}",
                "frames_per_video": args.frames_per_video}
        return sources.synthetic_items(args.n, args.seed, args.size, args.frames_per_video), info, None
    if args.source == "bdd100k":
        if not args.root:
            raise utils.UserError("--source bdd100k needs --root DIR (the folder holding images/10k)")
        items, mapping = sources.bdd100k_items(args.root, args.limit)
        return items, {"source": "bdd100k", "root": str(Path(args.root).resolve()), "mapping": mapping,
                       "limit": args.limit}, None
    if not (args.images and args.masks):
        raise utils.UserError("--source folder needs --images DIR and --masks DIR")
    if len(args.images) != len(args.masks) or (args.stages and len(args.stages) != len(args.images)):
        raise utils.UserError(f"{len(args.images)} --images folder(s), {len(args.masks)} --masks and "
                              f"{len(args.stages or ())} --stages: give one mask folder (and stage) per image folder")
    if len(args.images) > 1 and not args.stages:
        raise utils.UserError("several --images folders need --stages (which stage each folder is)")
    delim = args.video_delim or ("_" if args.mapping.startswith("camvid") else "-")
    items, stages, mapping = [], {}, None
    for i, (images, masks) in enumerate(zip(args.images, args.masks)):
        found, mapping = sources.folder_items(images, masks, args.mapping, args.limit, delim, args.clip)
        items += found
        stages.update({it.name: args.stages[i] for it in found} if args.stages else {})
    names = [it.name for it in items]
    if len(set(names)) < len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:5]
        raise utils.UserError(f"the --images folders share file names {dup}: every image needs its own name")
    return items, {"source": "folder", "images": " ".join(str(Path(f).resolve()) for f in args.images),
                   "masks": " ".join(str(Path(f).resolve()) for f in args.masks), "mapping": mapping,
                   "video_delim": delim, "clip": args.clip, "limit": args.limit,
                   "stages": ",".join(args.stages) if args.stages else None}, stages or None


def import_all(items, root, workers, skip_bad, thumbs):
    """Load, check and write every item into root/images and root/labels; returns (imported, problems)."""
    (root / layout.IMAGES).mkdir()
    (root / layout.LABELS).mkdir()
    done, problems = [], []
    tasks = [(item, thumbs and i < TABLE_MAX_ROWS) for i, item in enumerate(items)]
    for r in ordered_map(run_task, tasks, workers):
        if r.error:
            problems.append(r.error)
            if not skip_bad and len(problems) >= MAX_PROBLEMS:
                break
            continue
        (root / layout.IMAGES / f"{r.name}{r.ext}").write_bytes(r.image)
        (root / layout.LABELS / layout.label_name(r.name + r.ext)).write_bytes(r.mask_png)
        r.image = r.mask_png = b""  # written: do not hold a whole data set in memory
        done.append(r)
    return done, problems


def ordered_map(fn, tasks, workers):
    """map() in input order, spread over `workers` processes when more than one."""
    if workers <= 1:
        yield from map(fn, tasks)
        return
    with Pool(workers) as pool:
        yield from pool.imap(fn, tasks, chunksize=8)


def run_task(task):
    """Worker: import one item."""
    return sources.import_item(*task)


def check_problems(problems, n_items, skip_bad, label):
    """Bad pairs stop the step (exit 2) unless --skip-bad, which lists them; nothing usable left is an error too."""
    if problems and not skip_bad:
        more = " (stopped there)" if len(problems) >= MAX_PROBLEMS else ""
        raise utils.UserError(f"{len(problems)} bad image/mask pair(s) in {label}{more}; fix them or pass "
                              f"--skip-bad to leave them out:\n  " + "\n  ".join(problems))
    if problems:
        print(f"--skip-bad: left out {len(problems)} of {n_items} pairs:\n  " + "\n  ".join(problems), file=sys.stderr)
    if len(problems) == n_items:
        raise utils.UserError(f"no usable image/mask pairs in {label}: all {n_items} were bad")


def get_eda(done) -> pd.DataFrame:
    """Per image: File_Name, video, <class>_present (0/1) and <class>_share (pixel share, ignore included)."""
    counts = np.stack([r.counts for r in done]).astype(np.float64)
    total = counts.sum(1, keepdims=True)
    df = pd.DataFrame({"File_Name": [r.name + r.ext for r in done], "video": [r.video for r in done]})
    for c, key in CLASS_KEYS.items():
        df[f"{key}_present"] = (counts[:, c] > 0).astype(int)
    for c, key in CLASS_KEYS.items():
        df[f"{key}_share"] = (counts[:, c] / total[:, 0]).round(6)
    return df


def summarize(eda) -> pd.DataFrame:
    """Overall pixel share and image presence per class."""
    return pd.DataFrame({"pixel_share": [eda[f"{k}_share"].mean() for k in CLASS_KEYS.values()],
                         "images_with": [eda[f"{k}_present"].mean() for k in CLASS_KEYS.values()]},
                        index=list(params.BDD_CLASSES.values()))


def write_source_note(root, name, info, problems, command):
    """SOURCE.md: where the data came from, its licence, the command that made it, pairs left out."""
    lines = [f"# {name}", "", f"Source: **{info['source']}**", ""]
    lines += [f"- {k}: {v}" for k, v in info.items() if k != "source" and v is not None]
    lines += ["", f"Licence: {sources.LICENCES[info['source']]}", "",
              f"Classes: {', '.join(f'{c} {n}' for c, n in params.BDD_CLASSES.items())}; "
              f"{params.IGNORE} = ignore.", "", "Made with:", "", f"    {command}", ""]
    if problems:
        lines += [f"Left out with --skip-bad ({len(problems)}):", ""] + [f"- {p}" for p in problems] + [""]
    utils.atomic_write(root / layout.SOURCE_MD, "\n".join(lines))


def link_or_copy(src, dst):
    """Hard-link a file (same bytes, no extra space), copying when links are not possible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def build_processed(raw, proc, split_df):
    """Processed folder: the raw files (hard-linked) plus data_split.csv."""
    for sub in (layout.IMAGES, layout.LABELS):
        (proc / sub).mkdir()
        for f in sorted((raw / sub).iterdir()):
            link_or_copy(f, proc / sub / f.name)
    for name in (layout.EDA_CSV, layout.SOURCE_MD):
        link_or_copy(raw / name, proc / name)
    split_df.to_csv(proc / layout.SPLIT_CSV, index=False)


def eda_table(eda, done):
    """W&B table: thumbnail with its mask overlaid, file, video and per-class pixel shares."""
    import wandb
    labels = {**{c: n for c, n in params.BDD_CLASSES.items()}, params.IGNORE: "ignore"}
    cols = ["File_Name", "video", "image"] + [f"{k}_share" for k in CLASS_KEYS.values()]
    table = wandb.Table(columns=cols)
    for r, row in zip(done, eda.itertuples(index=False)):
        if r.thumb is None:
            continue
        masks = {"ground_truth": {"mask_data": r.thumb_mask, "class_labels": labels}}
        img = wandb.Image(r.thumb, file_type="jpg", masks=masks)
        table.add_data(row.File_Name, row.video, img, *[getattr(row, c) for c in cols[3:]])
    return table


def log_raw(raw, eda, done, info, args):
    """Log the raw folder as a `raw_data` artifact (+ EDA table) from an `upload` run; returns (run dir, artifact)."""
    import wandb
    run = utils.init_wandb(project=params.WANDB_PROJECT, job_type="upload", config={**info, "name": args.name})
    art = wandb.Artifact(args.name, type="raw_data", metadata={**info, "n_images": len(eda)})
    art.add_dir(str(raw))
    art.add(eda_table(eda, done), "eda_table")
    run.log_artifact(art)
    run.summary.update({f"{CLASS_KEYS[c]}_pixel_share": v for c, v in enumerate(summarize(eda).pixel_share)})
    where = wandb_where(run)
    if utils.is_online(run):
        art.wait()
    run.finish()
    return where, art


def log_split(proc, split_df, raw_art, meta, args):
    """Log the processed folder as a `split_data` artifact (+ split table) from a `data_split` run."""
    import wandb
    run = utils.init_wandb(project=params.WANDB_PROJECT, job_type="data_split", config=meta)
    if utils.is_online(run) and raw_art is not None:
        run.use_artifact(raw_art)  # lineage raw -> split (use_artifact does not work offline)
    art = wandb.Artifact(args.split_name, type="split_data", metadata=meta)
    art.add_dir(str(proc))
    art.add(wandb.Table(dataframe=split_df), "data_split")
    run.log_artifact(art)
    where = wandb_where(run)
    run.finish()
    return where


def wandb_where(run):
    """Where a run went: its URL online, its local folder offline."""
    return run.url if utils.is_online(run) else f"{Path(run.dir).parent} (offline; upload with `wandb sync`)"


def check_args(args):
    """Refuse option values that cannot work (or belong to another source), before anything is written."""
    defaults = vars(parse_args([]))
    foreign = set().union(*SOURCE_OPTIONS.values()) - SOURCE_OPTIONS[args.source]
    given = sorted(f"--{k.replace('_', '-')}" for k in foreign if getattr(args, k) != defaults[k])
    if given:
        raise utils.UserError(f"{', '.join(given)} does not apply to --source {args.source}")
    if args.frames_per_video < 1 or (args.limit is not None and args.limit < 1) or args.workers < 1:
        raise utils.UserError("--frames-per-video, --limit and --workers must be at least 1")
    if args.stages and (args.fractions != defaults["fractions"] or args.stratify != defaults["stratify"]):
        raise utils.UserError("--stages keeps the given split: --fractions and --stratify do not apply")
    if args.name == args.split_name:
        raise utils.UserError(f"--name and --split-name are both {args.name!r}: the two folders need different names")


def make_raw(raw, items, info, args, command):
    """Fill the raw folder: images, masks, eda.csv, SOURCE.md, manifest.json; returns (imported, eda)."""
    done, problems = import_all(items, raw, args.workers, args.skip_bad, thumbs=not args.no_wandb)
    check_problems(problems, len(items), args.skip_bad, info.get("root") or info.get("images") or "synthetic")
    eda = get_eda(done)
    eda.to_csv(raw / layout.EDA_CSV, index=False)
    write_source_note(raw, args.name, info, problems, command)
    layout.write_manifest(raw, name=args.name, type="raw_data", source=info["source"], source_details=info,
                          n_images=len(eda), n_videos=int(eda.video.nunique()), skipped=problems)
    return done, eda


def given_split(eda, stage_of) -> pd.DataFrame:
    """The split the source folders already have (--stages); warns when a video group is in two stages."""
    split_df = pd.DataFrame({"File_Name": eda.File_Name, "Stage": [stage_of[Path(f).stem] for f in eda.File_Name]})
    shared = eda.video[split_df.groupby(eda.video).Stage.transform("nunique").to_numpy() > 1].unique()
    if len(shared):
        print(f"warning: {len(shared)} video group(s) appear in more than one of the given stages "
              f"({', '.join(sorted(shared)[:5])}): frames of one scene on both sides (finer --clip?)", file=sys.stderr)
    split_df.attrs["stratify"] = "given"
    return split_df


def make_split(raw, proc, eda, info, args, given=None):
    """Split by video (or keep the `given` {name: stage}) and fill the processed folder; returns (split, metadata)."""
    split_df = given_split(eda, given) if given else split.split(eda, args.fractions, args.seed, args.stratify)
    build_processed(raw, proc, split_df)
    fractions = (split_df.Stage.value_counts(normalize=True).reindex(list(layout.STAGES), fill_value=0).round(4)
                 if given else dict(zip(layout.STAGES, args.fractions)))
    meta = {"name": args.split_name, "raw_data": args.name, "fractions": dict(fractions),
            "seed": args.seed, "stratify": split_df.attrs["stratify"],
            "images": {k: int((split_df.Stage == k).sum()) for k in layout.STAGES}}
    layout.write_manifest(proc, type="split_data", **meta, source=info["source"])
    return split_df, meta


def main(argv=None):
    """Import, write the raw folder, split, write the processed folder, log both; print where they went."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parse_args(argv)
    check_args(args)
    t0 = time.time()
    items, info, given = get_items(args)
    raw_dir, proc_dir = args.out / args.name, args.out / args.split_name
    with utils.atomic_dir(raw_dir) as raw, utils.atomic_dir(proc_dir) as proc:  # both or neither
        done, eda = make_raw(raw, items, info, args, shlex.join(["python", "data/prepare.py", *argv]))
        split_df, meta = make_split(raw, proc, eda, info, args, given)
    t_data = time.time() - t0
    print(summarize(eda).to_string(float_format=lambda v: f"{v:.4f}"))
    print(split.describe(eda, split_df).to_string())
    up = sp = "disabled (--no-wandb)"
    if not args.no_wandb:
        up, raw_art = log_raw(raw_dir, eda, done, info, args)
        sp = log_split(proc_dir, split_df, raw_art, meta, args)
    print(f"raw data:   {raw_dir} ({len(eda)} images, {eda.video.nunique()} videos; {t_data:.1f} s)")
    print(f"processed:  {proc_dir} ({', '.join(f'{k} {v}' for k, v in meta['images'].items())})")
    print(f"W&B upload: {up}\nW&B split:  {sp}\ntotal {time.time() - t0:.1f} s")


if __name__ == "__main__":
    utils.run_cli(main)
