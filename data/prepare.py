"""Data step: import street scenes with masks (synthetic by default, BDD100K 10k, or any folder), write the raw
artifact (images, 7-class masks, EDA), split it by video into train/valid/test, and log both to W&B.

    python data/prepare.py                                    # 1000 synthetic 640x360 frames
    python data/prepare.py --source bdd100k --root ~/data/bdd100k
    python data/prepare.py --source folder --images camvid/train --masks camvid/trainannot --mapping camvid
    python data/prepare.py --source folder --images camvid/train camvid/val --masks camvid/trainannot \
        camvid/valannot --stages train,valid --mapping camvid-sign --clip 300     # keep the data's own split
"""
import argparse
import shlex
import sys
import time
from pathlib import Path

from bddseg import config, layout, sources, split, synthetic
from bddseg.atomic import atomic_dir
from bddseg.cli import UserError, run_cli
from bddseg.data_artifacts import TABLE_MAX_ROWS, log_raw, log_split
from bddseg.eda import get_eda, summarize
from bddseg.importer import build_processed, check_problems, import_all, write_source_note

SOURCE_OPTIONS = {"synthetic": {"n", "size", "frames_per_video"}, "bdd100k": {"root", "limit"},
                  "folder": {"images", "masks", "mapping", "video_delim", "clip", "limit", "stages", "hold_out"}}


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
    p.add_argument("--hold-out", type=lambda t: tuple(v.strip() for v in t.split(",") if v.strip()),
                   help="folder, with --stages: these video groups of the train folders become the valid stage, "
                        "e.g. 0001TP (a selection set split from train by sequence)")
    p.add_argument("--mapping", default="identity",
                   help=f"folder: source id -> class, a preset ({', '.join(sources.MAPPINGS)}) or a JSON file")
    p.add_argument("--video-delim", help="folder: video = file stem before this (default '_' for camvid, else '-')")
    p.add_argument("--clip", type=int, default=0, help="folder: also group by frame number // CLIP (CamVid: 300)")
    p.add_argument("--limit", type=int, help="bdd100k/folder: import only the first N images (sorted by name)")
    p.add_argument("--skip-bad", action="store_true", help="drop bad image/mask pairs (listed) instead of failing")
    p.add_argument("--fractions", type=parse_fractions, default=split.FRACTIONS, help="train,valid,test (0.8,0.1,0.1)")
    p.add_argument("--stratify", default="auto", help="class key to stratify the split on (auto, none, person...)")
    p.add_argument("--out", type=Path, default=config.ARTIFACTS_DIR, help="where the artifact folders go")
    p.add_argument("--name", default=config.RAW_DATA_AT, help="raw artifact name")
    p.add_argument("--split-name", default=config.PROCESSED_DATA_AT, help="processed (split) artifact name")
    p.add_argument("--workers", type=int, default=config.cores(), help="worker processes (default: one per CPU)")
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
            raise UserError("--source bdd100k needs --root DIR (the folder holding images/10k)")
        items, mapping = sources.bdd100k_items(args.root, args.limit)
        return items, {"source": "bdd100k", "root": str(Path(args.root).resolve()), "mapping": mapping,
                       "limit": args.limit}, None
    if not (args.images and args.masks):
        raise UserError("--source folder needs --images DIR and --masks DIR")
    if len(args.images) != len(args.masks) or (args.stages and len(args.stages) != len(args.images)):
        raise UserError(f"{len(args.images)} --images folder(s), {len(args.masks)} --masks and "
                              f"{len(args.stages or ())} --stages: give one mask folder (and stage) per image folder")
    if len(args.images) > 1 and not args.stages:
        raise UserError("several --images folders need --stages (which stage each folder is)")
    delim = args.video_delim or ("_" if args.mapping.startswith("camvid") else "-")
    items, stages, mapping = [], {}, None
    for i, (images, masks) in enumerate(zip(args.images, args.masks)):
        found, mapping = sources.folder_items(images, masks, args.mapping, args.limit, delim, args.clip)
        items += found
        stages.update({it.name: args.stages[i] for it in found} if args.stages else {})
    if args.hold_out:
        stages = hold_out(items, stages, args.hold_out)
    names = [it.name for it in items]
    if len(set(names)) < len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:5]
        raise UserError(f"the --images folders share file names {dup}: every image needs its own name")
    return items, {"source": "folder", "images": " ".join(str(Path(f).resolve()) for f in args.images),
                   "masks": " ".join(str(Path(f).resolve()) for f in args.masks), "mapping": mapping,
                   "video_delim": delim, "clip": args.clip, "limit": args.limit,
                   "stages": ",".join(args.stages) if args.stages else None,
                   **({"hold_out": ",".join(args.hold_out)} if args.hold_out else {})}, stages or None


