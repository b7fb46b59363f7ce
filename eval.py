"""Evaluate a trained U-Net on a held-out split: metrics, confusion matrices and a browsable report, in W&B and locally.

    python eval.py                                  # best local run (highest validation miou), test split
    python eval.py --run ID --split valid           # one local run by its W&B run id, on the validation split
    python eval.py --latest                         # the run saved last
    python eval.py --model models/unet-<data>/<run-name>-<id>    # a checkpoint folder
    python eval.py --sweep NAME                     # the best trial of an offline sweep
    python eval.py --artifact ENTITY/PROJECT/unet-<data>:best    # a W&B model artifact (W&B online only)
    python eval.py --tta                            # + horizontal-flip test-time augmentation
    python eval.py --data artifacts/<other_split> --split all   # every labelled image of another dataset

The data defaults to exactly the dataset the model was trained on (online: the artifact version it used); when the
local dataset's manifest differs from the one recorded in meta.json, eval refuses (exit 2) unless --data is given,
and then checks that no evaluated image was one the model trained on. Metrics are computed at the masks' own
resolution (logits resized back bilinearly, then argmax). The report lands in
eval/<run-name>-<split>[-tta]/index.html: JPEG thumbnails of every image, full-size overlays for the worst
--report_images (default 50), so its size stays bounded. The work is done in bddseg: lookup (which model),
eval_data (which images), evaluate (predict + metrics), eval_report (what is shown).
"""
import argparse
from pathlib import Path

from bddseg import config, eval_report, lookup
from bddseg.atomic import atomic_dir
from bddseg.cli import run_cli, str2bool
from bddseg.device import get_device, precision_name, set_threads
from bddseg.eval_data import SPLITS, data_ref, decode_workers, eval_loader, input_size, split_rows
from bddseg.evaluate import class_names, evaluate_split, per_class_table
from bddseg.inference import load_model
from bddseg.lineage import check_eval_data
from bddseg.resolve import resolve_data
from bddseg.wb import init_wandb, is_online, wandb_mode, where_logged


def parse_args(argv=None):
    """Command-line options (which model, which data, how)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", help="checkpoint folder (model.safetensors + meta.json)")
    which.add_argument("--run", help=f"run id of a local training run (folder under {config.MODELS_DIR})")
    which.add_argument("--latest", action="store_true", help="the most recently saved local run")
    which.add_argument("--sweep", help="offline sweep id: evaluate its best trial")
    which.add_argument("--artifact", help="W&B model artifact ENTITY/PROJECT/NAME:ALIAS (needs W&B online)")
    p.add_argument("--data", help="processed dataset folder or artifact name (default: the model's training data)")
    p.add_argument("--split", default="test", choices=SPLITS, help="'all' = every labelled image of the dataset")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--tta", type=str2bool, nargs="?", const=True, default=False,
                   help="horizontal-flip test-time augmentation (logits averaged)")
    p.add_argument("--mixed_precision", type=str2bool, default=True,
                   help="bf16/fp16 autocast under the same rule as training")
    p.add_argument("--num_workers", type=int, default=None,
                   help="image-decoding worker processes (0 = on threads in process; default: one per CPU beside a "
                        "GPU, 0 on a CPU)")
    p.add_argument("--report_images", type=int, default=eval_report.REPORT_IMAGES,
                   help="the worst K images get full-size overlays, raw masks and a W&B image (others: thumbnails)")
    p.add_argument("--out", default=None, help=f"report root folder (default {config.EVAL_DIR})")
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.report_images < 0:
        p.error("--batch_size must be >= 1 and --report_images >= 0")
    return args


def get_model(args, device):
    """(model in eval mode on device, meta, checkpoint folder) picked by --model/--run/--latest/--sweep/--artifact."""
    folder = lookup.model_dir(args.model, args.run, args.latest, args.sweep, args.artifact)
    return (*load_model(folder, device), folder)


def get_eval_data(meta, args, model_dir, run=None):
    """(dataset folder, rows of the split): --data, else exactly the data the model was trained on (online: its
    artifact version); checked against the model's classes and against the dataset identity it recorded."""
    online_ref = meta.get("data_artifact") if is_online(run) else None
    root = resolve_data(args.data or online_ref or data_ref(meta), run)
    rows = split_rows(root, args.split, meta, model_dir)
    check_eval_data(meta, model_dir, root, list(rows.File_Name), explicit=bool(args.data))
    return root, rows


