"""In-memory loading (decode + resize once), batches from memory, batched augmentation, bad-input errors."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import params
from bddseg import layout
from bddseg.loaders import Augment, TensorLoader, focus_points, get_dls, jitter_color, load_split, rare_weights
from bddseg.cli import UserError

SIZE = params.frame_size(32)  # (32, 56): smaller than the 64x112 files, so resizing is exercised


def test_load_split_decodes_and_resizes_once(tiny_dataset):
    images, masks, names = load_split(tiny_dataset, "train", SIZE)
    df = layout.read_split(tiny_dataset, "train")
    assert names == list(df.File_Name)
    assert images.shape == (len(df), 3, *SIZE) and images.dtype == torch.uint8
    assert masks.shape == (len(df), *SIZE) and masks.dtype == torch.uint8
    # same pixels as PIL's own resize of the file: antialiased bilinear for images, nearest for masks
    ref_img = np.asarray(Image.open(df.image[0]).convert("RGB").resize(SIZE[::-1], Image.BILINEAR)).astype(int)
    diff = np.abs(images[0].permute(1, 2, 0).numpy().astype(int) - ref_img).mean()
    assert diff < 15  # JPEG draft (DCT-scaled) decoding of pure noise; a flipped or BGR image scores ~40-55
    ref_mask = np.asarray(Image.open(df.label[0]).resize(SIZE[::-1], Image.NEAREST))
    np.testing.assert_array_equal(masks[0].numpy(), ref_mask)
    assert set(torch.unique(masks).tolist()) <= set(params.BDD_CLASSES) | {params.IGNORE}


def copy_dataset(src, dst):
    shutil.copytree(src, dst)
    return dst, layout.read_split(dst, "train")


def test_mask_size_mismatch_names_the_file(tiny_dataset, tmp_path):
    root, df = copy_dataset(tiny_dataset, tmp_path / "d")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(df.label[1])
    with pytest.raises(UserError, match=rf"{df.label[1]}.*differs"):
        load_split(root, "train", SIZE)


def test_unreadable_image_and_missing_mask(tiny_dataset, tmp_path):
    root, df = copy_dataset(tiny_dataset, tmp_path / "d")
    open(df.image[2], "wb").write(b"not a jpeg")
    with pytest.raises(UserError, match=rf"{df.image[2]}.*unreadable"):
        load_split(root, "train", SIZE)
    root, df = copy_dataset(tiny_dataset, tmp_path / "e")
    (root / "labels" / layout.label_name(df.File_Name[0])).unlink()
    with pytest.raises(UserError, match="mask missing"):
        load_split(root, "train", SIZE)


def test_changed_dataset_is_refused_by_get_dls(tiny_dataset, tmp_path):
    root, df = copy_dataset(tiny_dataset, tmp_path / "d")
    Image.fromarray(np.zeros((64, 112), np.uint8)).save(df.label[0])  # same size, other content -> other bytes
    with pytest.raises(UserError, match="manifest"):
        get_dls(root, SIZE, 4)


def test_batches_from_memory_cover_every_image_once():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 4, 6).contiguous()
    masks = torch.arange(10, dtype=torch.uint8).view(10, 1, 1).expand(10, 4, 6).contiguous()
    dl = TensorLoader(images, masks, bs=4, shuffle=True, seed=1)
    batches = list(dl)
    assert len(dl) == len(batches) == 3 and [len(b[0]) for b in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.dtype == torch.float32 and y.dtype == torch.long and x.shape == (4, 3, 4, 6)
    torch.testing.assert_close(x[:, 0, 0, 0] * 255, y[:, 0, 0].float())  # image and mask stay paired
    seen = torch.cat([b[1][:, 0, 0] for b in batches]).tolist()
    assert sorted(seen) == list(range(10)) and seen != list(range(10))
    assert len(TensorLoader(images, masks, bs=4, drop_last=True)) == 2
    assert len(TensorLoader(images[:3], masks[:3], bs=4, drop_last=True)) == 1  # never an empty epoch
    # rare-class sampling hook: weights 0 are never drawn
    w = torch.zeros(10)
    w[[2, 7]] = 1
    drawn = torch.cat([b[1][:, 0, 0] for b in TensorLoader(images, masks, bs=5, weights=w)]).unique().tolist()
    assert set(drawn) <= {2, 7}


def test_flip_only_augment_is_exact():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 6, 10, generator=g)
    y = torch.randint(0, 7, (8, 6, 10), generator=g, dtype=torch.uint8)
    ax, ay = Augment(flip=True, max_zoom=1.0, brightness=0, contrast=0)(x, y, generator=g)
    flipped = 0
    for i in range(8):
        if torch.equal(ay[i], y[i]):
            torch.testing.assert_close(ax[i], x[i])
        else:
            assert torch.equal(ay[i], y[i].flip(-1))
            torch.testing.assert_close(ax[i], x[i].flip(-1))
            flipped += 1
    assert 0 < flipped < 8


def test_zoom_crop_keeps_labels_valid_and_gives_out_size():
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 7, (4, 32, 56), generator=g, dtype=torch.uint8)
    y[:, :4] = params.IGNORE
    x = torch.rand(4, 3, 32, 56, generator=g)
    ax, ay = Augment(max_zoom=1.5)(x, y, generator=g)
    assert ax.shape == x.shape and ay.shape == y.shape and ax.min() >= 0 and ax.max() <= 1
    assert set(ay.unique().tolist()) <= set(y.unique().tolist())  # nearest: no invented class ids
    assert not torch.equal(ay, y)
    cx, cy = Augment()(x, y, out_size=(16, 24), generator=g)  # random crops from larger stored frames
    assert cx.shape == (4, 3, 16, 24) and cy.shape == (4, 16, 24)


def test_max_zoom_bounds_the_zoom_in():
    g = torch.Generator().manual_seed(2)
    w = 64
    y = torch.arange(w, dtype=torch.uint8).expand(256, 8, w).contiguous()  # each pixel labelled with its column
    x = torch.rand(256, 3, 8, w, generator=g)
    for max_zoom in (1.25, 2.0):
        _, ay = Augment(flip=False, max_zoom=max_zoom, brightness=0, contrast=0)(x, y, generator=g)
        columns = torch.tensor([len(row.unique()) for row in ay[:, 4]])  # a crop w/zoom wide shows w/zoom columns
        assert columns.max() <= w and columns.min() >= w / max_zoom - 1
        assert columns.min() <= w / max_zoom + 2  # the whole range is drawn, up to max_zoom
    assert columns.float().mean() < w / 1.3  # mean zoom about 1.5 (1.125 at the default 1.25)


def test_jitter_color_matches_its_formula():
    """Each image: x ** gamma (2 ** +-2j), a gain per channel (1 +- j), saturation about the grey value (1 +- 2j),
    clipped to [0, 1] (numpy)."""
    g = torch.Generator().manual_seed(3)
    x, r, j = torch.rand(4, 3, 5, 7, generator=g), torch.rand(4, 5, generator=g), 0.3
    r[0] = 0.5  # u = 0: unchanged
    out = jitter_color(x, j, r).numpy()
    np.testing.assert_allclose(out[0], x[0].numpy(), atol=1e-6)
    u = 2 * r.numpy() - 1
    for i in range(1, 4):
        y = x[i].numpy().astype(np.float64) ** (2.0 ** (2 * j * u[i, 0]))
        y = y * (1 + j * u[i, 1:4])[:, None, None]
        grey = y.mean(0, keepdims=True)
        y = np.clip(grey + (y - grey) * (1 + 2 * j * u[i, 4]), 0, 1)
        np.testing.assert_allclose(out[i], y, atol=1e-5)
    assert not np.allclose(out[1:], x[1:].numpy(), atol=1e-2)


def test_jitter_changes_colours_only():
    """The jitter's random numbers are drawn after the others: same geometry and masks as without it."""
    g = torch.Generator().manual_seed(4)
    x, y = torch.rand(6, 3, 16, 28, generator=g), torch.randint(0, 7, (6, 16, 28), generator=g, dtype=torch.uint8)
    plain_x, plain_y = Augment()(x, y, generator=torch.Generator().manual_seed(5))
    ax, ay = Augment(color_jitter=0.2)(x, y, generator=torch.Generator().manual_seed(5))
    assert torch.equal(ay, plain_y) and ax.shape == x.shape and 0 <= ax.min() and ax.max() <= 1
    assert (ax - plain_x).abs().mean() > 0.01
    again, _ = Augment(color_jitter=0.2)(x, y, generator=torch.Generator().manual_seed(5))
    assert torch.equal(ax, again)  # seeded: the same jitter


