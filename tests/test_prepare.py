"""data/prepare.py end to end: synthetic, BDD100K (official layout, masks and colormaps), folders with each mapping
preset, reproducibility, every bad-input case (exit 2, file named, nothing left behind), and the offline W&B run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import params
from bddseg import layout
from data import prepare  # data/ as a namespace package: pytest.ini's pythonpath is the repo
from bddseg.cli import UserError

ROOT = Path(__file__).resolve().parents[1]

FAST = ["--no-wandb", "--workers", "1"]
SYN = ["--n", "12", "--size", "96x54", "--frames-per-video", "2"]
# BDD100K train ids -> our classes, written out independently of bddseg.sources
BDD_EXPECTED = {0: 1, 6: 2, 7: 3, 11: 4, 12: 4, 13: 5, 14: 5, 15: 5, 16: 5, 17: 5, 18: 6, 255: 255}
CAMVID_EXPECTED = {0: 0, 1: 0, 2: 0, 3: 1, 4: 0, 5: 0, 6: 255, 7: 0, 8: 5, 9: 4, 10: 6, 11: 255}
CITYSCAPES_RGB = [(128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
                  (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
                  (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)]


def run_prepare(*args):
    """The real CLI in a subprocess (so exit codes and stderr are what a user sees)."""
    return subprocess.run([sys.executable, str(ROOT / "data" / "prepare.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT.parent, timeout=300)


def random_ids(rng, shape, values):
    """A mask of blocks filled with the given source values (every value appears)."""
    h, w = shape
    ids = rng.choice(values, (h // 4 + 1, w // 4 + 1))
    ids = np.kron(ids, np.ones((4, 4), ids.dtype))[:h, :w]
    ids.flat[:len(values)] = values
    return ids.astype(np.uint8)


def save_image(path, rng, size=(64, 36)):
    """A random JPEG or PNG image of size (w, h)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)


def make_bdd(root, variant="masks", n=8, rng=None):
    """A tiny BDD100K 10k tree in the official layout: images/10k/{train,val}, labels/sem_seg/{masks|colormaps}."""
    rng = rng or np.random.default_rng(0)
    train_ids = list(range(19)) + [255]
    palette = [c for rgb in CITYSCAPES_RGB for c in rgb] + [0] * (3 * (256 - 19))
    for i in range(n):
        split = "train" if i < n - 2 else "val"
        stem = f"{i:04x}a0c0-{i * 7919:08x}"
        save_image(root / "images" / "10k" / split / f"{stem}.jpg", rng)
        ids = random_ids(rng, (36, 64), train_ids)
        out = root / "labels" / "sem_seg" / variant / split / f"{stem}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(ids, "L")
        if variant == "colormaps":
            im = Image.fromarray(ids, "P")
            im.putpalette(palette)
        im.save(out)
    (root / "images" / "10k" / "test").mkdir(parents=True)  # unlabelled test images are not imported
    save_image(root / "images" / "10k" / "test" / "ffffffff-00000000.jpg", rng)
    return root


def make_folder(root, values, n=6, mask_suffix="", videos=3, delim="-"):
    """images/ and masks/ folders whose masks use the given source values."""
    rng = np.random.default_rng(1)
    for i in range(n):
        stem = f"seq{i % videos}{delim}{i:06d}"
        save_image(root / "images" / f"{stem}.jpg", rng)
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(random_ids(rng, (36, 64), values)).save(root / "masks" / f"{stem}{mask_suffix}.png")
    return root / "images", root / "masks"


def expected_mask(src, table):
    """Source ids mapped with a dict, pixel by pixel."""
    return np.vectorize(table.get)(src).astype(np.uint8)


def assert_nothing_left(out):
    """No artifact folder (and no temp folder) under out."""
    assert not out.exists() or list(out.iterdir()) == []