def init_run(meta, args, model_dir):
    """W&B run (job_type='evaluation', online or offline by the project's rule), config copied from training."""
    run_config = {**(meta.get("config") or {}), "eval_split": args.split, "eval_tta": args.tta,
                  "eval_model_dir": str(model_dir), "train_run_id": meta.get("run_id")}
    project = meta.get("project") or f"unet-{meta.get('dataset', 'data')}"
    run = init_wandb(project=project, job_type="evaluation", config=run_config)
    if is_online(run) and args.artifact:
        run.use_artifact(args.artifact)  # lineage: this evaluation used that model
    return run


def describe_eval(meta, args, model_dir, root, df, device) -> dict:
    """What was evaluated and how: eval.json and the report's header."""
    return {"model_name": meta.get("run_name") or Path(model_dir).name,
            "model_dir": str(Path(model_dir).resolve()), "train_run_id": meta.get("run_id"),
            "arch": meta.get("arch"), "input_size": list(input_size(meta)), "data": str(root),
            "split": args.split, "images": len(df), "tta": args.tta,
            "precision": precision_name(device, args.mixed_precision), "device": str(device)}


def evaluate(model, meta, df, args, device, folder):
    """(metrics, cm, preds, W&B images) of the model over the rows; per-image report files go into `folder`."""
    workers = decode_workers(device) if args.num_workers is None else args.num_workers
    loader = eval_loader(df, meta, args.batch_size, workers)
    return evaluate_split(model, loader, meta, device, folder, args.split, args.tta, args.mixed_precision,
                          args.report_images)


def save_report(folder, name, info, metrics, cm, preds, meta, split):
    """Write the report folder (metrics, confusion matrices, index.html...); return the per-class table."""
    names = class_names(meta)
    per_class = per_class_table(metrics, cm, names, split)
    overall = {k: metrics[f"{split}_{k}"] for k in ("miou", "pixel_acc", "loss")}
    eval_report.write_eval_report(folder, f"Evaluation: {name}", info, metrics, cm, names, per_class, preds, overall)
    return per_class


def main(argv=None):
    """Evaluate one model on one split; write the local report and log to W&B."""
    args = parse_args(argv)
    set_threads()
    device = get_device()
    model, meta, model_dir = get_model(args, device)
    # online, the data may be a W&B artifact (downloaded + linked by the run); offline, bad data fails before any run
    run = init_run(meta, args, model_dir) if wandb_mode() == "online" else None
    try:
        root, df = get_eval_data(meta, args, model_dir, run)
        name = eval_report.report_name(meta, model_dir, root, args.split, args.tta, other_data=bool(args.data))
        run = run or init_run(meta, args, model_dir)
        run.name = f"eval-{name}"
        run.config.update({"eval_data": str(root), "eval_images": len(df)}, allow_val_change=True)
        out, info = Path(args.out or config.EVAL_DIR) / name, describe_eval(meta, args, model_dir, root, df, device)
        with atomic_dir(out) as tmp:
            metrics, cm, preds, images = evaluate(model, meta, df, args, device, tmp)
            per_class = save_report(tmp, name, info, metrics, cm, preds, meta, args.split)
        eval_report.log_wandb(run, metrics, out, preds, images, class_names(meta))
    except BaseException:
        if run is not None:
            run.finish(exit_code=1)
        raise
    wandb_where = where_logged(run)
    run.finish()
    eval_report.print_summary(per_class, metrics, args.split, info, out, wandb_where)
    return metrics


if __name__ == "__main__":
    run_cli(main)
