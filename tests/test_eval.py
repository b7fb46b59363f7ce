"""eval.py: metrics equal an independent computation, the report folder is complete, --tta, bad input, offline W&B.

Also the package modules behind it: bddseg.lookup (which model), bddseg.inference (TTA), bddseg.eval_report (files).
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

import eval as eval_cli
from bddseg import config, eval_report, layout, lookup
from bddseg.cli import UserError, run_cli
from bddseg.checkpoint import WEIGHTS, load_checkpoint, save_checkpoint
from bddseg.inference import tta_logits
from bddseg.models import build_model

ROOT = Path(__file__).resolve().parents[1]
NAMES = list(config.BDD_CLASSES.values())
KEYS = [config.class_key(n) for n in NAMES]
REPORT_FILES = [eval_report.METRICS_JSON, eval_report.INFO_JSON, eval_report.CM_PNG, eval_report.CM_COUNTS_PNG,
                eval_report.CM_CSV, eval_report.SHARE_CSV, eval_report.PREDS_CSV, eval_report.INDEX]


def make_checkpoint(folder, data, frame=(64, 112), miou=0.5, run_id="abc123", seed=0):
    """A real resnet18 U-Net (head scaled up so predictions cover several classes) saved with a train-style meta."""
    torch.manual_seed(seed)
    model, info = build_model("resnet18", len(NAMES), pretrained=False)
    head = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        head.weight.mul_(30)
        head.bias.zero_()
    name = f"resnet18-img{frame[0]}-test"
    meta = {"arch": "resnet18", "n_classes": len(NAMES), "classes": {str(k): v for k, v in config.BDD_CLASSES.items()},
            "ignore_index": config.IGNORE, "img_size": frame[0], "frame_size": list(frame), "dataset": Path(data).name,
            "data_path": str(data), "run_id": run_id, "run_name": name, "project": "unet-tiny",
            "metrics": {"miou": miou}, "epoch": 1, "config": {"arch": "resnet18", "lr": 2e-3, "data": str(data)}}
    return save_checkpoint(Path(folder) / f"unet-{Path(data).name}" / f"{name}-{run_id}", model, meta)


def run_eval(argv, capsys=None):
    """eval.main in process through run_cli; returns (exit code, stderr)."""
    try:
        run_cli(eval_cli.main, argv)
        code = 0
    except SystemExit as e:
        code = e.code
    return code, (capsys.readouterr().err if capsys else "")


def copy_dataset(src, dst, edit_split=None, classes=None):
    """Copy a dataset folder, optionally filtering its split rows and/or changing the manifest's classes."""
    shutil.copytree(src, dst)
    if edit_split is not None:
        df = pd.read_csv(dst / layout.SPLIT_CSV)
        edit_split(df).to_csv(dst / layout.SPLIT_CSV, index=False)
        layout.write_manifest(dst, name=dst.name, type="split_data", source="tests")
    if classes is not None:
        m = json.loads((dst / layout.MANIFEST).read_text())
        m["classes"] = classes
        (dst / layout.MANIFEST).write_text(json.dumps(m))
    return dst


