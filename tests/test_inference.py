"""inference.score on the CPU: the argmax of bilinearly upsampled logits without resizing every channel, and the
loss at the model's resolution, against torch's own resize and cross-entropy."""
import pytest
import torch
import torch.nn.functional as F

from bddseg import config, inference
from bddseg.inference import score, upsampled_argmax


def smooth_logits(c, h, w, seed=0, period=8):
    """Logits that vary like a segmentation model's: a few regions per frame, channels_last as predict makes them."""
    g = torch.Generator().manual_seed(seed)
    lg = F.interpolate(torch.randn(1, c, h // period + 2, w // period + 2, generator=g), size=(h, w), mode="bilinear")
    return (lg * 4).contiguous(memory_format=torch.channels_last)[0]


def reference(lg, size):
    return F.interpolate(lg[None], size=size, mode="bilinear", align_corners=False)[0].argmax(0).to(torch.uint8)


def boundary_share(lg, size) -> float:
    """Share of output pixels whose 2x2 source block disagrees on the argmax (what upsampled_argmax interpolates)."""
    codes = inference.block_codes(lg.argmax(0).to(torch.uint8))
    y0 = inference.source_index(lg.shape[1], size[0])[0]
    x0 = inference.source_index(lg.shape[2], size[1])[0]
    return (codes.index_select(0, y0).index_select(1, x0) == inference.CODE_NONE).float().mean().item()


@pytest.mark.parametrize("low,size", [((24, 42), (180, 320)), ((45, 80), (360, 480)), ((18, 32), (18, 32)),
                                      ((7, 9), (13, 31)), ((40, 60), (30, 50)), ((33, 57), (100, 100))])
def test_equals_the_full_resize_and_argmax(low, size, monkeypatch):
    monkeypatch.setattr(inference, "MAX_BOUNDARY", 1.0)  # never the fallback: the block test and the gathers answer
    for seed in range(3):
        lg = smooth_logits(7, *low, seed=seed, period=4)
        assert torch.equal(upsampled_argmax(lg, size), reference(lg, size))


def test_a_model_like_frame_takes_the_fast_path(monkeypatch):
    lg, size = smooth_logits(7, 96, 170, period=24), (720, 1280)  # a few regions, as a trained model's output
    assert 0 < boundary_share(lg, size) < inference.MAX_BOUNDARY
    monkeypatch.setattr(inference.F, "interpolate", None)  # the full resize is not called
    got = upsampled_argmax(lg, size)
    monkeypatch.undo()
    assert torch.equal(got, reference(lg, size))


def test_noisy_logits_take_the_whole_resize(monkeypatch):
    lg = torch.randn(7, 24, 42, generator=torch.Generator().manual_seed(1))  # an untrained model: boundaries everywhere
    assert boundary_share(lg, (180, 320)) > inference.MAX_BOUNDARY
    calls, resize = [], F.interpolate
    monkeypatch.setattr(inference.F, "interpolate", lambda *a, **k: calls.append(1) or resize(*a, **k))
    assert torch.equal(upsampled_argmax(lg, (180, 320)), reference(lg, (180, 320))) and calls


def test_score_loss_at_the_model_resolution():
    lg = smooth_logits(7, 24, 42)[None]
    target = torch.randint(0, 7, (1, 96, 168), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    target[0, :10] = config.IGNORE
    pred, loss = score(lg, target)
    assert torch.equal(pred[0], reference(lg[0], (96, 168)))
    small = target[:, ::4, ::4]  # nearest at an exact factor of 4: every 4th pixel
    mean = F.cross_entropy(lg, small.long(), ignore_index=config.IGNORE)
    assert loss.item() == pytest.approx(mean.item() * int((target != config.IGNORE).sum()), rel=1e-5)
    same = target[:, ::4, ::4].clone()  # same size: exactly the summed full-resolution cross-entropy
    _, loss_same = score(lg, same)
    exact = F.cross_entropy(lg, same.long(), ignore_index=config.IGNORE, reduction="sum")
    assert loss_same.item() == pytest.approx(exact.item(), rel=1e-6)


CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("n_in,n_out", [(720, 180), (720, 96), (1280, 320), (1280, 171), (360, 180), (481, 97),
                                        (7, 100), (1080, 1080)])
def test_nearest_index_is_torchs_nearest_resize(n_in, n_out, device):
    x = torch.arange(n_in, dtype=torch.float32, device=device)[None, None, :, None]
    expected = F.interpolate(x, size=(n_out, 1), mode="nearest")[0, 0, :, 0].long()
    got = inference.nearest_index(n_in, n_out, device)
    assert got.device.type == device and torch.equal(got, expected)