def hold_out(items, stages: dict, videos: tuple) -> dict:
    """{name: stage} with the train frames of `videos` moved to valid (a selection set split off by sequence)."""
    def held(video: str, names=videos) -> bool:  # a group 'seq' or, with --clip, 'seq@k': 'seq' takes all its clips
        return video in names or video.split("@")[0] in names
    train_videos = {it.video for it in items if stages[it.name] == "train"}
    unknown = [v for v in videos if not any(held(t, (v,)) for t in train_videos)]
    if unknown:
        raise UserError(f"--hold-out {','.join(unknown)}: no such video group in the train folders "
                        f"(they have {', '.join(sorted(train_videos)[:8])})")
    return {it.name: "valid" if stages[it.name] == "train" and held(it.video) else stages[it.name]
            for it in items}


def check_args(args):
    """Refuse option values that cannot work (or belong to another source), before anything is written."""
    defaults = vars(parse_args([]))
    foreign = set().union(*SOURCE_OPTIONS.values()) - SOURCE_OPTIONS[args.source]
    given = sorted(f"--{k.replace('_', '-')}" for k in foreign if getattr(args, k) != defaults[k])
    if given:
        raise UserError(f"{', '.join(given)} does not apply to --source {args.source}")
    if args.frames_per_video < 1 or (args.limit is not None and args.limit < 1) or args.workers < 1:
        raise UserError("--frames-per-video, --limit and --workers must be at least 1")
    if args.hold_out is not None and not (args.stages and args.hold_out):
        raise UserError("--hold-out VIDEO[,VIDEO] needs --stages (it moves video groups of the train folders to valid)")
    if args.stages and (args.fractions != defaults["fractions"] or args.stratify != defaults["stratify"]):
        raise UserError("--stages keeps the given split: --fractions and --stratify do not apply")
    if args.name == args.split_name:
        raise UserError(f"--name and --split-name are both {args.name!r}: the two folders need different names")


def make_raw(raw, items, info, args, command, given=None):
    """Fill the raw folder: images, masks, eda.csv, SOURCE.md, manifest.json; returns (imported, eda, manifest)."""
    done, problems, hashes = import_all(items, raw, args.workers, args.skip_bad, 0 if args.no_wandb else TABLE_MAX_ROWS,
                                        meanwhile=None if given else split.preload)  # the splitter, loaded meanwhile
    check_problems(problems, len(items), args.skip_bad, info.get("root") or info.get("images") or "synthetic")
    eda = get_eda(done)
    eda.to_csv(raw / layout.EDA_CSV, index=False)
    write_source_note(raw, args.name, info, problems, command)
    manifest = layout.write_manifest(raw, known=hashes, name=args.name, type="raw_data", source=info["source"],
                                     source_details=info, n_images=len(eda), n_videos=int(eda.video.nunique()),
                                     skipped=problems)
    return done, eda, manifest


def make_split(raw, proc, eda, info, args, raw_files, given=None):
    """Split by video (or keep the `given` {name: stage}) and fill the processed folder; returns (split, metadata)."""
    split_df = split.given_split(eda, given) if given else split.split(eda, args.fractions, args.seed, args.stratify)
    linked = build_processed(raw, proc, split_df, raw_files)
    fractions = (split_df.Stage.value_counts(normalize=True).reindex(list(layout.STAGES), fill_value=0).round(4)
                 if given else dict(zip(layout.STAGES, args.fractions)))
    meta = {"name": args.split_name, "raw_data": args.name, "fractions": dict(fractions),
            "seed": args.seed, "stratify": split_df.attrs["stratify"],
            "images": {k: int((split_df.Stage == k).sum()) for k in layout.STAGES}}
    layout.write_manifest(proc, known=linked, type="split_data", **meta, source=info["source"])
    return split_df, meta


def main(argv=None):
    """Import, write the raw folder, split, write the processed folder, log both; print where they went."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parse_args(argv)
    check_args(args)
    t0 = time.time()
    items, info, given = get_items(args)
    raw_dir, proc_dir = args.out / args.name, args.out / args.split_name
    with atomic_dir(raw_dir) as raw, atomic_dir(proc_dir) as proc:  # both or neither
        done, eda, manifest = make_raw(raw, items, info, args, shlex.join(["python", "data/prepare.py", *argv]), given)
        split_df, meta = make_split(raw, proc, eda, info, args, manifest["files"], given)
    t_data = time.time() - t0
    print(summarize(eda).to_string(float_format=lambda v: f"{v:.4f}"))
    print(split.describe(eda, split_df).to_string())
    up = sp = "disabled (--no-wandb)"
    if not args.no_wandb:
        up, raw_art = log_raw(raw_dir, eda, done, info, args.name)
        sp = log_split(proc_dir, split_df, raw_art, meta, args.split_name)
    print(f"raw data:   {raw_dir} ({len(eda)} images, {eda.video.nunique()} videos; {t_data:.1f} s)")
    print(f"processed:  {proc_dir} ({', '.join(f'{k} {v}' for k, v in meta['images'].items())})")
    print(f"W&B upload: {up}\nW&B split:  {sp}\ntotal {time.time() - t0:.1f} s")


if __name__ == "__main__":
    run_cli(main)