def independent(ckpt, data, split="test"):
    """Expected metrics: fp32 forward of the checkpoint's model on the raw images (no resize), sklearn metrics."""
    model, _ = load_checkpoint(ckpt)
    df = layout.read_split(data, split)
    preds, trues, loss_sum = [], [], 0.0
    with torch.no_grad():
        for img_file, label_file in zip(df.image, df.label):
            x = torch.from_numpy(np.asarray(Image.open(img_file).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
            y = torch.from_numpy(np.asarray(Image.open(label_file))).long()
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y[None], ignore_index=config.IGNORE, reduction="sum").item()
            preds.append(logits.argmax(1)[0].numpy())
            trues.append(y.numpy())
    p, t = np.concatenate([a.ravel() for a in preds]), np.concatenate([a.ravel() for a in trues])
    keep = t != config.IGNORE
    p, t = p[keep], t[keep]
    cm = confusion_matrix(t, p, labels=range(len(NAMES)))
    inter, union = np.diag(cm), cm.sum(0) + cm.sum(1) - np.diag(cm)
    iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    prec, rec, f1, _ = precision_recall_fscore_support(t, p, labels=range(len(NAMES)), zero_division=0)
    exp = {f"{split}_miou": np.nanmean(iou), f"{split}_pixel_acc": (p == t).mean(),
           f"{split}_loss": loss_sum / keep.sum()}
    for k, *values in zip(KEYS, iou, prec, rec, f1):
        exp.update({f"{split}_{k}_{s}": v for s, v in zip(("iou", "precision", "recall", "f1"), values)})
    return exp, preds, list(df.File_Name), cm


def check_close(got, exp):
    """Every expected key present in metrics.json and equal (nan <-> null)."""
    for k, v in exp.items():
        assert k in got, k
        if np.isnan(v):
            assert got[k] is None, (k, got[k])
        else:
            assert got[k] == pytest.approx(float(v), rel=1e-6, abs=1e-9), k


def html_refs(index):
    """Every src/href in index.html."""
    return re.findall(r'(?:src|href)="([^"]+)"', index.read_text())


def test_metrics_match_independent_computation_and_report_is_complete(tiny_dataset, tmp_path, monkeypatch):
    models, out = tmp_path / "models", tmp_path / "eval"
    ckpt = make_checkpoint(models, tiny_dataset)
    monkeypatch.setattr(config, "MODELS_DIR", models)
    monkeypatch.setattr(config, "EVAL_DIR", out)
    before = {p: p.stat().st_mtime_ns for p in [*ckpt.iterdir(), *tiny_dataset.rglob("*")] if p.is_file()}

    code, _ = run_eval(["--mixed_precision", "False", "--batch_size", "1", "--num_workers", "0"])  # no model flag
    assert code == 0
    folder = out / "resnet18-img64-test-test"
    got = json.loads((folder / eval_report.METRICS_JSON).read_text())
    exp, preds, files, cm = independent(ckpt, tiny_dataset)
    assert len(np.unique(np.concatenate([p.ravel() for p in preds]))) >= 3  # the known model predicts several classes
    check_close(got, exp)
    for f, p in zip(files, preds):  # raw predictions written at the mask's resolution
        assert np.array_equal(np.asarray(Image.open(folder / eval_report.MASKS / f"{Path(f).stem}.png")), p)
    assert np.array_equal(pd.read_csv(folder / eval_report.CM_CSV, index_col=0).to_numpy(), cm)
    share = pd.read_csv(folder / eval_report.SHARE_CSV)
    assert share.true_pixels.tolist() == cm.sum(1).tolist() and share.pred_pixels.tolist() == cm.sum(0).tolist()

    # report folder: every listed file, per-image overlays, index.html referencing only existing files
    for name in REPORT_FILES:
        assert (folder / name).is_file(), name
    table = pd.read_csv(folder / eval_report.PREDS_CSV)
    assert sorted(table.file) == sorted(files)
    person = table.person_iou.dropna().tolist()
    assert person == sorted(person) and table.person_iou.isna().tolist() == sorted(table.person_iou.isna().tolist())
    refs = html_refs(folder / eval_report.INDEX)
    for f in files:
        stem = Path(f).stem
        for suffix in ("", "_true", "_pred"):
            assert f"{eval_report.IMAGES}/{stem}{suffix}.jpg" in refs  # thumbnail
            assert f"{eval_report.IMAGES}/{stem}{suffix}_{eval_report.FULL}.jpg" in refs  # 2 images < 50: full size
    assert eval_report.CM_PNG in refs and eval_report.CM_COUNTS_PNG in refs
    assert all((folder / r).is_file() for r in refs), [r for r in refs if not (folder / r).is_file()]
    assert "http" not in (folder / eval_report.INDEX).read_text()  # self-contained
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp folder left
    info = json.loads((folder / eval_report.INFO_JSON).read_text())
    assert Path(info["model_dir"]) == ckpt.resolve() and info["split"] == "test" and info["images"] == 2

    # offline W&B run dir, nothing modified
    run_dirs = list((Path(os.environ["WANDB_DIR"]) / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    tables = list(run_dirs[0].glob("files/media/table/predictions_*.table.json"))
    logged = json.loads(tables[0].read_text())
    assert "iou_person" in logged["columns"] and len(logged["data"]) == len(files)
    assert [r[0] for r in logged["data"]] == table.file.tolist()  # same worst-first order as the local table
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before


def test_best_local_run_is_chosen_and_found_by_id(tiny_dataset, tmp_path, monkeypatch):
    models = tmp_path / "models"
    make_checkpoint(models, tiny_dataset, miou=0.2, run_id="low1")
    best = make_checkpoint(models, tiny_dataset, frame=(32, 56), miou=0.6, run_id="high2")
    (models / "unet-x" / "broken").mkdir(parents=True)
    (models / "unet-x" / "broken" / "meta.json").write_text("{not json")
    assert lookup.best_run(models) == best
    os.utime(best / "meta.json", (1, 1))  # saved long ago: the other run is the latest
    assert lookup.latest_run(models).name.endswith("low1")
    assert lookup.find_run("low1", models).name.endswith("low1")
    assert list(lookup.list_runs(models).run_id) == ["high2", "low1"]
    with pytest.raises(UserError, match="nope"):
        lookup.find_run("nope", models)
    with pytest.raises(UserError, match="no trained model"):
        lookup.best_run(tmp_path / "empty")


def test_sweep_option_evaluates_the_best_trial_run_folder(tmp_path, monkeypatch):
    from bddseg.sweeper import study
    seen = []
    monkeypatch.setattr(study, "best_trial", lambda sid, storage=None: seen.append(sid) or {"run_dir": str(tmp_path)})
    assert lookup.model_dir(sweep=eval_cli.parse_args(["--sweep", "sw1"]).sweep) == tmp_path and seen == ["sw1"]
    monkeypatch.setattr(study, "best_trial", lambda sid, storage=None: {"run_dir": None})
    with pytest.raises(UserError, match="sw2"):
        lookup.model_dir(sweep="sw2")


def test_resized_model_input_tta_and_valid_split(tiny_dataset, tmp_path, monkeypatch):
    """A model trained at another size: predictions come back at the mask size; --tta runs; valid split keys."""
    ckpt = make_checkpoint(tmp_path / "models", tiny_dataset, frame=(32, 56))
    code, _ = run_eval(["--model", str(ckpt), "--split", "valid", "--tta", "--out", str(tmp_path / "eval")])
    assert code == 0
    folder = tmp_path / "eval" / "resnet18-img32-test-valid-tta"
    got = json.loads((folder / eval_report.METRICS_JSON).read_text())
    assert json.loads((folder / eval_report.INFO_JSON).read_text())["tta"] is True
    # aggregation equals sklearn on the written predictions (at the masks' own 64x112 resolution)
    df = layout.read_split(tiny_dataset, "valid")
    t = np.concatenate([np.asarray(Image.open(f)).ravel() for f in df.label])
    p = np.concatenate([np.asarray(Image.open(folder / eval_report.MASKS / f"{Path(f).stem}.png")).ravel()
                        for f in df.File_Name])
    assert p.size == t.size == len(df) * 64 * 112
    keep = t != config.IGNORE
    prec, rec, f1, _ = precision_recall_fscore_support(t[keep], p[keep], labels=range(7), zero_division=0)
    assert got["valid_pixel_acc"] == pytest.approx((p[keep] == t[keep]).mean())
    assert [got[f"valid_{k}_recall"] for k in KEYS] == pytest.approx(rec.tolist())
    assert [got[f"valid_{k}_f1"] for k in KEYS] == pytest.approx(f1.tolist())
    assert got["valid_loss"] > 0


def test_report_keeps_full_size_files_for_the_worst_k_only(tiny_dataset, tmp_path):
    """--report_images K: every image gets JPEG thumbnails at most THUMB_WIDTH wide, only the K worst (first rows of
    predictions.csv) get full-size overlays, a raw mask and a W&B image: the folder grows by thumbnails per image."""
    ckpt = make_checkpoint(tmp_path / "models", tiny_dataset)
    code, _ = run_eval(["--model", str(ckpt), "--split", "all", "--report_images", "2", "--num_workers", "0",
                        "--out", str(tmp_path / "eval")])
    assert code == 0
    folder = tmp_path / "eval" / "resnet18-img64-test-all"
    table = pd.read_csv(folder / eval_report.PREDS_CSV)
    assert len(table) == 12
    stems = [Path(f).stem for f in table.file]
    full = f"_{eval_report.FULL}.jpg"
    expected = {f"{eval_report.IMAGES}/{s}{suffix}.jpg" for s in stems for suffix in ("", "_true", "_pred")}
    expected |= {f"{eval_report.IMAGES}/{s}{suffix}{full}" for s in stems[:2] for suffix in ("", "_true", "_pred")}
    expected |= {f"{eval_report.MASKS}/{s}.png" for s in stems[:2]}
    written = {str(p.relative_to(folder)) for sub in (eval_report.IMAGES, eval_report.MASKS)
               for p in (folder / sub).iterdir()}
    assert written == expected
    for rel in expected:
        im = Image.open(folder / rel)
        if rel.endswith(full) or rel.startswith(eval_report.MASKS):
            assert im.size == (112, 64)  # the masks' own size
        else:
            assert im.format == "JPEG" and im.width <= eval_report.THUMB_WIDTH
    assert table[f"image_{eval_report.FULL}"].notna().tolist() == [True] * 2 + [False] * 10
    run_dir = max((Path(os.environ["WANDB_DIR"]) / "wandb").glob("offline-run-*"))
    logged = json.loads(next(run_dir.glob("files/media/table/predictions_*.table.json")).read_text())
    assert [r[1] is not None for r in logged["data"]] == [True] * 2 + [False] * 10


def test_tta_prediction_is_mirror_symmetric_on_a_mirror_symmetric_image():
    torch.manual_seed(0)
    model, _ = build_model("resnet18", 7, pretrained=False)
    model.eval()
    x = torch.rand(1, 3, 64, 64)
    x = (x + x.flip(-1)) / 2
    with torch.no_grad():
        plain, tta = tta_logits(model, x), tta_logits(model, x, tta=True)
    assert torch.allclose(tta, tta.flip(-1), atol=1e-5)
    assert not torch.allclose(plain, plain.flip(-1), atol=1e-5)  # the model alone is not symmetric


def test_missing_checkpoint_exits_2_naming_it_subprocess(tmp_path):
    missing = tmp_path / "no_such_run"
    r = subprocess.run([sys.executable, str(ROOT / "eval.py"), "--model", str(missing)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert str(missing) in r.stderr and "Traceback" not in r.stderr
    assert "Warning" not in r.stderr, r.stderr  # fastai's import-time torch.jit.script warning is silenced


def test_bad_inputs_exit_2_with_the_file_named(tiny_dataset, tmp_path, monkeypatch, capsys):
    models = tmp_path / "models"
    ckpt = make_checkpoint(models, tiny_dataset)
    out = ["--out", str(tmp_path / "eval")]

    corrupt = tmp_path / "corrupt"
    shutil.copytree(ckpt, corrupt)
    (corrupt / WEIGHTS).write_bytes(b"not a safetensors file")
    code, err = run_eval(["--model", str(corrupt), *out], capsys)
    assert code == 2 and str(corrupt / WEIGHTS) in err

    mismatch = tmp_path / "mismatch"
    shutil.copytree(ckpt, mismatch)
    meta = json.loads((mismatch / "meta.json").read_text())
    (mismatch / "meta.json").write_text(json.dumps({**meta, "arch": "resnet34"}))
    code, err = run_eval(["--model", str(mismatch), *out], capsys)
    assert code == 2 and str(mismatch / WEIGHTS) in err and "meta.json" in err

    monkeypatch.setattr(config, "MODELS_DIR", models)
    code, err = run_eval(["--run", "nope42", *out], capsys)
    assert code == 2 and "nope42" in err and str(models) in err

    no_test = copy_dataset(tiny_dataset, tmp_path / "no_test", edit_split=lambda d: d[d.Stage != "test"])
    code, err = run_eval(["--model", str(ckpt), "--data", str(no_test), *out], capsys)
    assert code == 2 and str(no_test / layout.SPLIT_CSV) in err and "test" in err

    other = copy_dataset(tiny_dataset, tmp_path / "other_classes", classes={"0": "background", "1": "road"})
    code, err = run_eval(["--model", str(ckpt), "--data", str(other), *out], capsys)
    assert code == 2 and str(other / layout.MANIFEST) in err and "classes" in err

    broken = copy_dataset(tiny_dataset, tmp_path / "broken_image")
    bad_file = layout.read_split(broken, "test").image[0]
    Path(bad_file).write_bytes(b"not a jpeg")
    layout.write_manifest(broken, name=broken.name, type="split_data", source="tests")  # so only decoding fails
    for workers in ("1", "0"):  # a worker process; decode threads in the main process (the CPU default)
        code, err = run_eval(["--model", str(ckpt), "--data", str(broken), "--num_workers", workers, *out], capsys)
        assert code == 2 and f"{bad_file}: unreadable image" in err and "Traceback" not in err

    code, err = run_eval(["--artifact", "me/proj/model:best", *out], capsys)
    assert code == 2 and "online" in err

    monkeypatch.setattr(config, "MODELS_DIR", tmp_path / "empty")
    code, err = run_eval(out, capsys)
    assert code == 2 and "no trained model" in err

    assert not (tmp_path / "eval").exists() or not any((tmp_path / "eval").iterdir())  # nothing half-written


@pytest.mark.parametrize("n_classes", [2, 7, 15, 16])  # up to 15: wrapping uint8 codes; 16: the batched index_add
def test_image_confusions_equal_sklearn_per_image(n_classes):
    from bddseg.evaluate import image_confusions
    rng = np.random.default_rng(3)
    target = rng.integers(0, n_classes, (3, 9, 13)).astype(np.uint8)
    target[:, :2] = config.IGNORE
    pred = rng.integers(0, n_classes, (3, 9, 13)).astype(np.uint8)
    got = image_confusions(torch.from_numpy(pred), torch.from_numpy(target), n_classes).numpy()
    for g, t, p in zip(got, target, pred):
        keep = t != config.IGNORE
        assert np.array_equal(g, confusion_matrix(t[keep], p[keep], labels=range(n_classes)))


@pytest.mark.parametrize("values,bad", [([0, 9, 6], [9]), ([255, 9, 3, 200], [9, 200]), ([255, 0, 6], []),
                                        ([0, 1], [])])
def test_read_mask_refuses_values_outside_the_classes(tmp_path, values, bad):
    """The confusion codes assume masks hold class ids and IGNORE only: anything else is refused, naming the file."""
    from bddseg.eval_data import read_mask
    path = tmp_path / "m.png"
    Image.fromarray(np.array([values], np.uint8)).save(path)
    if bad:
        with pytest.raises(UserError, match=re.escape(f"{path}: mask values {bad} outside the classes 0..6")):
            read_mask(path, 7)
    else:
        assert read_mask(path, 7).tolist() == [values]


def test_overlay_blends_class_colours_and_leaves_ignore_pixels():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    mask = rng.integers(0, 7, (6, 9), dtype=np.uint8)
    mask[0] = config.IGNORE
    got = eval_report.overlay(image, mask).astype(int)
    colours = np.array([config.CLASS_COLORS[int(k)] for k in mask[1:].ravel()]).reshape(5, 9, 3)
    assert np.abs(got[1:] - (image[1:] + colours) / 2).max() <= 1  # half image, half class colour
    assert np.array_equal(got[0], image[0])


def test_report_thumbnail_is_bounded_whatever_the_decode_scale(tmp_path):
    """The thumbnail comes from the model input's decode (JPEG draft: 320x180 of a 1280x720 frame for 96 and 180 px,
    160x90 for 36 px) but is never wider than THUMB_WIDTH, nor upscaled past the decode."""
    from bddseg.eval_data import read_image
    path = tmp_path / "frame.jpg"
    Image.new("RGB", (1280, 720), (90, 120, 30)).save(path)
    for size, thumb in (((180, 320), (144, eval_report.THUMB_WIDTH)), ((96, 170), (144, eval_report.THUMB_WIDTH)),
                        ((36, 64), (90, 160))):
        x, got = read_image(path, size, (720, 1280))
        assert x.shape == (*size, 3) and got.shape == (*thumb, 3)


def test_eval_loader_decodes_on_threads_in_order(tiny_dataset):
    """Without worker processes a batch is decoded on threads (EvalImages.__getitems__): same items, same order as
    one by one; the default is that on a CPU and one worker per core beside an accelerator."""
    from bddseg.eval_data import decode_workers, eval_loader
    df = layout.read_split(tiny_dataset, "train")
    meta = {"classes": {str(k): v for k, v in config.BDD_CLASSES.items()}, "img_size": 32, "frame_size": [32, 56]}
    loader = eval_loader(df, meta, batch_size=3, num_workers=0)
    ds = loader.dataset
    batches = list(loader)
    assert ds.pool is not None  # the threads were used
    assert [i for b in batches for i in b[3]] == list(range(len(df)))
    for b in batches:
        for x, mask, thumb, i in zip(*b):
            one = ds.load(i)
            assert torch.equal(x, one[0]) and torch.equal(mask, one[1]) and np.array_equal(thumb, one[2])
    assert decode_workers("cpu") == 0 and decode_workers("cuda") == config.cores()
