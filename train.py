"""Train a U-Net on a processed dataset: W&B logging (online or offline), per-class IoU, a local run record.

    python train.py --arch resnet18 --lr 2e-3
    python train.py --data path/to/processed_folder --img_size 96 --epochs 3 --pretrained False
    python train.py --recipe person --data artifacts/camvid     # a named configuration (params.RECIPES)

Outputs go to <output>/unet-<dataset>/<run-name>-<run-id>/: model.safetensors + meta.json (best epoch by miou),
metrics.jsonl (one line per epoch, also appended to $SWEEP_METRICS_FILE when set), config.json, summary.json,
train_images.json (content hashes of the training images, for eval's overlap check).
The run's life (W&B init, run folder, summary, model artifact, exit code) is `bddseg.training_run.TrainingRun`.
"""
import argparse
import sys
from functools import partial
from pathlib import Path

import torch
import wandb

from bddseg import config as cfg  # before fastai: bddseg/__init__.py silences fastai's torch.jit.script warning
from fastai.callback.progress import ProgressCallback
from fastai.learner import Learner
from fastai.optimizer import OptimWrapper
from fastai.torch_core import set_seed
from fastcore.basics import noop
from safetensors.torch import load_file

from bddseg import device as dev
from bddseg.averaging import EMAWeights
from bddseg.checkpoint import WEIGHTS
from bddseg.eda import classes_in_split
from bddseg.cli import run_cli, str2bool
from bddseg.loaders import MAX_COLOR_JITTER, MAX_ZOOM, get_dls
from bddseg.losses import CLASS_WEIGHTS, LOSSES, class_frequencies, loss_from_config
from bddseg.metrics import seg_metrics
from bddseg.models import DECODER_WIDTH, build_model, param_groups
from bddseg.layout import image_aspect
from bddseg.operating_point import AutoCrop, probe_img_size
from bddseg.precision import AutocastMixedPrecision, StopOnNonFinite
from bddseg.lineage import manifest_sha256
from bddseg.record import BestCheckpoint, MetricsLog, WandbMetrics
from bddseg.resolve import dataset_name, resolve_dataset
from bddseg.schedule import AnnealClassWeights, TimeBudget, UnfreezeAt
from bddseg.tables import prediction_table
from bddseg.training_run import TrainingRun

# fastai Adam's hyperparameters on torch's fused AdamW kernel: the optimizer step is 3-5x faster than fastai's Adam
OPT_FUNC = partial(OptimWrapper, opt=partial(torch.optim.AdamW, betas=(0.9, 0.99), eps=1e-5, fused=True))
ENCODER_LR_DIV = 10  # a pretrained encoder trains at lr / 10 once unfrozen (discriminative learning rates)
MAX_BUDGET_EPOCHS = 10_000  # with --time_budget the clock, not the epoch count, ends training