def test_no_jitter_draws_what_augment_drew_before():
    """Without jitter a batch takes 7 numbers per image from the generator, as before the option existed."""
    x, y = torch.rand(6, 3, 16, 28), torch.zeros(6, 16, 28, dtype=torch.uint8)
    g, ref = torch.Generator().manual_seed(6), torch.Generator().manual_seed(6)
    Augment()(x, y, generator=g)
    torch.rand(6, 7, generator=ref)
    assert torch.equal(g.get_state(), ref.get_state())
    Augment(color_jitter=0.2)(x, y, generator=g)
    torch.rand(6, 7, generator=ref), torch.rand(6, 5, generator=ref)
    assert torch.equal(g.get_state(), ref.get_state())  # with it: 5 more, after the 7


def test_get_dls_wraps_both_splits(tiny_dataset):
    dls = get_dls(tiny_dataset, SIZE, bs=3, augment=True)
    assert dls.train.n == 8 and dls.valid.n == 2 and len(dls.train) == 2
    x, y = dls.valid.one_batch()
    assert x.shape == (2, 3, *SIZE) and y.shape == (2, *SIZE)
    torch.testing.assert_close(x, dls.valid.images.float() / 255)  # validation is never augmented
    assert dls.train.augment.max_zoom == 1.25
    assert get_dls(tiny_dataset, SIZE, bs=3, max_zoom=2).train.augment.max_zoom == 2
    assert dls.train.augment.color_jitter == 0
    assert get_dls(tiny_dataset, SIZE, bs=3, color_jitter=0.2).train.augment.color_jitter == 0.2
    dls = get_dls(tiny_dataset, SIZE, bs=3, channels_last=True)
    assert all(b[0].is_contiguous(memory_format=torch.channels_last) for dl in dls for b in dl)


