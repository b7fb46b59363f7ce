"""Losses ignore 255 everywhere, match their definitions, and class weights follow the train pixel frequencies."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import params
from bddseg.losses import (LOSSES, DiceCELoss, FocalLoss, class_frequencies, class_weights, get_loss,
                           loss_from_config)

C = len(params.BDD_CLASSES)
WEIGHTS = torch.tensor([0.2, 0.5, 3.0, 2.0, 4.0, 1.0, 5.0])


def batch(seed=0, shape=(2, 12, 20)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape[0], C, *shape[1:], generator=g)
    target = torch.randint(0, C, shape, generator=g)
    target[:, :3, :] = params.IGNORE
    return logits, target


@pytest.mark.parametrize("name,weights", [(n, w) for n in LOSSES for w in (None, WEIGHTS)
                                          if n != "wce" or w is not None])
def test_ignored_pixels_change_nothing(name, weights):
    loss = get_loss(name, weights)
    logits, target = batch()
    other = logits.clone()
    other[:, :, :3, :] = torch.randn_like(other[:, :, :3, :]) * 50  # only the ignored rows change
    logits.requires_grad_(True)
    value = loss(logits, target)
    value.backward()
    assert torch.isfinite(value)
    assert loss(other, target).item() == pytest.approx(value.item(), rel=1e-6)
    assert logits.grad[:, :, :3, :].abs().max() == 0  # no gradient flows from ignored pixels
    assert logits.grad[:, :, 3:, :].abs().max() > 0


def test_ce_is_the_mean_over_labelled_pixels():
    logits, target = batch(1)
    keep = target != params.IGNORE
    logp = logits.log_softmax(1).permute(0, 2, 3, 1)[keep]  # pixels x C
    manual = -logp[torch.arange(len(logp)), target[keep]].mean()
    assert get_loss("ce")(logits, target).item() == pytest.approx(manual.item(), rel=1e-5)


def test_weighted_ce_is_the_weighted_mean():
    logits, target = batch(2)
    keep = target != params.IGNORE
    t = target[keep]
    nll = -logits.log_softmax(1).permute(0, 2, 3, 1)[keep][torch.arange(len(t)), t]
    manual = (WEIGHTS[t] * nll).sum() / WEIGHTS[t].sum()
    assert get_loss("wce", WEIGHTS)(logits, target).item() == pytest.approx(manual.item(), rel=1e-5)


def test_focal_with_gamma_zero_is_ce_and_downweights_easy_pixels():
    logits, target = batch(3)
    ce = get_loss("ce")(logits, target)
    assert FocalLoss(gamma=0.0)(logits, target).item() == pytest.approx(ce.item(), rel=1e-5)
    assert FocalLoss(gamma=2.0)(logits, target).item() < ce.item()


def test_dice_ce_is_near_zero_for_a_confident_correct_prediction():
    _, target = batch(4)
    perfect = F.one_hot(target.clamp(max=C - 1), C).permute(0, 3, 1, 2).float() * 30
    assert DiceCELoss()(perfect, target).item() < 1e-3
    wrong = perfect.roll(1, dims=1)
    assert DiceCELoss()(wrong, target).item() > 1.0


def test_class_frequencies_and_weights():
    masks = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1, 2, 255, 255, 255]], dtype=torch.uint8)
    f = class_frequencies(masks)
    np.testing.assert_allclose(f.numpy(), [6 / 9, 2 / 9, 1 / 9, 0, 0, 0, 0])
    for kind, power in (("inv", 1.0), ("sqrt_inv", 0.5), ("root4_inv", 0.25)):
        w = class_weights(f, kind).double()
        assert (w * f).sum().item() == pytest.approx(1.0)  # average pixel weight 1
        assert w[1] / w[0] == pytest.approx((f[0] / f[1]).item() ** power)  # (1/f) ** power
        assert w[2] > w[1] > w[0]  # rarer -> heavier
        assert w[3] == w[:3].max()  # absent classes get the largest weight, never inf
    assert torch.equal(class_weights(f, "none"), torch.ones(C))
    with pytest.raises(ValueError):
        class_weights(f, "median")
    with pytest.raises(ValueError):
        class_weights(torch.zeros(C), "inv")


def test_loss_from_config():
    masks = torch.randint(0, C, (3, 10, 10), dtype=torch.uint8)
    loss, w = loss_from_config("wce", "none", masks)  # wce without weights means sqrt_inv
    expected = class_weights(class_frequencies(masks), "sqrt_inv")
    np.testing.assert_allclose(w, expected.numpy(), rtol=1e-5)
    np.testing.assert_allclose(loss.weight.numpy(), expected.numpy())
    loss, w = loss_from_config("ce", "none", masks)
    assert w is None and loss.weight is None and loss.ignore_index == params.IGNORE
    loss, w = loss_from_config("focal", "inv", masks)
    assert isinstance(loss, FocalLoss) and len(w) == C
    with pytest.raises(ValueError):
        get_loss("hinge")


def test_class_frequencies_any_integer_dtype_and_ignore_index():
    masks = torch.tensor([[0, 0, 1, 3, 255, 9]], dtype=torch.uint8)  # 9: outside the 7 classes, not counted
    expected = [2 / 4, 1 / 4, 0, 1 / 4, 0, 0, 0]
    np.testing.assert_allclose(class_frequencies(masks).numpy(), expected)
    np.testing.assert_allclose(class_frequencies(masks.long()).numpy(), expected)
    np.testing.assert_allclose(class_frequencies(masks, ignore_index=0).numpy(), [0, 1 / 2, 0, 1 / 2, 0, 0, 0])