def parse_args(argv=None):
    """Command-line hyperparameters (course defaults, or a --recipe's); accepts `--k v` and `--k=v` as `wandb agent`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", default=None, choices=list(cfg.RECIPES),
                   help="named configuration whose values become the defaults (explicit flags still win)")
    p.add_argument("--img_size", type=parse_height, default=180,
                   help="frame height in pixels (width: --aspect times it); auto, with --time_budget: the largest "
                        "that buys enough steps on this machine (bddseg/operating_point.py)")
    p.add_argument("--aspect", type=parse_aspect, default="16:9",
                   help="frame width:height (BDD100K 16:9; CamVid's own frames are 4:3), a number, or auto: the "
                        "training images' own")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--augment", type=str2bool, default=True,
                   help="random flip, zoom/crop, brightness, contrast (and colour: --color_jitter)")
    p.add_argument("--max_zoom", type=float, default=MAX_ZOOM,
                   help="with --augment, training frames are zoomed in by a factor drawn uniformly from 1..max_zoom "
                        "(2: people up to twice as tall)")
    p.add_argument("--color_jitter", type=float, default=0.0,
                   help="with --augment, per-frame gamma 2**(+-2j), channel gains 1+-j and saturation 1+-2j for j = "
                        "this (0 = off; light and white balance unlike the training drives')")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--pretrained", type=str2bool, default=True,
                   help="ImageNet weights: cached, else downloaded when the network answers (else random init)")
    p.add_argument("--mixed_precision", type=str2bool, default=True, help="bf16/fp16 autocast where supported")
    p.add_argument("--arch", default="resnet18", help="encoder: torchvision name or timm/<name>")
    p.add_argument("--decoder_width", type=int, default=DECODER_WIDTH,
                   help="U-Net decoder channels at full size, doubling per halving up to 16x its value (8: a "
                        "1.35-1.4x faster step for resnet18 at 180 px)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--log_preds", type=str2bool, default=False, help="W&B table of validation predictions")
    p.add_argument("--data", default=cfg.PROCESSED_DATA_AT, help="processed dataset: artifact name or folder")
    p.add_argument("--loss", default="ce", choices=LOSSES)
    p.add_argument("--class_weights", default="none", choices=CLASS_WEIGHTS,
                   help="pixel-frequency class weights from the train masks (wce defaults to sqrt_inv)")
    p.add_argument("--weight_anneal", type=str2bool, default=False,
                   help="class weights go from their values to 1 over the schedule (plain weights at the end)")
    p.add_argument("--freeze_epochs", type=int, default=1,
                   help="epochs with the pretrained encoder frozen before unfreezing (0 = never)")
    p.add_argument("--num_workers", type=int, default=0, help="threads for the one-time decode (0 = one per core)")
    p.add_argument("--project", default=None, help="W&B project (default unet-<dataset>)")
    p.add_argument("--output", default=str(cfg.MODELS_DIR), help="where run folders (checkpoints) go")
    p.add_argument("--registry", default=None,
                   help="also link the model into this W&B Registry collection (wandb-registry-model/NAME; online)")
    p.add_argument("--time_budget", type=float, default=0,
                   help="minutes of fitting: the one-cycle schedule follows the clock, --epochs is ignored (0 = off)")
    p.add_argument("--crop", type=parse_height, default=0,
                   help="train on random crops this many px high (at --aspect) of the img_size frames (0 = whole "
                        "frames; auto, with --time_budget: picked from this machine's step time, "
                        "bddseg/operating_point.py)")
    p.add_argument("--focus", type=float, default=0.0,
                   help="share of training crops centred on a pixel of a rare class (light, sign, person, bicycle)")
    p.add_argument("--oversample", type=float, default=1.0,
                   help="draw training images that contain a rare class this many times as often (1 = off)")
    p.add_argument("--ema_decay", type=float, default=0.0,
                   help="validate and checkpoint an EMA of the weights with this decay per step (0 = off; 0.99 "
                        "averages about the last 100 steps)")
    recipe = p.parse_known_args(argv)[0].recipe
    if recipe:
        p.set_defaults(**cfg.RECIPES[recipe])
    args = p.parse_args(argv)
    for name in ("img_size", "batch_size", "epochs", "decoder_width"):
        if getattr(args, name) != "auto" and getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.lr <= 0 or args.freeze_epochs < 0 or args.num_workers < 0 or args.time_budget < 0:
        p.error("--lr must be > 0; --freeze_epochs, --num_workers and --time_budget must be >= 0")
    if args.img_size == "auto" and args.crop not in (0, "auto"):
        p.error(f"--img_size auto times whole frames: it does not combine with --crop {args.crop} (use 0 or auto)")
    if (args.crop not in (0, "auto") and not 0 < args.crop <= args.img_size) or not 0 <= args.focus <= 1 \
            or args.oversample < 1:
        p.error(f"--crop must be 0..img_size ({args.img_size}) or auto, --focus 0..1 and --oversample >= 1")
    if not args.max_zoom >= 1:  # also refuses nan
        p.error(f"--max_zoom must be >= 1 (1 = no zoom), got {args.max_zoom}")
    if not 0 <= args.color_jitter <= MAX_COLOR_JITTER:  # also refuses nan
        p.error(f"--color_jitter must be in [0, {MAX_COLOR_JITTER:g}] (0 = off), got {args.color_jitter}")
    if not 0 <= args.ema_decay < 1:
        p.error(f"--ema_decay must be in [0, 1) (0 = off), got {args.ema_decay}")
    for name in ("crop", "img_size"):
        if getattr(args, name) == "auto" and not args.time_budget:
            p.error(f"--{name} auto picks a size for a --time_budget: give one, or a size")
    return args


def parse_height(text):
    """'auto' or a height in pixels (--img_size, --crop)."""
    if str(text).lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a height in pixels or auto, got {text!r}")


def parse_aspect(text):
    """'W:H', a number or 'auto', kept as given (a sweep value); `aspect_ratio` turns W:H into width / height."""
    if str(text).lower() == "auto":
        return "auto"
    try:
        aspect_ratio(text)
    except (ValueError, ZeroDivisionError):
        hint = " (YAML reads an unquoted 4:3 as the number 243: quote it)" if str(text).isdigit() else ""
        raise argparse.ArgumentTypeError(f"expected a width:height ratio such as 16:9 or 1.5, got {text!r}{hint}")
    return str(text)


def aspect_ratio(text) -> float:
    """Width / height of '16:9' or '1.78'."""
    w, colon, h = str(text).partition(":")
    ratio = float(w) / float(h if colon else 1)
    if not 0.25 <= ratio <= 4 or float(w) <= 0:
        raise ValueError(f"aspect {text} outside 1:4..4:1")
    return ratio


def img_height(config) -> int:
    """The frame height: --img_size, or for auto what the probe picked (`img_size_picked`, see pick_frame)."""
    return config.img_size_picked if config.img_size == "auto" else config.img_size


def frame_size(config, height=None) -> tuple:
    """(h, w) of a frame (or crop) `height` px high (default the frame height) at the configured aspect (for auto,
    the training images' own: `aspect_picked`)."""
    aspect = config.aspect_picked if config.aspect == "auto" else aspect_ratio(config.aspect)
    return cfg.frame_size(height or img_height(config), aspect)


def pick_frame(config, data_path, device) -> dict:
    """What --aspect auto and --img_size auto stand for on this data and machine, for the run's config."""
    picked = {"aspect_picked": round(image_aspect(data_path), 4)} if config.aspect == "auto" else {}
    if config.img_size == "auto":
        aspect = picked.get("aspect_picked") or aspect_ratio(config.aspect)

        def make_model():  # random init: the probe times steps, the weights do not matter
            return build_model(config.arch, len(cfg.BDD_CLASSES), False, [], config.decoder_width)[0]
        picked |= probe_img_size(make_model, partial(cfg.frame_size, aspect=aspect), config.batch_size,
                                 config.time_budget * 60, device, partial(dev.autocast_context, device,
                                 config.mixed_precision), dev.use_channels_last(device))
    return picked


def run_name(config, pretrained_loaded) -> str:
    """Run name from the int/categorical hyperparameters plus batch size and lr: resnet18-img180-bs8-lr2e-03-ce."""
    aspect = "" if str(config.aspect) == "16:9" else "x" + str(config.aspect).replace(":", "by")
    size = f"{img_height(config)}{'auto' if config.img_size == 'auto' else ''}"
    parts = [config.arch.replace("/", "-"), f"img{size}{aspect}", f"bs{config.batch_size}",
             f"lr{config.lr:.0e}", config.loss]
    parts += [f"dec{config.decoder_width}"] if config.decoder_width != DECODER_WIDTH else []
    parts += [config.class_weights] if config.class_weights != "none" else []
    parts += ["anneal"] if config.weight_anneal else []
    parts += [f"ema{config.ema_decay:g}"] if config.ema_decay else []
    parts += [] if config.augment else ["noaug"]
    parts += [f"zoom{config.max_zoom:g}"] if config.augment and config.max_zoom != MAX_ZOOM else []
    parts += [f"jitter{config.color_jitter:g}"] if config.augment and config.color_jitter else []
    parts += [f"crop{config.crop}"] if config.crop == "auto" or 0 < config.crop < img_height(config) else []
    parts += [f"tb{config.time_budget:g}m"] if config.time_budget else []
    parts += [] if pretrained_loaded else ["scratch"]
    return "-".join(parts)


def get_data(config, data_path, device):
    """In-memory fastai DataLoaders at the configured frame size (decoded once); crops and rare-class sampling."""
    size = frame_size(config)
    crop = frame_size(config, config.crop) if config.crop != "auto" and 0 < config.crop < img_height(config) else None
    return get_dls(data_path, size, config.batch_size, augment=config.augment, device=device,
                   threads=config.num_workers, seed=config.seed, out_size=crop, focus=config.focus,
                   oversample=config.oversample, channels_last=dev.use_channels_last(device), max_zoom=config.max_zoom,
                   color_jitter=config.color_jitter)


def get_learner(config, dls, device):
    """(Learner, model info, loss weights): U-Net, loss, one-accumulator metrics, autocast and NaN guard."""
    present = classes_in_split(dls.path, "train")  # at the masks' own resolution (eda.csv), not shrunk to img_size
    if present is None:  # a folder without eda.csv: the training masks as loaded
        present = {c for c, f in enumerate(class_frequencies(dls.train.masks)) if f > 0}
    absent = [c for c in cfg.BDD_CLASSES if c not in present]  # never predict what training never shows
    if absent:
        print(f"note: no {', '.join(cfg.BDD_CLASSES[c] for c in absent)} pixels in the training masks: "
              f"never predicted", file=sys.stderr)
    model, info = build_model(config.arch, len(cfg.BDD_CLASSES), config.pretrained, absent, config.decoder_width)
    if dev.use_channels_last(device):
        model = model.to(memory_format=torch.channels_last)
    loss_func, weights = loss_from_config(config.loss, config.class_weights, dls.train.masks)
    cbs = [StopOnNonFinite()]
    dtype = dev.amp_dtype(device, config.mixed_precision)
    if dtype is not None:
        cbs.append(AutocastMixedPrecision(device, dtype))
    learn = Learner(dls, model.to(device), loss_func=loss_func.to(device), opt_func=OPT_FUNC, splitter=param_groups,
                    metrics=seg_metrics(), cbs=cbs)
    if not sys.stdout.isatty():  # logs and sweep trials: MetricsLog prints plain lines instead of progress bars
        learn.remove_cb(ProgressCallback)
        learn.logger = noop
    return learn, info, weights


def train(config, learn, info, run_dir, save, record=None):
    """fit_one_cycle with the run-record callbacks; encoder frozen for the first freeze_epochs when pretrained."""
    loaded = info.get("pretrained_loaded", False)
    freeze = config.freeze_epochs if loaded else 0
    if config.freeze_epochs and not loaded:
        print(f"note: --freeze_epochs {config.freeze_epochs} ignored: no pretrained weights were loaded "
              f"(training from random init, nothing frozen)", file=sys.stderr)
    ids = {"run_id": wandb.run.id if wandb.run else None, "run_dir": str(run_dir)}  # sweep agent: trial -> folder
    cbs = [MetricsLog(run_dir / "metrics.jsonl", extra=ids, echo=not sys.stdout.isatty()),
           BestCheckpoint(save, monitor="miou"), *([WandbMetrics()] if wandb.run else [])]
    if config.ema_decay:
        cbs.append(EMAWeights(config.ema_decay))
    if config.weight_anneal:  # a no-op for a loss without class weights
        cbs.append(AnnealClassWeights())
    if freeze:
        learn.freeze()
        cbs.append(UnfreezeAt(freeze))
    n_epoch = config.epochs
    if config.time_budget:
        cbs.append(TimeBudget(config.time_budget * 60))
        if config.crop == "auto":
            cbs.append(AutoCrop(img_height(config), config.time_budget * 60, partial(frame_size, config), record))
        n_epoch = MAX_BUDGET_EPOCHS
        print(f"note: --time_budget {config.time_budget:g} min: the schedule follows the clock, --epochs is ignored",
              file=sys.stderr)
    lr = slice(config.lr / ENCODER_LR_DIV, config.lr) if loaded else config.lr
    learn.fit_one_cycle(n_epoch, lr, cbs=cbs)
    return cbs[0], cbs[1]


def final_metrics(learn, run_dir) -> dict:
    """Metrics of the best checkpoint, its weights reloaded from disk and scored on the validation set (final_*)."""
    learn.model.load_state_dict(load_file(run_dir / WEIGHTS))
    scores = learn.validate()
    names = ["valid_loss"] + [m.name for m in learn.metrics]
    return {f"final_{n}": float(s) for n, s in zip(names, scores)}


def derived_config(config, run, dls, learn, info, data_path, device, threads, data_artifact=None) -> dict:
    """What the run worked out beyond the flags (which data exactly, pretrained_loaded, precision, sizes)."""
    name, dataset = run_name(config, info.get("pretrained_loaded", False)), dataset_name(config.data)
    return {"dataset": dataset, "data_path": str(data_path), "data_artifact": data_artifact,
            "data_manifest_sha256": manifest_sha256(data_path), "project": run.project, "run_name": name,
            "run_dir": str(Path(config.output) / f"unet-{dataset}" / f"{name}-{run.id}"),
            "pretrained_loaded": bool(info.get("pretrained_loaded", False)),
            "pretrained_source": info.get("pretrained_source"), "device": str(device),
            "precision": dev.precision_name(device, config.mixed_precision), "threads": threads,
            "frame_size": list(frame_size(config)), "n_train": dls.train.n, "n_valid": dls.valid.n,
            "n_params": sum(p.numel() for p in learn.model.parameters())}


def log_predictions(run, config, learn, dls, device):
    """A W&B table of validation predictions of the best checkpoint (--log_preds True)."""
    autocast = lambda: dev.autocast_context(device, config.mixed_precision)  # noqa: E731
    run.log({"pred_table": prediction_table(learn.model, dls.valid, device, cfg.BDD_CLASSES, autocast=autocast)})


def main(argv=None):
    """Parse args -> get data -> get learner -> train -> log; exits non-zero unless the run finished."""
    args = parse_args(argv)
    with TrainingRun(args, project=args.project or f"unet-{dataset_name(args.data)}") as run:
        config = run.config
        threads, device = dev.set_threads(), dev.get_device()
        data = resolve_dataset(config.data, run.wandb)
        config.update(pick_frame(config, data.path, device), allow_val_change=True)
        set_seed(config.seed)
        dls = get_data(config, data.path, device)
        learn, info, weights = get_learner(config, dls, device)
        run.set_up({**derived_config(config, run.wandb, dls, learn, info, data.path, device, threads, data.artifact),
                    "class_weight_values": weights}, info)
        print(f"training {run.wandb.name} on {config.dataset} ({dls.train.n} train / {dls.valid.n} valid images, "
              f"{device} {config.precision}, {threads} threads) -> {run.dir}", file=sys.stderr)
        log, best = train(config, learn, info, run.dir, run.save, run.record)
        if best.best_epoch is None:
            raise RuntimeError("no epoch produced a finite miou: no checkpoint was saved")
        final = final_metrics(learn, run.dir)
        if config.log_preds:
            log_predictions(run.wandb, config, learn, dls, device)
        run.done(best, len(log.rows), final)
    if run.exit_code:
        sys.exit(run.exit_code)
    return run.summary


if __name__ == "__main__":
    run_cli(main)
