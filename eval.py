"""Evaluate a trained U-Net on a held-out split: metrics, confusion matrices and a browsable report, in W&B and locally.

`python eval.py` evaluates the best local run (highest validation miou) on the test split of the dataset it was
trained on. Metrics are computed at the masks' own resolution (logits resized back bilinearly, then argmax).
"""
import argparse
import math
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from fastprogress.fastprogress import progress_bar
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from sklearn.metrics import precision_recall_fscore_support

import params
import utils
from bddseg import layout, loaders, report, runs
from bddseg.checkpoint import load_checkpoint
from bddseg.device import autocast_context, get_device, precision_name, set_threads, use_channels_last
from bddseg.metrics import confusion, iou_from_confusion
from utils import UserError

SPLITS = ("test", "valid", "all")
MAX_PENDING = 16  # images queued for the report writer before the loop waits


def parse_args(argv=None):
    """Command-line options (which model, which data, how)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", help="checkpoint folder (model.safetensors + meta.json)")
    which.add_argument("--run", help="run id of a local training run (folder under params.MODELS_DIR)")
    which.add_argument("--latest", action="store_true", help="the most recently saved local run")
    which.add_argument("--sweep", help="offline sweep id: evaluate its best trial")
    which.add_argument("--artifact", help="W&B model artifact ENTITY/PROJECT/NAME:ALIAS (needs W&B online)")
    p.add_argument("--data", help="processed dataset folder or artifact name (default: the model's training data)")
    p.add_argument("--split", default="test", choices=SPLITS, help="'all' = every labelled image of the dataset")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--tta", type=utils.str2bool, nargs="?", const=True, default=False,
                   help="horizontal-flip test-time augmentation (logits averaged)")
    p.add_argument("--mixed_precision", type=utils.str2bool, default=True,
                   help="bf16/fp16 autocast under the same rule as training")
    p.add_argument("--num_workers", type=int, default=1, help="image-decoding worker processes (0 = in process)")
    p.add_argument("--out", default=None, help=f"report root folder (default {params.EVAL_DIR})")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error("--batch_size must be >= 1")
    return args


# ------------------------------------------------------------------ model
def download_artifact(ref) -> Path:
    """Download a W&B model artifact to params.ARTIFACTS_DIR/models/ (online only)."""
    if utils.wandb_mode() != "online":
        raise UserError(f"--artifact {ref}: W&B model artifacts need W&B online (an API key, WANDB_MODE not "
                        f"offline); offline, evaluate a local checkpoint with --model DIR or --run RUN_ID")
    import wandb
    try:
        art = wandb.Api().artifact(ref, type="model")
        return Path(art.download(root=str(params.ARTIFACTS_DIR / "models" / art.name.replace(":", "-"))))
    except Exception as e:
        raise UserError(f"--artifact {ref}: could not fetch the model artifact ({e})") from None


def get_model_dir(args) -> Path:
    """Checkpoint folder chosen by --model / --run / --latest / --sweep / --artifact, else the best local run."""
    if args.model:
        return Path(args.model)
    if args.run:
        return runs.find_run(args.run)
    if args.latest:
        return runs.latest_run()
    if args.sweep:
        from bddseg.sweeper.study import best_trial
        trial = best_trial(args.sweep)
        if not trial.get("run_dir"):
            raise UserError(f"sweep {args.sweep!r}: its best trial has no run folder recorded")
        return Path(trial["run_dir"])
    if args.artifact:
        return download_artifact(args.artifact)
    return runs.best_run()


def get_model(args, device):
    """(model in eval mode on device, meta, folder): rebuilt from the checkpoint's meta.json alone."""
    folder = get_model_dir(args)
    model, meta = load_checkpoint(folder, device=device)
    model.eval()
    if use_channels_last(device):
        model = model.to(memory_format=torch.channels_last)
    return model, meta, folder


# ------------------------------------------------------------------ data
def data_ref(meta, args):
    """The dataset to evaluate on: --data, else the training folder if it still exists, else the dataset name."""
    if args.data:
        return args.data
    for path in (meta.get("data_path"), (meta.get("config") or {}).get("data")):
        if path and Path(path).is_dir():
            return path
    return meta.get("dataset")


def check_classes(root, meta, model_dir):
    """Refuse a dataset whose classes (manifest.json) differ from the model's (meta.json)."""
    path = Path(root) / layout.MANIFEST
    if not path.exists():
        print(f"warning: {path} missing: the dataset's classes cannot be checked against the model's",
              file=sys.stderr)
        return
    data = {str(k): v for k, v in layout.read_manifest(root).get("classes", {}).items()}
    model = {str(k): v for k, v in meta["classes"].items()}
    if data != model:
        raise UserError(f"{path}: the dataset's classes {data} differ from the model's {model} "
                        f"({Path(model_dir) / runs.META}); evaluate it with a model trained on these classes")


