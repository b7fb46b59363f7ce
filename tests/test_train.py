"""train.py: CLI parsing as `wandb agent` passes it, real offline runs (run folder, metrics lines, W&B offline run),
checkpoint round trip, pretrained-offline fallback, time budget, non-finite loss and SIGTERM handling."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import params
import train
from bddseg import config
from bddseg.checkpoint import load_checkpoint
from bddseg.device import autocast_context, use_channels_last
from bddseg.loaders import load_split
from bddseg.metrics import METRIC_KEYS, ConfusionAccumulator

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--img_size", "64", "--batch_size", "4", "--epochs", "1"]


# ------------------------------------------------------------------ CLI
def test_defaults_are_the_course_defaults():
    a = train.parse_args([])
    assert (a.img_size, a.batch_size, a.augment, a.epochs, a.lr, a.pretrained, a.mixed_precision, a.arch, a.seed,
            a.log_preds) == (180, 8, True, 10, 2e-3, True, True, "resnet18", 42, False)
    assert (a.data, a.loss, a.class_weights, a.freeze_epochs, a.num_workers, a.project, a.time_budget) == \
           (params.PROCESSED_DATA_AT, "ce", "none", 1, 0, None, 0)
    assert a.output == str(config.MODELS_DIR)


def test_wandb_agent_style_arguments():
    a = train.parse_args(["--lr=0.001", "--augment=False", "--pretrained=false", "--mixed_precision=0",
                          "--log_preds=1", "--batch_size", "4", "--arch=timm/resnet18", "--loss=focal"])
    assert a.lr == 0.001 and a.augment is False and a.pretrained is False and a.mixed_precision is False
    assert a.log_preds is True and a.batch_size == 4 and a.arch == "timm/resnet18" and a.loss == "focal"
    assert train.parse_args(["--arch", "resnet18", "--lr", "2e-3"]).lr == 2e-3


@pytest.mark.parametrize("bad", [["--augment=maybe"], ["--loss=hinge"], ["--class_weights=log"], ["--lr=-1"],
                                 ["--img_size=0"], ["--epochs=x"], ["--recipe=fast"], ["--crop=200"],
                                 ["--img_size=96", "--crop=120"], ["--focus=1.5"], ["--oversample=0.5"],
                                 ["--decoder_width=0"], ["--ema_decay=1"], ["--ema_decay=-0.1"],
                                 ["--aspect=wide"], ["--aspect=4:0"], ["--aspect=243"], ["--aspect=4:"],
                                 ["--aspect=-4:-3"], ["--img_size=big"], ["--max_zoom=0.5"], ["--max_zoom=nan"],
                                 ["--color_jitter=-0.1"], ["--color_jitter=0.6"], ["--color_jitter=nan"],
                                 ["--img_size=auto", "--time_budget=5", "--crop=128"]])
def test_bad_arguments_exit_2(bad, capsys):
    with pytest.raises(SystemExit) as e:
        train.parse_args(bad)
    assert e.value.code == 2 and "error" in capsys.readouterr().err


@pytest.mark.parametrize("aspect, frame, crop", [("4:3", (48, 64), (24, 32)), ("16:9", (48, 86), (24, 42)),
                                                 ("1.5", (48, 72), (24, 36))])
def test_aspect_sets_the_frame_and_crop_shapes(tiny_dataset, aspect, frame, crop):
    """--aspect: frames (and crops) img_size high at that width:height, recorded as frame_size for eval."""
    config = train.parse_args(["--img_size=48", f"--aspect={aspect}", "--crop=24", "--batch_size=4", "--max_zoom=2",
                               "--color_jitter=0.2"])
    assert train.frame_size(config) == frame and train.frame_size(config, 24) == crop
    dls = train.get_data(config, tiny_dataset, "cpu")
    x, y = dls.train.one_batch()
    assert x.shape[-2:] == y.shape[-2:] == crop and dls.valid.one_batch()[0].shape[-2:] == frame
    assert dls.train.augment.max_zoom == 2 and dls.train.augment.color_jitter == 0.2  # the flags reach the augmentation


def test_recipes_set_defaults_and_flags_win():
    for name, recipe in params.RECIPES.items():
        a = vars(train.parse_args(["--recipe", name]))
        assert a["recipe"] == name and {k: a[k] for k in recipe} == recipe
    a = train.parse_args(["--recipe=person", "--img_size", "120", "--loss=ce"])
    assert (a.img_size, a.loss, a.class_weights) == (120, "ce", params.RECIPES["person"]["class_weights"])
    assert train.parse_args([]).recipe is None and train.parse_args([]).crop == 0


def test_names():
    c = SimpleNamespace(arch="resnet18", img_size=180, batch_size=8, lr=2e-3, loss="ce", class_weights="none",
                        augment=True, time_budget=0, crop=0, weight_anneal=False, decoder_width=16, ema_decay=0,
                        aspect="16:9", max_zoom=1.25, color_jitter=0.0)
    assert train.run_name(c, True) == "resnet18-img180-bs8-lr2e-03-ce"
    narrow = SimpleNamespace(**{**vars(c), "decoder_width": 8})
    assert train.run_name(narrow, True) == "resnet18-img180-bs8-lr2e-03-ce-dec8"
    ema = SimpleNamespace(**{**vars(c), "ema_decay": 0.99})
    assert train.run_name(ema, True) == "resnet18-img180-bs8-lr2e-03-ce-ema0.99"
    zoom = SimpleNamespace(**{**vars(c), "max_zoom": 2.0})
    assert train.run_name(zoom, True) == "resnet18-img180-bs8-lr2e-03-ce-zoom2"
    jitter = SimpleNamespace(**{**vars(c), "color_jitter": 0.2})
    assert train.run_name(jitter, True) == "resnet18-img180-bs8-lr2e-03-ce-jitter0.2"
    assert train.run_name(SimpleNamespace(**{**vars(jitter), "augment": False}), True).endswith("-ce-noaug")
    assert train.parse_args(["--color_jitter=0.5"]).color_jitter == 0.5  # the largest allowed
    camvid = SimpleNamespace(**{**vars(c), "img_size": 240, "aspect": "4:3"})
    assert train.run_name(camvid, True) == "resnet18-img240x4by3-bs8-lr2e-03-ce"
    camvid.aspect = 1.5  # a number, as a W&B sweep's config may pass it
    assert train.run_name(camvid, True) == "resnet18-img240x1.5-bs8-lr2e-03-ce"
    picked = SimpleNamespace(**{**vars(c), "img_size": "auto", "img_size_picked": 152, "aspect": "auto"})
    assert train.run_name(picked, True) == "resnet18-img152autoxauto-bs8-lr2e-03-ce"
    assert train.run_name(c, False) == "resnet18-img180-bs8-lr2e-03-ce-scratch"
    c.arch, c.class_weights, c.augment, c.time_budget = "timm/convnext_tiny", "sqrt_inv", False, 20
    assert train.run_name(c, True) == "timm-convnext_tiny-img180-bs8-lr2e-03-ce-sqrt_inv-noaug-tb20m"
    c.crop = 120
    assert train.run_name(c, True) == "timm-convnext_tiny-img180-bs8-lr2e-03-ce-sqrt_inv-noaug-crop120-tb20m"
    assert train.dataset_name("me/proj/bdd_simple_1k_split:v3") == "bdd_simple_1k_split"
    assert train.dataset_name("/data/camvid_split/") == "camvid_split"


# ------------------------------------------------------------------ the schedule with pretrained weights
def test_freeze_then_unfreeze_with_discriminative_lr(tiny_dataset, tmp_path):
    """Pretrained weights cannot be had offline, so train() gets a model info saying they were loaded."""
    from fastai.callback.core import Callback

    config = train.parse_args(["--pretrained=False", "--img_size=32", "--batch_size=4", "--seed=0", "--freeze_epochs=1",
                               "--epochs=2", "--lr=1e-3"])
    dls = train.get_data(config, tiny_dataset, "cpu")
    learn, info, _ = train.get_learner(config, dls, "cpu")
    conv = learn.model.encoder.parameters().__next__()  # first encoder conv weight (not a BN parameter)
    seen = []

    class Probe(Callback):
        def before_epoch(self):
            self.w = conv.detach().clone()

        def after_epoch(self):
            lrs = [h["lr"] for h in self.opt.hypers]
            seen.append((conv.requires_grad, not torch.equal(self.w, conv.detach()), lrs[0] / lrs[1]))

    learn.add_cb(Probe())
    saved = []
    train.train(config, learn, {"pretrained_loaded": True}, tmp_path, lambda m, metrics, e: saved.append(e))
    assert [s[:2] for s in seen] == [(False, False), (True, True)]  # frozen and unchanged, then trained
    assert seen[1][2] == pytest.approx(1 / train.ENCODER_LR_DIV)
    assert saved and len(lines(tmp_path / "metrics.jsonl")) == 2


def test_ema_weights_are_validated_and_saved_while_the_live_weights_train(tiny_dataset, tmp_path):
    """--ema_decay: validation and the checkpoint see the EMA of the live weights (and BN statistics) over the
    steps so far, computed here independently; the live weights train on and are the learner's after the fit."""
    from fastai.callback.core import Callback

    decay = 0.6
    config = train.parse_args(["--pretrained=False", "--img_size=32", "--batch_size=4", "--seed=0", "--epochs=2",
                               f"--ema_decay={decay}"])
    dls = train.get_data(config, tiny_dataset, "cpu")
    learn, _, _ = train.get_learner(config, dls, "cpu")
    live, ema, validated = learn.model, {}, []
    floats = lambda m: {k: v.detach().double().clone() for k, v in m.state_dict().items()  # noqa: E731
                        if v.is_floating_point()}

    class Trajectory(Callback):
        order = 50  # after EMAWeights (0)

        def before_batch(self):
            if self.training:  # the optimizer trains the live model, in train mode (BatchNorm statistics update)
                assert self.learn.model is live and live.training

        def after_step(self):
            for k, v in floats(live).items():
                ema[k] = decay * ema[k] + (1 - decay) * v if k in ema else v

        def after_epoch(self):
            validated.append((self.learn.model is live, floats(self.learn.model), dict(ema)))

    learn.add_cb(Trajectory())
    saved = []
    train.train(config, learn, {}, tmp_path, lambda m, metrics, e: saved.append((e, floats(m))))
    assert len(validated) == 2 and saved and learn.model is live
    for is_live, state, expected in validated:
        assert not is_live and state.keys() == expected.keys()
        for k, v in expected.items():
            assert torch.allclose(state[k], v, rtol=1e-4, atol=1e-5), k
    for epoch, state in saved:  # what BestCheckpoint saved is what that epoch validated
        assert all(torch.equal(state[k], v) for k, v in validated[epoch - 1][1].items())
    last = floats(live)
    assert any(not torch.allclose(last[k], v, atol=1e-4) for k, v in validated[-1][2].items())  # EMA != live