# ---------------------------------------------------------------- synthetic
def test_synthetic_writes_both_folders(tmp_path):
    prepare.main([*SYN, "--out", tmp_path, *FAST])
    raw, proc = tmp_path / params.RAW_DATA_AT, tmp_path / params.PROCESSED_DATA_AT
    names = sorted(p.name for p in (raw / "images").iterdir())
    assert len(names) == 12 and names[0] == "s0000-0000.jpg"
    mask = np.asarray(Image.open(layout.label_path(raw, names[0])))
    assert Image.open(layout.label_path(raw, names[0])).mode == "L" and mask.shape == (54, 96)
    eda = pd.read_csv(raw / "eda.csv")
    keys = [params.class_key(n) for n in params.BDD_CLASSES.values()]
    assert list(eda.columns) == ["File_Name", "video"] + [f"{k}_present" for k in keys] + [f"{k}_share" for k in keys]
    share = np.bincount(mask.ravel(), minlength=256)[:7] / mask.size
    assert np.allclose(eda.iloc[0][[f"{k}_share" for k in keys]].astype(float), share, atol=1e-6)
    df = layout.read_split(proc)
    assert set(df.Stage) == set(layout.STAGES) and len(df) == 12
    assert all(Path(p).exists() for p in df.image) and all(Path(p).exists() for p in df.label)
    assert layout.read_manifest(raw)["type"] == "raw_data" and layout.read_manifest(proc)["type"] == "split_data"
    assert layout.read_manifest(proc)["raw_data"] == params.RAW_DATA_AT
    assert layout.check_manifest(raw, full=True) == [] and layout.check_manifest(proc, full=True) == []
    assert "synthetic" in (raw / "SOURCE.md").read_text() and (proc / "SOURCE.md").exists()
    assert os.path.samefile(raw / "images" / names[0], proc / "images" / names[0])  # hard-linked, not copied


def test_rerun_reproduces_identical_bytes(tmp_path):
    prepare.main([*SYN, "--out", tmp_path / "a", *FAST])
    prepare.main([*SYN, "--out", tmp_path / "b", "--no-wandb", "--workers", "2"])
    for sub in ("bdd_simple_1k", "bdd_simple_1k_split"):
        a, b = tmp_path / "a" / sub, tmp_path / "b" / sub
        files = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file() and p.suffix != ".md"
                       and p.name != "manifest.json")
        assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file() and p.suffix != ".md"
                               and p.name != "manifest.json")
        assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_names_and_out(tmp_path):
    prepare.main([*SYN, "--out", tmp_path, "--name", "mine", "--split-name", "mine_split", *FAST])
    assert (tmp_path / "mine" / "eda.csv").exists() and (tmp_path / "mine_split" / "data_split.csv").exists()
    assert layout.read_manifest(tmp_path / "mine_split")["raw_data"] == "mine"


# ---------------------------------------------------------------- BDD100K
@pytest.mark.parametrize("variant", ["masks", "colormaps"])
def test_bdd100k_import_maps_train_ids(tmp_path, variant):
    bdd = make_bdd(tmp_path / "bdd100k", variant)
    out = tmp_path / "out"
    prepare.main(["--source", "bdd100k", "--root", tmp_path, "--out", out, *FAST])  # parent of bdd100k/ works too
    raw = out / params.RAW_DATA_AT
    images = sorted(p for split in ("train", "val") for p in (bdd / "images" / "10k" / split).glob("*.jpg"))
    assert sorted(p.name for p in (raw / "images").iterdir()) == sorted(p.name for p in images)
    for img in images:
        src = np.asarray(Image.open(bdd / "labels" / "sem_seg" / variant / img.parent.name / f"{img.stem}.png"))
        got = np.asarray(Image.open(layout.label_path(raw, img.name)))
        assert np.array_equal(got, expected_mask(src, {**{i: 0 for i in range(19)}, **BDD_EXPECTED}))
        assert (got == 255).sum() == (src == 255).sum() > 0  # ignore stays ignore, never background
        assert (raw / "images" / img.name).read_bytes() == img.read_bytes()  # JPEG kept as given
    assert "bdd100k" in (raw / "SOURCE.md").read_text() and variant in (raw / "SOURCE.md").read_text()