def labelled_images(root) -> pd.DataFrame:
    """Every image of a dataset folder that has a mask (for --split all on a folder without data_split.csv)."""
    files = sorted(p.name for p in (Path(root) / layout.IMAGES).glob("*") if layout.label_path(root, p.name).exists())
    return pd.DataFrame({"File_Name": files, "Stage": "all",
                         "image": [str(layout.image_path(root, f)) for f in files],
                         "label": [str(layout.label_path(root, f)) for f in files]})


def get_data(meta, args, model_dir, run=None):
    """(dataset folder, rows of the split to evaluate), after checking the folder and its classes."""
    root = utils.resolve_data(data_ref(meta, args), run)
    has_split = (root / layout.SPLIT_CSV).exists()
    if has_split or args.split != "all":
        loaders.check_dataset(root)
    check_classes(root, meta, model_dir)
    df = layout.read_split(root, None if args.split == "all" else args.split) if has_split else labelled_images(root)
    if df.empty:
        where = root / (layout.SPLIT_CSV if has_split else layout.IMAGES)
        raise UserError(f"{where}: no labelled images for split {args.split!r}")
    return root, df


class EvalImages(Dataset):
    """Images resized to the model's input size exactly as in training; masks at their own resolution."""

    def __init__(self, df, size, n_classes):
        self.images, self.labels, self.size, self.n_classes = list(df.image), list(df.label), size, n_classes

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        try:
            return self.load(i)
        except UserError as e:
            return e  # raised in the main process: one clear line instead of a worker traceback

    def load(self, i):
        """(input uint8 3 x h x w, mask uint8 H x W, report thumbnail, i); UserError naming a bad file."""
        img, _ = loaders.load_pair(self.images[i], self.labels[i], self.size)
        with Image.open(self.labels[i]) as m:
            mask = np.asarray(m)
        bad = np.setdiff1d(np.unique(mask), [*range(self.n_classes), params.IGNORE])
        if bad.size:
            raise UserError(f"{self.labels[i]}: mask values {bad.tolist()} outside the classes 0..{self.n_classes - 1}"
                            f" and {params.IGNORE}")
        thumb = report.read_thumbnail(self.images[i], report.thumbnail_size(*mask.shape))
        return torch.from_numpy(img.copy()).permute(2, 0, 1), torch.from_numpy(mask.copy()), thumb, i


def collate(items):
    """Stack the (same-size) inputs; masks and report thumbnails, which may differ in size, stay lists."""
    errors = [it for it in items if isinstance(it, UserError)]
    if errors:
        return errors[0]
    xs, masks, thumbs, idx = zip(*items)
    return torch.stack(xs), list(masks), list(thumbs), list(idx)


def input_size(meta) -> tuple:
    """(h, w) the model was trained at: meta's frame_size, else the 16:9 frame of its img_size (height)."""
    size = meta.get("frame_size") or meta["img_size"]
    return tuple(size) if isinstance(size, (list, tuple)) else params.frame_size(size)


def get_loader(df, meta, args):
    """Batched, ordered loader over the split."""
    ds = EvalImages(df, input_size(meta), len(meta["classes"]))
    return DataLoader(ds, batch_size=args.batch_size, shuffle=False, collate_fn=collate,
                      num_workers=args.num_workers, persistent_workers=False)


# ------------------------------------------------------------------ predict + metrics
def forward(model, x, tta=False):
    """Logits N x C x H x W; with tta, averaged with the logits of the horizontally flipped batch."""
    logits = model(x)
    if tta:
        logits = (logits + model(x.flip(-1)).flip(-1)) / 2
    return logits


def predict(model, loader, device, tta=False, mixed_precision=True):
    """Yield (row index, thumbnail HxWx3 uint8, mask, prediction, loss sum) per image, at the mask's resolution."""
    channels_last = use_channels_last(device)
    with torch.inference_mode():
        for batch in progress_bar(loader, leave=False):
            if isinstance(batch, UserError):
                raise batch
            x, masks, thumbs, idx = batch
            xb = x.to(device).float().div_(255)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, mixed_precision):
                logits = forward(model, xb, tta)
            logits = logits.float().contiguous(memory_format=torch.channels_last)  # argmax over C: 4x faster
            for j, (mask, thumb, i) in enumerate(zip(masks, thumbs, idx)):
                target = mask.to(device).long()
                up = F.interpolate(logits[j:j + 1], size=tuple(target.shape), mode="bilinear", align_corners=False)
                loss = F.cross_entropy(up, target[None], ignore_index=params.IGNORE, reduction="sum").item()
                yield i, thumb, mask.numpy(), up.argmax(1)[0].cpu().numpy(), loss