# ------------------------------------------------------------------ real runs (subprocesses, offline, no API key)
def clean_env(tmp):
    """No API key, no WANDB_MODE: train.py itself must choose offline; everything written under tmp."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "SWEEP_METRICS_FILE"}
    env.update(HOME=str(tmp), NETRC=str(tmp / ".netrc"), WANDB_DIR=str(tmp), HF_HUB_OFFLINE="1",
               SWEEP_METRICS_FILE=str(tmp / "sweep_metrics.jsonl"), PYTHONUNBUFFERED="1")
    return env


def start(args, tmp, data):
    cmd = [sys.executable, str(ROOT / "train.py"), "--data", str(data), "--output", str(tmp / "models"), *args]
    return subprocess.Popen(cmd, cwd=tmp, env=clean_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def run(args, tmp, data, timeout=240):
    p = start(args, tmp, data)
    out, err = p.communicate(timeout=timeout)
    return SimpleNamespace(rc=p.returncode, out=out, err=err, tmp=tmp, runs=sorted((tmp / "models").glob("*/*")))


def lines(path):
    return [json.loads(s) for s in Path(path).read_text().splitlines()]


def wandb_record(tmp, run_id) -> bytes:
    """Raw bytes of the offline run's .wandb transaction log (protobuf: key names appear verbatim)."""
    files = list((tmp / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 1, f"no offline W&B run for {run_id} under {tmp / 'wandb'}"
    return files[0].read_bytes()


@pytest.fixture(scope="module")
def basic_run(tiny_dataset, tmp_path_factory):
    r = run([*FAST, "--pretrained", "False"], tmp_path_factory.mktemp("basic"), tiny_dataset)
    assert r.rc == 0, r.err[-3000:]
    return r


def test_run_writes_the_run_folder(basic_run, tiny_dataset):
    r = basic_run
    assert len(r.runs) == 1
    d = r.runs[0]
    assert d.parent.name == "unet-tiny_split" and d.name.startswith("resnet18-img64-bs4-lr2e-03-ce-scratch-")
    assert {p.name for p in d.iterdir()} == {"model.safetensors", "meta.json", "metrics.jsonl", "config.json",
                                             "summary.json", "train_images.json"}
    assert not [p for p in d.parent.iterdir() if p.name.startswith(".")]  # no temp folders left behind
    meta = json.loads((d / "meta.json").read_text())
    run_id = d.name.rsplit("-", 1)[1]
    assert meta["run_id"] == run_id and meta["run_name"] == d.name[:-len(run_id) - 1]
    assert (meta["arch"], meta["n_classes"], meta["img_size"], meta["epoch"]) == ("resnet18", 7, 64, 1)
    assert meta["classes"] == {str(k): v for k, v in params.BDD_CLASSES.items()}
    assert meta["dataset"] == "tiny_split" and meta["project"] == "unet-tiny_split"
    assert len(meta["mean"]) == 3 and len(meta["std"]) == 3 and meta["config"]["batch_size"] == 4
    assert set(METRIC_KEYS) <= set(meta["metrics"])
    config = json.loads((d / "config.json").read_text())
    for k, v in vars(train.parse_args([*FAST, "--pretrained", "False"])).items():
        if k not in ("data", "output", "project"):
            assert config[k] == v, k
    assert config["project"] == "unet-tiny_split" and config["data_path"] == str(tiny_dataset)
    assert config["pretrained_loaded"] is False and config["precision"] in ("bf16", "fp32")
    summary = json.loads((d / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["best_epoch"] == 1
    assert summary["final_miou"] == pytest.approx(meta["metrics"]["miou"], abs=1e-6)
    assert "train finished: " in r.err and str(d) in r.err


def test_metrics_lines_and_sweep_file(basic_run):
    d = basic_run.runs[0]
    rows = lines(d / "metrics.jsonl")
    assert len(rows) == 1 and rows[0]["epoch"] == 1
    assert {"train_loss", "valid_loss", "time", *METRIC_KEYS} <= set(rows[0])
    assert 0 <= rows[0]["miou"] <= 1 and 0 <= rows[0]["pixel_acc"] <= 1 and rows[0]["time"] > 0
    assert lines(basic_run.tmp / "sweep_metrics.jsonl") == rows


def test_offline_wandb_run_without_api_key(basic_run):
    assert "offline" in basic_run.err  # utils' one-line notice: no key -> offline
    run_id = basic_run.runs[0].name.rsplit("-", 1)[1]
    record = wandb_record(basic_run.tmp, run_id)
    for key in (b"final_miou", b"person_iou", b"pretrained_loaded", b"training", b"unet-tiny_split",
                f"run-{run_id}".encode()):
        assert key in record, key  # summary, per-epoch metrics, config and the model artifact (its collection) went
    summary = json.loads((basic_run.runs[0] / "summary.json").read_text())
    assert summary["model_aliases"] == ["latest", f"run-{run_id}", "best"]  # the first run of this dataset


def test_checkpoint_round_trip_gives_the_recorded_metrics(basic_run, tiny_dataset):
    d = basic_run.runs[0]
    summary = json.loads((d / "summary.json").read_text())
    model, meta = load_checkpoint(d)
    images, masks, _ = load_split(tiny_dataset, "valid", meta["frame_size"])
    fmt = torch.channels_last if use_channels_last("cpu") else torch.contiguous_format  # train.py's compute path
    model, acc = model.to(memory_format=fmt), ConfusionAccumulator()
    with torch.no_grad(), autocast_context("cpu", meta["config"]["mixed_precision"]):
        for i in range(0, len(images), meta["config"]["batch_size"]):  # the batches train.py scored
            x = (images[i:i + 4].float() / 255).contiguous(memory_format=fmt)
            acc.update(model(x).float(), masks[i:i + 4].long())
    assert int(acc.cm.sum()) == int((masks != params.IGNORE).sum())
    for k in METRIC_KEYS:  # same predictions as the training process had -> identical confusion-based metrics
        assert acc.results()[k] == pytest.approx(summary[f"final_{k}"], abs=1e-6, nan_ok=True), k


def test_pretrained_offline_falls_back_with_time_budget_and_extras(tiny_dataset, tmp_path):
    # default --pretrained True with an empty torch hub cache; a 0.3 s budget ends training during epoch 1
    r = run(["--img_size", "64", "--batch_size", "4", "--epochs", "5", "--time_budget", "0.005", "--loss", "dice_ce",
             "--class_weights", "inv", "--log_preds", "True", "--crop", "48", "--focus", "0.5", "--oversample", "2",
             "--decoder_width", "8"], tmp_path, tiny_dataset)
    assert r.rc == 0, r.err[-3000:]
    assert "warning: no pretrained weights" in r.err and "--freeze_epochs 1 ignored" in r.err
    d = r.runs[0]
    assert d.name.startswith("resnet18-img64-bs4-lr2e-03-dice_ce-dec8-inv-crop48-tb0.005m-scratch-")
    assert json.loads((d / "meta.json").read_text())["model_info"]["decoder_width"] == 8
    assert load_checkpoint(d)[0].head.in_channels == 8
    config = json.loads((d / "config.json").read_text())
    assert config["pretrained"] is True and config["pretrained_loaded"] is False
    assert len(config["class_weight_values"]) == 7
    assert len(lines(d / "metrics.jsonl")) == 1  # the clock, not --epochs 5, ended the run
    assert list((r.tmp / "wandb").glob("offline-run-*/files/media/table/pred_table_*.table.json"))


def test_non_finite_loss_stops_with_a_clear_error(tiny_dataset, tmp_path, capsys):
    handler = signal.getsignal(signal.SIGTERM)
    try:  # in-process (train.main as run_cli calls it) to spare a subprocess start
        with pytest.raises(SystemExit) as e:
            train.main(["--data", str(tiny_dataset), "--output", str(tmp_path), "--img_size", "64", "--batch_size",
                        "2", "--epochs", "2", "--lr", "1e9", "--pretrained", "False"])
    finally:
        signal.signal(signal.SIGTERM, handler)
    err = capsys.readouterr().err
    assert e.value.code == 1, err[-3000:]
    assert not torch.is_autocast_enabled("cpu")  # stopped outside the autocast region: nothing left switched on
    assert "error: non-finite training loss" in err and "train diverged: " in err
    d = next(tmp_path.glob("unet-tiny_split/*"))
    assert json.loads((d / "summary.json").read_text())["status"] == "diverged"


def test_sigterm_leaves_a_valid_checkpoint(tiny_dataset, tmp_path):
    p = start([*FAST[:4], "--epochs", "50", "--pretrained", "False"], tmp_path, tiny_dataset)
    sweep = tmp_path / "sweep_metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and p.poll() is None and not (sweep.exists() and sweep.read_text().strip()):
        time.sleep(0.2)
    assert p.poll() is None, p.communicate()[1][-3000:]
    time.sleep(0.5)  # land somewhere inside the next epoch (possibly during a checkpoint write)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-3000:]  # a stopped trial is a normal end for `wandb agent`
    d = next((tmp_path / "models").glob("*/*"))
    assert json.loads((d / "summary.json").read_text())["status"] == "stopped"
    model, meta = load_checkpoint(d)
    assert meta["epoch"] >= 1 and len(lines(d / "metrics.jsonl")) >= 1
    assert not [q for q in d.parent.iterdir() if q.name.startswith(".")]


def test_absent_classes_come_from_full_resolution_label_statistics(tmp_path):
    """A bicycle of one pixel per training mask vanishes when masks shrink to img_size; eda.csv (full resolution)
    still says bicycles were there, so the class stays predictable."""
    from conftest import make_tiny_dataset
    from PIL import Image

    from bddseg import layout
    from bddseg.losses import class_frequencies
    data = make_tiny_dataset(tmp_path / "d")
    rows = []
    for f in pd.read_csv(data / layout.SPLIT_CSV).File_Name:
        mask = np.asarray(Image.open(layout.label_path(data, f))).copy()
        mask[mask == 6] = 0
        mask[5, 7] = 6  # one bicycle pixel
        Image.fromarray(mask).save(layout.label_path(data, f))
        rows.append({"File_Name": f, **{f"{k}_present": int((mask == c).any())
                                        for c, k in enumerate(config.CLASS_KEYS)}})
    pd.DataFrame(rows).to_csv(data / layout.EDA_CSV, index=False)
    layout.write_manifest(data, name=data.name, type="split_data", source="tests")
    args = train.parse_args(["--pretrained=False", "--img_size=8", "--batch_size=2", "--augment=False"])
    dls = train.get_data(args, data, "cpu")
    assert class_frequencies(dls.train.masks)[6] == 0  # the resize erased every bicycle pixel
    _, info, _ = train.get_learner(args, dls, "cpu")
    assert 6 not in info["absent_classes"]
    (data / layout.EDA_CSV).unlink()  # without label statistics: what the loaded masks show
    _, info, _ = train.get_learner(args, dls, "cpu")
    assert 6 in info["absent_classes"]