def test_focus_crops_contain_the_rare_pixel_and_oversampling_weights():
    n, h, w = 16, 40, 72
    y = torch.ones(n, h, w, dtype=torch.uint8)  # road everywhere
    rng = np.random.default_rng(0)
    spots = [(int(rng.integers(0, h)), int(rng.integers(0, w))) for _ in range(n - 1)]
    for i, (r, c) in enumerate(spots):
        y[i, r, c] = 4  # one person pixel per image, anywhere (corners included); the last image has none
    x = torch.rand(n, 3, h, w)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        _, cy = Augment(focus=1.0)(x, y, out_size=(8, 14), generator=g)
        assert cy.shape == (n, 8, 14)
        assert all((cy[i] == 4).any() for i in range(n - 1))  # every focused crop keeps its person pixel
        assert not (cy[-1] == 4).any()
    _, cy = Augment(focus=0.0)(x, y, out_size=(8, 14), generator=g)
    assert sum(bool((cy[i] == 4).any()) for i in range(n - 1)) < n // 2  # unfocused: an 8x14 crop rarely hits it
    pts = focus_points(y, generator=g)
    assert pts[-1].isnan().all() and (pts[:-1].abs() < 1).all()
    r, c = spots[0]
    torch.testing.assert_close(pts[0], torch.tensor([(c + 0.5) / w * 2 - 1, (r + 0.5) / h * 2 - 1]))
    torch.testing.assert_close(rare_weights(y, 3), torch.tensor([3.0] * (n - 1) + [1.0], dtype=torch.float64))


def test_get_dls_crops_and_oversamples(tiny_dataset):
    dls = get_dls(tiny_dataset, SIZE, bs=3, augment=False, out_size=(16, 28), focus=0.5, oversample=4)
    x, y = dls.train.one_batch()
    assert x.shape == (3, 3, 16, 28) and y.shape == (3, 16, 28)
    assert dls.train.weights is not None and set(dls.train.weights.tolist()) <= {1.0, 4.0}
    assert dls.valid.one_batch()[0].shape[-2:] == SIZE  # validation sees whole frames


def test_focus_points_pick_uniformly_among_rare_pixels():
    y = torch.zeros(2, 3, 4, dtype=torch.uint8)
    y[0, 0, 1] = y[0, 2, 3] = 2  # two light pixels in image 0, none in image 1
    g = torch.Generator().manual_seed(0)
    picks = [tuple(round(v, 4) for v in focus_points(y, generator=g)[0].tolist()) for _ in range(200)]
    a = (round((1 + 0.5) / 4 * 2 - 1, 4), round((0 + 0.5) / 3 * 2 - 1, 4))  # column 1, row 0
    b = (round((3 + 0.5) / 4 * 2 - 1, 4), round((2 + 0.5) / 3 * 2 - 1, 4))  # column 3, row 2
    assert set(picks) == {a, b} and min(picks.count(a), picks.count(b)) > 60  # only rare pixels, about half each
    assert focus_points(y, generator=g)[1].isnan().all()
    again = [focus_points(y, generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    torch.testing.assert_close(again[0], again[1], equal_nan=True)  # the generator decides