def precision_recall_f1(cm) -> dict:
    """Per-class pixel precision, recall and F1 by sklearn, fed the confusion matrix as weighted (true, pred) cells.

    Exactly sklearn's numbers over every scored pixel (ignore pixels are not in the matrix), without a second pass
    over the pixels: a per-pixel torchmetrics update cost as much as the model's forward at BDD mask sizes.
    """
    n = len(cm)
    true, pred = np.divmod(np.arange(n * n), n)
    p, r, f1, _ = precision_recall_fscore_support(true, pred, sample_weight=np.asarray(cm).ravel(), labels=range(n),
                                                  zero_division=0)
    return {"precision": p, "recall": r, "f1": f1}


def final_metrics(cm, loss_sum, keys, split) -> dict:
    """`<split>_miou`, `<split>_<class>_iou`, `<split>_pixel_acc`, per-class precision/recall/F1, `<split>_loss`."""
    m = iou_from_confusion(cm, keys, prefix=f"{split}_")
    for name, values in precision_recall_f1(cm).items():
        m.update({f"{split}_{k}_{name}": float(v) for k, v in zip(keys, values)})
    n = int(np.asarray(cm).sum())
    m[f"{split}_loss"] = loss_sum / n if n else math.nan
    return m


def per_class_table(metrics, cm, names, split) -> pd.DataFrame:
    """One row per class: IoU, precision, recall, F1, true and predicted pixel shares."""
    keys, share = [params.class_key(n) for n in names], report.pixel_share(cm, names)
    return pd.DataFrame({"class": names,
                         **{s: [metrics[f"{split}_{k}_{s}"] for k in keys]
                            for s in ("iou", "precision", "recall", "f1")},
                         "true_share": share.true_share, "pred_share": share.pred_share})


# ------------------------------------------------------------------ W&B + report
def init_run(meta, args, model_dir):
    """W&B run (job_type='evaluation', online or offline by the project's rule), config copied from training."""
    config = {**(meta.get("config") or {}), "eval_split": args.split, "eval_tta": args.tta,
              "eval_model_dir": str(model_dir), "train_run_id": meta.get("run_id")}
    project = meta.get("project") or f"unet-{meta.get('dataset', 'data')}"
    run = utils.init_wandb(project=project, job_type="evaluation", config=config)
    if utils.is_online(run) and args.artifact:
        run.use_artifact(args.artifact)  # lineage: this evaluation used that model
    return run


def wandb_image(img_t, true_t, pred_t, class_labels):
    """wandb.Image of a thumbnail with the true and predicted masks as interactive overlays."""
    import wandb
    return wandb.Image(img_t, masks={"predictions": {"mask_data": pred_t, "class_labels": class_labels},
                                     "ground_truth": {"mask_data": true_t, "class_labels": class_labels}})


def log_wandb(run, metrics, folder, preds, images, names):
    """Metrics to the run summary; confusion matrices and the predictions table (worst person IoU first)."""
    import wandb
    run.summary.update({k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))})
    iou_cols = [f"{params.class_key(n)}_iou" for n in names]
    table = wandb.Table(columns=["File_Name", "Images", *[f"iou_{n}" for n in names], "miou"])
    for r in preds.to_dict("records"):
        table.add_data(r["file"], images[r["file"]], *[r[c] for c in iou_cols], r["miou"])
    run.log({"confusion_matrix": wandb.Image(str(folder / report.CM_PNG)),
             "confusion_matrix_counts": wandb.Image(str(folder / report.CM_COUNTS_PNG)),
             "predictions": table})


def where_logged(run) -> str:
    """'online: <url>' or 'offline: <run folder>' (sync it later with `wandb sync`)."""
    return f"online: {run.url}" if utils.is_online(run) else f"offline: {Path(run.dir).parent}"