def test_bdd100k_limit(tmp_path):
    make_bdd(tmp_path / "bdd", n=8)
    prepare.main(["--source", "bdd100k", "--root", tmp_path / "bdd", "--limit", "5", "--out", tmp_path / "o", *FAST])
    assert len(list((tmp_path / "o" / params.RAW_DATA_AT / "images").iterdir())) == 5


# ---------------------------------------------------------------- folders and mapping presets
@pytest.mark.parametrize("preset,values,table,suffix", [
    ("identity", [0, 1, 2, 3, 4, 5, 6, 255], {v: v for v in [0, 1, 2, 3, 4, 5, 6, 255]}, "_mask"),
    ("bdd100k", list(range(19)) + [255], {**{i: 0 for i in range(19)}, **BDD_EXPECTED}, ""),
    ("camvid", list(range(12)), CAMVID_EXPECTED, ""),
    ("camvid-sign", list(range(12)), {**CAMVID_EXPECTED, 6: 3}, ""),
])
def test_folder_import_with_presets(tmp_path, preset, values, table, suffix):
    images, masks = make_folder(tmp_path, values, mask_suffix=suffix)
    prepare.main(["--source", "folder", "--images", images, "--masks", masks, "--mapping", preset,
                  "--video-delim", "-", "--out", tmp_path / "o", *FAST])
    raw = tmp_path / "o" / params.RAW_DATA_AT
    for img in sorted(images.iterdir()):
        src = np.asarray(Image.open(masks / f"{img.stem}{suffix}.png"))
        assert np.array_equal(np.asarray(Image.open(layout.label_path(raw, img.name))), expected_mask(src, table))
    eda = pd.read_csv(raw / "eda.csv")
    assert sorted(eda.video.unique()) == ["seq0", "seq1", "seq2"]


def test_folder_json_mapping_and_camvid_grouping(tmp_path):
    images, masks = make_folder(tmp_path, [10, 20, 30], delim="_")
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"10": "road", "20": 5, "30": "ignore"}))
    prepare.main(["--source", "folder", "--images", images, "--masks", masks, "--mapping", mapping,
                  "--video-delim", "_", "--out", tmp_path / "o", *FAST])
    raw = tmp_path / "o" / params.RAW_DATA_AT
    src = np.asarray(Image.open(masks / "seq0_000000.png"))
    assert np.array_equal(np.asarray(Image.open(raw / "labels" / "seq0_000000_mask.png")),
                          expected_mask(src, {10: 1, 20: 5, 30: 255}))
    assert sorted(pd.read_csv(raw / "eda.csv").video.unique()) == ["seq0", "seq1", "seq2"]


# ---------------------------------------------------------------- bad input
def test_truncated_image_exits_2_and_leaves_nothing(tmp_path):
    images, masks = make_folder(tmp_path, [0, 1])
    bad = images / "seq1-000004.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[:len(data) * 2 // 3])  # header intact: opens, fails to decode
    out = tmp_path / "o"
    r = run_prepare("--source", "folder", "--images", images, "--masks", masks, "--out", out, "--no-wandb")
    assert r.returncode == 2, r.stderr
    assert "seq1-000004.jpg" in r.stderr and "image file is truncated" in r.stderr and "Traceback" not in r.stderr
    assert_nothing_left(out)


def test_wrong_root_exits_2(tmp_path):
    r = run_prepare("--source", "bdd100k", "--root", tmp_path / "nowhere", "--out", tmp_path / "o", "--no-wandb")
    assert r.returncode == 2 and "nowhere" in r.stderr and "not a BDD100K" in r.stderr
    assert_nothing_left(tmp_path / "o")


@pytest.mark.parametrize("case,message", [
    ("size", "differs from image"), ("values", "[40] not in the class mapping"), ("nomask", "no mask"),
    ("unreadable_mask", "unreadable or truncated mask")])
