"""The one-accumulator metrics against sklearn on random masks with ignore pixels, nan handling, fastai views."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, jaccard_score

import params
from bddseg.metrics import (CLASS_KEYS, METRIC_KEYS, ConfusionAccumulator, confusion, iou_from_confusion,
                            seg_metrics)

C = len(params.BDD_CLASSES)


def random_masks(seed, shape=(4, 24, 40), ignore_frac=0.1, classes=range(C)):
    """Random target and prediction maps; a share of target pixels set to IGNORE."""
    rng = np.random.default_rng(seed)
    target = rng.choice(list(classes), size=shape).astype(np.int64)
    pred = np.where(rng.random(shape) < 0.6, target, rng.choice(list(classes), size=shape))
    target[rng.random(shape) < ignore_frac] = params.IGNORE
    return torch.from_numpy(pred), torch.from_numpy(target)


def test_keys_are_the_course_keys():
    assert METRIC_KEYS == ["miou", "background_iou", "road_iou", "traffic_light_iou", "traffic_sign_iou",
                           "person_iou", "vehicle_iou", "bicycle_iou", "pixel_acc"]


@pytest.mark.parametrize("seed,classes", [(0, range(C)), (1, range(C)), (2, (0, 1, 3, 5))])
def test_confusion_and_ious_match_sklearn(seed, classes):
    pred, target = random_masks(seed, classes=classes)
    keep = (target != params.IGNORE).numpy().ravel()
    t, p = target.numpy().ravel()[keep], pred.numpy().ravel()[keep]
    cm = confusion(pred, target)
    np.testing.assert_array_equal(cm.numpy(), confusion_matrix(t, p, labels=list(range(C))))
    m = iou_from_confusion(cm)
    ref = jaccard_score(t, p, labels=list(range(C)), average=None, zero_division=0)
    ref[[c not in t and c not in p for c in range(C)]] = np.nan
    np.testing.assert_allclose([m[f"{k}_iou"] for k in CLASS_KEYS], ref, rtol=1e-12)
    assert m["miou"] == pytest.approx(np.nanmean(ref), rel=1e-12)
    assert m["pixel_acc"] == pytest.approx(accuracy_score(t, p), rel=1e-12)


def test_absent_classes_are_nan_and_left_out_of_the_mean():
    # classes 0..3 only in the target; prediction also uses 4 (false positives) but never 5 or 6
    pred, target = random_masks(3, classes=range(4))
    pred[0, 0, :5] = 4
    target[0, 0, :5] = 1
    m = iou_from_confusion(confusion(pred, target))
    assert math.isnan(m["vehicle_iou"]) and math.isnan(m["bicycle_iou"])  # in neither target nor prediction
    assert m["person_iou"] == 0.0  # predicted but never true: counts as 0, not nan
    present = [m[f"{k}_iou"] for k in CLASS_KEYS[:5]]
    assert m["miou"] == pytest.approx(np.mean(present))


def test_all_ignore_gives_nan_not_an_error():
    target = torch.full((2, 8, 8), params.IGNORE)
    m = iou_from_confusion(confusion(torch.zeros(2, 8, 8, dtype=torch.long), target))
    assert all(math.isnan(v) for v in m.values())


def test_prefix_for_eval_keys():
    pred, target = random_masks(4)
    m = iou_from_confusion(confusion(pred, target), prefix="test_")
    assert set(m) == {f"test_{k}" for k in METRIC_KEYS}


def test_accumulator_over_batches_equals_whole_set_and_views_share_it():
    pred, target = random_masks(5, shape=(6, 16, 16))
    logits = torch.nn.functional.one_hot(pred, C).permute(0, 3, 1, 2).float()  # argmax(logits) == pred
    whole = iou_from_confusion(confusion(pred, target))
    mets = seg_metrics()
    assert [m.name for m in mets] == METRIC_KEYS
    assert len({id(m.acc) for m in mets}) == 1 and sum(m.owner for m in mets) == 1
    for m in mets:
        m.reset()
    for i in range(0, 6, 2):  # three validation batches, as fastai's Recorder feeds them
        learn = SimpleNamespace(pred=logits[i:i + 2], yb=(target[i:i + 2],))
        for m in mets:
            m.accumulate(learn)
    for m in mets:
        np.testing.assert_equal(m.value, whole[m.name])
    assert int(mets[0].acc.cm.sum()) == int((target != params.IGNORE).sum())  # counted once, not 9 times


def test_reset_starts_a_new_pass():
    acc = ConfusionAccumulator()
    pred, target = random_masks(6)
    acc.update(torch.nn.functional.one_hot(pred, C).permute(0, 3, 1, 2).float(), target)
    first = acc.results()["miou"]
    acc.reset()
    assert acc.cm.sum() == 0
    acc.update(torch.nn.functional.one_hot(pred, C).permute(0, 3, 1, 2).float(), target)
    assert acc.results()["miou"] == first


def test_fixed_size_count_for_gpus_equals_bincount():
    """The GPU path of the confusion count (index_add into a fixed size: bincount syncs there) gives bincount's."""
    from bddseg.metrics import count_values
    idx = torch.randint(0, 50, (10_000,), generator=torch.Generator().manual_seed(0))
    idx[:7] = 63  # the spare (ignore) bin, last of 64
    ref = torch.bincount(idx, minlength=64)
    assert torch.equal(count_values(idx, 64, fixed=True), ref) and torch.equal(count_values(idx, 64), ref)
    assert count_values(idx, 64, fixed=True).dtype == torch.int64


def test_accumulator_matrix_stays_on_the_batches_device():
    pred, target = random_masks(7)
    logits = torch.nn.functional.one_hot(pred, C).permute(0, 3, 1, 2).float()
    acc = ConfusionAccumulator()
    acc.update(logits, target)
    assert acc.cm.device == logits.device and isinstance(acc.cm, torch.Tensor)  # summed there, read in results()
    assert acc.results() == iou_from_confusion(confusion(pred, target).numpy())