def print_summary(per_class, metrics, split, info, folder, wandb_where):
    """One screen: per-class table, miou, pixel accuracy, loss, and where the report and the W&B run are."""
    print(f"\n{info['model_name']} on {info['data']} [{split}, {info['images']} images, "
          f"tta={'on' if info['tta'] else 'off'}, {info['precision']}]")
    print(per_class.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-"))
    print(f"{split}_miou {metrics[f'{split}_miou']:.4f}   {split}_pixel_acc {metrics[f'{split}_pixel_acc']:.4f}   "
          f"{split}_loss {metrics[f'{split}_loss']:.4f}")
    print(f"report: {folder / report.INDEX}")
    print(f"W&B run {wandb_where}")


def report_name(meta, model_dir, root, args) -> str:
    """Report folder name: <run-name>[-<dataset>]-<split>[-tta] (dataset only when not the training one)."""
    name = meta.get("run_name") or Path(model_dir).name
    if args.data and Path(root).name != meta.get("dataset"):
        name += f"-{Path(root).name}"
    return f"{name}-{args.split}" + ("-tta" if args.tta else "")


def class_names(meta) -> list:
    """Class names in id order from meta.json's {id: name}."""
    return [name for _, name in sorted((int(k), v) for k, v in meta["classes"].items())]


def save_files(folder, stem, thumb, mask, pred, class_labels):
    """Report PNGs and the W&B image of one prediction: (relative paths, wandb.Image). Runs on the writer thread."""
    thumbs = report.thumbnails(thumb, mask, pred)
    return report.save_example(folder, stem, *thumbs, pred), wandb_image(*thumbs, class_labels)


def evaluate(model, meta, df, args, device, folder):
    """Run the model over the split, writing per-image files into `folder`; (metrics, cm, preds, W&B images)."""
    names = class_names(meta)
    keys, n_classes = [params.class_key(n) for n in names], len(names)
    class_labels = {**dict(enumerate(names)), params.IGNORE: "ignore"}
    cm = np.zeros((n_classes, n_classes), np.int64)
    loss_sum, rows, jobs, pending = 0.0, [], {}, deque()
    with ThreadPoolExecutor(1) as writer:  # PNG encoding (GIL released) overlaps the next batch
        for i, thumb, mask, pred, loss in predict(model, get_loader(df, meta, args), device, args.tta,
                                                  args.mixed_precision):
            file = df.File_Name.iloc[i]
            img_cm = confusion(torch.from_numpy(pred), torch.from_numpy(mask), n_classes).numpy()
            cm += img_cm
            loss_sum += loss
            rows.append({"file": file, **iou_from_confusion(img_cm, keys)})
            jobs[file] = writer.submit(save_files, folder, Path(file).stem, thumb, mask, pred, class_labels)
            pending.append(jobs[file])
            if len(pending) > MAX_PENDING:  # bound the memory held by queued images
                pending.popleft().result()
    done = {f: j.result() for f, j in jobs.items()}
    preds = report.worst_first(pd.DataFrame([{**r, **done[r["file"]][0]} for r in rows]), key="person_iou")
    return final_metrics(cm, loss_sum, keys, args.split), cm, preds, {f: d[1] for f, d in done.items()}


def main(argv=None):
    """Evaluate one model on one split; write the local report and log to W&B."""
    args = parse_args(argv)
    set_threads()
    device = get_device()
    model, meta, model_dir = get_model(args, device)
    # online, the data may be a W&B artifact (downloaded + linked by the run); offline, bad data fails before any run
    run = init_run(meta, args, model_dir) if utils.wandb_mode() == "online" else None
    try:
        root, df = get_data(meta, args, model_dir, run)
        name = report_name(meta, model_dir, root, args)
        run = run or init_run(meta, args, model_dir)
        run.name = f"eval-{name}"
        run.config.update({"eval_data": str(root), "eval_images": len(df)}, allow_val_change=True)
        out = Path(args.out or params.EVAL_DIR) / name
        info = {"model_name": meta.get("run_name") or Path(model_dir).name,
                "model_dir": str(Path(model_dir).resolve()), "train_run_id": meta.get("run_id"),
                "arch": meta.get("arch"), "input_size": list(input_size(meta)), "data": str(root),
                "split": args.split, "images": len(df), "tta": args.tta,
                "precision": precision_name(device, args.mixed_precision), "device": str(device)}
        with utils.atomic_dir(out) as tmp:
            metrics, cm, preds, images = evaluate(model, meta, df, args, device, tmp)
            names = class_names(meta)
            per_class = per_class_table(metrics, cm, names, args.split)
            overall = {k: metrics[f"{args.split}_{k}"] for k in ("miou", "pixel_acc", "loss")}
            report.write_report(tmp, f"Evaluation: {name}", info, metrics, cm, names, per_class, preds, overall)
        log_wandb(run, metrics, out, preds, images, names)
    except BaseException:
        if run is not None:
            run.finish(exit_code=1)
        raise
    wandb_where = where_logged(run)
    run.finish()
    print_summary(per_class, metrics, args.split, info, out, wandb_where)
    return metrics


if __name__ == "__main__":
    utils.run_cli(main)