def test_bad_pairs_are_named(tmp_path, case, message):
    images, masks = make_folder(tmp_path, [0, 1, 2, 3, 4, 5, 6])
    victim = "seq2-000005"
    if case == "size":
        Image.new("L", (32, 18)).save(masks / f"{victim}.png")
    elif case == "values":
        Image.fromarray(np.full((36, 64), 40, np.uint8)).save(masks / f"{victim}.png")
    elif case == "nomask":
        (masks / f"{victim}.png").unlink()
    else:
        (masks / f"{victim}.png").write_bytes(b"not a png")
    out = tmp_path / "o"
    with pytest.raises(UserError, match="skip-bad") as e:
        prepare.main(["--source", "folder", "--images", images, "--masks", masks, "--out", out, *FAST])
    assert victim in str(e.value) and message in str(e.value)
    assert_nothing_left(out)


def test_empty_source_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty source"):
        prepare.main(["--source", "folder", "--images", tmp_path / "empty", "--masks", tmp_path / "empty",
                      "--out", tmp_path / "o", *FAST])
    with pytest.raises(UserError, match="no such folder"):
        prepare.main(["--source", "folder", "--images", tmp_path / "x", "--masks", tmp_path, "--out", tmp_path / "o",
                      *FAST])
    with pytest.raises(UserError, match="neither a preset"):
        prepare.main(["--source", "folder", "--images", tmp_path, "--masks", tmp_path, "--mapping", "kitti",
                      "--out", tmp_path / "o", *FAST])
    with pytest.raises(UserError, match="does not apply"):
        prepare.main(["--root", tmp_path, "--out", tmp_path / "o", *FAST])
    with pytest.raises(UserError, match="--n does not apply"):
        prepare.main(["--source", "bdd100k", "--root", tmp_path, "--n", "5", "--out", tmp_path / "o", *FAST])
    assert_nothing_left(tmp_path / "o")


def test_failed_rerun_keeps_the_previous_artifact(tmp_path):
    images, masks = make_folder(tmp_path, [0, 1])
    out = tmp_path / "o"
    prepare.main(["--source", "folder", "--images", images, "--masks", masks, "--out", out, *FAST])
    before = (out / params.RAW_DATA_AT / "eda.csv").read_bytes()
    (masks / "seq0-000000.png").unlink()
    with pytest.raises(UserError):
        prepare.main(["--source", "folder", "--images", images, "--masks", masks, "--out", out, *FAST])
    assert (out / params.RAW_DATA_AT / "eda.csv").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == [params.RAW_DATA_AT, params.PROCESSED_DATA_AT]


def test_skip_bad_drops_and_lists(tmp_path, capsys):
    images, masks = make_folder(tmp_path, [0, 1], n=8, videos=4)
    (masks / "seq3-000007.png").unlink()
    (images / "seq1-000005.jpg").write_bytes(b"\xff\xd8 broken")
    out = tmp_path / "o"
    prepare.main(["--source", "folder", "--images", images, "--masks", masks, "--out", out, "--skip-bad", *FAST])
    raw = out / params.RAW_DATA_AT
    assert len(list((raw / "images").iterdir())) == 6
    note = (raw / "SOURCE.md").read_text()
    assert "seq3-000007" in note and "seq1-000005" in note
    assert "seq3-000007" in capsys.readouterr().err


