"""Synthetic street scenes: deterministic, BDD-like class statistics, and not solvable from pixel colour alone."""
import numpy as np
import pytest

import params
from bddseg import sources, synthetic

SIZE = (320, 180)
N = 40  # 8 videos x 5 frames


@pytest.fixture(scope="module")
def frames():
    """N generated frames (name, rgb, mask) at 320x180."""
    return [synthetic.generate(i, seed=7, size=SIZE) for i in range(N)]


def test_generate_is_deterministic_and_frame_independent():
    a = synthetic.generate(13, seed=3, size=(160, 90))
    synthetic.generate(2, seed=3, size=(160, 90))  # other frames in between change nothing
    b = synthetic.generate(13, seed=3, size=(160, 90))
    c = synthetic.generate(13, seed=4, size=(160, 90))
    assert a[0] == b[0] == "s0002-0003"
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    assert not np.array_equal(a[1], c[1])


def test_shapes_values_and_names(frames):
    _, rgb, mask = frames[0]
    assert rgb.shape == (180, 320, 3) and rgb.dtype == np.uint8
    assert mask.shape == (180, 320) and mask.dtype == np.uint8
    values = set(np.unique(np.stack([f[2] for f in frames])).tolist())
    assert values <= set(params.BDD_CLASSES) | {params.IGNORE}
    assert [f[0] for f in frames[4:6]] == ["s0000-0004", "s0001-0000"]
    assert sources.video_id(frames[5][0]) == "s0001"


def test_class_statistics_are_skewed_like_driving_data(frames):
    masks = np.stack([f[2] for f in frames])
    counts = np.stack([np.bincount(m.ravel(), minlength=256) for m in masks])
    share = counts.sum(0) / counts.sum()
    present = (counts > 0).mean(0)
    assert present[0] == 1 and present[1] == 1 and present[5] >= 0.8       # background, road, vehicles everywhere
    assert share[1] > 0.15 and 0.02 < share[5] < 0.2
    for c in params.RARE_CLASSES:                                          # rare and small, but there
        assert 0 < present[c] < 0.8, params.BDD_CLASSES[c]
        assert 0 < share[c] < 0.01, params.BDD_CLASSES[c]
    with_person = counts[:, 4] > 0
    person_share = counts[with_person, 4] / counts[with_person].sum(1)
    assert np.median(person_share) < 0.005                                 # people are small
    rows = [np.flatnonzero((m == 4).any(1)) for m in masks if (m == 4).any()]
    assert np.median([r.max() - r.min() + 1 for r in rows]) < 0.25 * SIZE[1]


def test_scenes_vary_in_light_and_texture(frames):
    brightness = np.array([f[1].mean() for f in frames])
    assert brightness.max() - brightness.min() > 60                        # day and night
    road_std = [f[1][f[2] == 1].std() for f in frames]
    assert np.median(road_std) > 4                                          # textured, not flat colour


def test_colour_alone_does_not_solve_it(frames):
    """A per-pixel colour lookup (4096 colour bins -> majority class) fit on half the frames stays far from perfect."""
    def bins(rgb):
        return (rgb[..., 0] // 16).astype(int) * 256 + (rgb[..., 1] // 16) * 16 + rgb[..., 2] // 16

    fit, held = frames[::2], frames[1::2]
    hist = np.zeros((4096, 256))
    for _, rgb, mask in fit:
        np.add.at(hist, (bins(rgb).ravel(), mask.ravel()), 1)
    lookup = hist[:, :7].argmax(1)
    ious = []
    truth = np.concatenate([m.ravel() for _, _, m in held])
    pred = np.concatenate([lookup[bins(rgb).ravel()] for _, rgb, _ in held])
    for c in params.BDD_CLASSES:
        inter, union = ((truth == c) & (pred == c)).sum(), ((truth == c) | (pred == c)).sum()
        if union:
            ious.append(inter / union)
    assert np.mean(ious) < 0.5


# Frames of seed 0 whose videos cover day/dusk/night, clear/overcast/rain/fog/snow, lamp light and glow.
STYLED_FRAMES = (2, 7, 12, 17, 37, 127, 162)


@pytest.mark.parametrize("size", [(640, 360), (101, 57)])
def test_render_does_not_depend_on_its_row_blocks(size, monkeypatch):
    """The per-pixel arithmetic runs on blocks of rows: the same bytes as on the whole frame at once, or 7 rows."""
    blocked = [synthetic.generate(i, seed=0, size=size) for i in STYLED_FRAMES]
    for rows in (size[1], 7):
        monkeypatch.setattr(synthetic, "BLOCK", rows)
        for i, (name, rgb, mask) in zip(STYLED_FRAMES, blocked):
            other = synthetic.generate(i, seed=0, size=size)
            assert other[0] == name and np.array_equal(other[1], rgb) and np.array_equal(other[2], mask), (rows, i)


def plain_soften(img, sigma):
    """The blur as plain whole-image passes: [a, 1-2a, a] down the columns then along the rows, edges repeated."""
    passes = int(np.ceil(sigma * sigma / 0.5)) if sigma > 0.2 else 0
    for _ in range(passes):
        a = sigma * sigma / passes / 2
        for axis in (0, 1):
            src = np.moveaxis(img, axis, 0)
            out = src * (1 - 2 * a)
            out[1:] += a * src[:-1]
            out[0] += a * src[0]
            out[:-1] += a * src[1:]
            out[-1] += a * src[-1]
            img = np.moveaxis(out, 0, axis)
    return img


@pytest.mark.parametrize("shape", [(40, 48, 3), (17, 5, 3), (1, 9, 3), (33, 2, 3)])
@pytest.mark.parametrize("sigma", [0.1, 0.5, 1.3, 2.6])
def test_soften_equals_plain_passes(shape, sigma):
    img = np.random.default_rng(0).random(shape, dtype=np.float32)
    assert np.array_equal(synthetic.soften(img.copy(), sigma), plain_soften(img, sigma))


@pytest.mark.parametrize("size", [(640, 360), (102, 58)])
def test_lamp_map_equals_the_whole_layer_resized(size, monkeypatch):
    """The frames' lamp light and glow layers resized only over their lit columns: the bytes of the whole layer."""
    layers = []
    monkeypatch.setattr(synthetic, "render", lambda cv, *_: layers.extend([(cv.light, 2), (cv.glow, 1.5)]) or (0, 0))
    for i in STYLED_FRAMES:
        synthetic.generate(i, seed=0, size=size)
    for layer, radius in layers:
        whole = layer.filter(synthetic.ImageFilter.GaussianBlur(radius)).resize(size, synthetic.Image.BILINEAR)
        assert np.array_equal(synthetic.lamp_map(layer, radius, *size), np.asarray(whole, np.float32))