# ---------------------------------------------------------------- W&B offline
def test_offline_run_logs_both_artifacts(tmp_path):
    out = tmp_path / "o"
    r = run_prepare(*SYN, "--out", out)
    assert r.returncode == 0, r.stderr
    assert (out / params.RAW_DATA_AT / "manifest.json").exists()
    assert (out / params.PROCESSED_DATA_AT / "data_split.csv").exists()
    runs = sorted((Path(os.environ["WANDB_DIR"]) / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    logged = [next(run.glob("*.wandb")).read_bytes() for run in runs]  # the runs' records name what they logged
    assert any(b"raw_data" in log and b"eda_table" in log for log in logged)
    assert any(b"split_data" in log and b"data_split.table" in log for log in logged)
    assert all(str(run) in r.stdout for run in runs)
    assert str(out / params.RAW_DATA_AT) in r.stdout and "offline" in r.stdout


# ---------------------------------------------------------------- a split the data already has (--stages)
def test_stages_keep_the_given_split(tmp_path, capsys):
    tr_images, tr_masks = make_folder(tmp_path / "tr", [0, 1, 4], n=6, videos=3)
    va_images, va_masks = make_folder(tmp_path / "va", [0, 1, 5], n=3, videos=3)
    for f in list(va_images.iterdir()) + list(va_masks.iterdir()):  # other names, same video groups as train
        f.rename(f.with_name("v" + f.name))
    prepare.main(["--source", "folder", "--images", tr_images, va_images, "--masks", tr_masks, va_masks,
                  "--stages", "train,valid", "--out", tmp_path / "o", *FAST])
    split = pd.read_csv(tmp_path / "o" / params.PROCESSED_DATA_AT / "data_split.csv")
    assert sorted(split[split.Stage == "train"].File_Name) == sorted(p.name for p in tr_images.iterdir())
    assert sorted(split[split.Stage == "valid"].File_Name) == sorted(p.name for p in va_images.iterdir())
    manifest = layout.read_manifest(tmp_path / "o" / params.PROCESSED_DATA_AT)
    assert manifest["stratify"] == "given" and manifest["images"] == {"train": 6, "valid": 3, "test": 0}
    assert "stages: train,valid" in (tmp_path / "o" / params.RAW_DATA_AT / "SOURCE.md").read_text()
    assert capsys.readouterr().err == ""  # video ids differ ('vseq0' vs 'seq0'): no leakage warning


def test_stages_warn_on_shared_videos_and_refuse_bad_combinations(tmp_path, capsys):
    a_images, a_masks = make_folder(tmp_path / "a", [0, 1], n=3)
    b_images, b_masks = make_folder(tmp_path / "b", [0, 1], n=6)
    for f in list(b_images.iterdir()) + list(b_masks.iterdir()):
        if int(f.stem.split("-")[1]) < 3:
            f.unlink()  # b keeps seq0-000003.. : the same video groups as a, other files
    prepare.main(["--source", "folder", "--images", a_images, b_images, "--masks", a_masks, b_masks,
                  "--stages", "train,test", "--out", tmp_path / "o", *FAST])
    assert "appear in more than one of the given stages" in capsys.readouterr().err
    base = ["--source", "folder", "--masks", a_masks, b_masks, "--out", tmp_path / "x", "--no-wandb"]
    for extra, message in [(["--images", a_images, b_images], "need --stages"),
                           (["--images", a_images, b_images, "--stages", "train"], "one mask folder"),
                           (["--images", a_images, b_images, "--stages", "train,valid", "--fractions", "0.5,0.3,0.2"],
                            "do not apply"),
                           (["--images", a_images, a_images, "--stages", "train,valid"], "share file names")]:
        r = run_prepare(*base, *extra)
        assert r.returncode == 2 and message in r.stderr, (extra, r.stderr)
    r = run_prepare(*base, "--images", a_images, b_images, "--stages", "train,holdout")
    assert r.returncode == 2 and "unknown stage" in r.stderr
    assert_nothing_left(tmp_path / "x")


def test_hold_out_splits_a_selection_set_from_train_by_video(tmp_path):
    tr_images, tr_masks = make_folder(tmp_path / "tr", [0, 1, 4], n=6, videos=3)  # seq0, seq1, seq2
    te_images, te_masks = make_folder(tmp_path / "te", [0, 1, 5], n=3, videos=3)
    for f in list(te_images.iterdir()) + list(te_masks.iterdir()):
        f.rename(f.with_name("t" + f.name))
    prepare.main(["--source", "folder", "--images", tr_images, te_images, "--masks", tr_masks, te_masks,
                  "--stages", "train,test", "--hold-out", "seq1", "--out", tmp_path / "o", *FAST])
    split = pd.read_csv(tmp_path / "o" / params.PROCESSED_DATA_AT / "data_split.csv")
    stage = dict(zip(split.File_Name, split.Stage))
    for f in tr_images.iterdir():
        assert stage[f.name] == ("valid" if f.stem.startswith("seq1-") else "train"), f.name
    assert all(stage[f.name] == "test" for f in te_images.iterdir())
    assert "hold_out: seq1" in (tmp_path / "o" / params.RAW_DATA_AT / "SOURCE.md").read_text()
    both = ["--images", tr_images, te_images, "--masks", tr_masks, te_masks]
    for extra, message in [([*both, "--stages", "train,test", "--hold-out", "seq9"], "no such video group"),
                           ([*both, "--stages", "test,test", "--hold-out", "tseq0"], "no such video group"),
                           (["--images", tr_images, "--masks", tr_masks, "--hold-out", "seq1"], "needs --stages")]:
        r = run_prepare("--source", "folder", *extra, "--out", tmp_path / "x", "--no-wandb")
        assert r.returncode == 2 and message in r.stderr, (extra, r.stderr)
    assert_nothing_left(tmp_path / "x")


# ---------------------------------------------------------------- same bytes as the committed import
BEFORE = "ed632ef"  # the import code before it stopped decoding copied images and hashing files twice


def committed_code(tmp_path):
    """The package and data step as committed at BEFORE, unpacked into a temp folder (skip without git)."""
    dest = tmp_path / "before"
    dest.mkdir()
    r = subprocess.run(f"git archive {BEFORE} bddseg data | tar -x -C {dest}", shell=True, cwd=ROOT,
                       capture_output=True)
    if r.returncode or not (dest / "data" / "prepare.py").is_file():
        pytest.skip(f"commit {BEFORE} not available: {r.stderr.decode()[-200:]}")
    return dest


def run_in(code_root, cwd, *args):
    """data/prepare.py of `code_root` (its own bddseg first on the import path) run in `cwd` with a relative --out."""
    cwd.mkdir()
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    r = subprocess.run([sys.executable, str(code_root / "data" / "prepare.py"), *map(str, args), "--out", "out"],
                       capture_output=True, text=True, cwd=cwd, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    return cwd / "out"


def test_outputs_are_byte_identical_to_the_committed_import(tmp_path):
    before = committed_code(tmp_path)
    bdd = make_bdd(tmp_path / "bdd", "colormaps", n=6)
    images, masks = make_folder(tmp_path / "folder", [0, 3, 6, 8, 9, 11], n=6)
    png = images / "seq2-000005.png"  # a PNG image among the JPEGs: copied too
    Image.open(images / "seq2-000005.jpg").save(png)
    (images / "seq2-000005.jpg").unlink()
    for stem, extra in (("seq0-000000", {"transparency": 0}), ("seq1-000001", {"icc_profile": b"\0" * 128})):
        mask = masks / f"{stem}.png"  # ancillary chunks of the source mask are not carried into ours
        with Image.open(mask) as im:
            im.load()
            im.save(mask, **extra)
    sources = {"synthetic": [*SYN], "bdd": ["--source", "bdd100k", "--root", bdd],
               "folder": ["--source", "folder", "--images", images, "--masks", masks, "--mapping", "camvid"]}
    for name, args in sources.items():
        old = run_in(before, tmp_path / f"{name}_old", *args, "--no-wandb")
        new = run_in(ROOT, tmp_path / f"{name}_new", *args, "--no-wandb")
        files = sorted(str(p.relative_to(old)) for p in old.rglob("*") if p.is_file())
        assert files == sorted(str(p.relative_to(new)) for p in new.rglob("*") if p.is_file())
        assert len(files) > 20
        for f in files:  # every file, manifests and SOURCE.md included
            assert (old / f).read_bytes() == (new / f).read_bytes(), (name, f)
        for folder in new.iterdir():  # reused hashes are the files' own
            assert layout.check_manifest(folder, full=True) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_ordered_map_keeps_order_and_runs_meanwhile_once_before_the_results(workers):
    """import_all's map: results in input order; `meanwhile` (prepare.py: loading the splitter) runs once, in this
    process, after the tasks are handed out and before the first result is taken."""
    import multiprocessing
    from bddseg.importer import ordered_map
    calls = []
    results = ordered_map(abs, [-3, 1, -2, 5, -8], workers,
                          lambda: calls.append(len(multiprocessing.active_children())))
    first = next(results)
    assert calls == [workers if workers > 1 else 0]  # the workers were started before it (no fork after threads)
    assert [first, *results] == [3, 1, 2, 5, 8] and len(calls) == 1
