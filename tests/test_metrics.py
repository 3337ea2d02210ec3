"""Instance matching and scores on hand-made label images with known IoUs."""

import numpy as np
import pytest

from impartial.errors import InputError
from impartial.metrics import count_true_positives, evaluate, foreground_scores, instance_scores, match_instances


def strip(*spans: tuple[int, int, int], length: int = 20) -> np.ndarray:
    """A (1, length) label image: each (start, stop, id) span painted in order."""
    labels = np.zeros((1, length), np.int32)
    for start, stop, object_id in spans:
        labels[0, start:stop] = object_id
    return labels


def test_iou_matrix_uses_sorted_present_ids():
    gt = strip((0, 10, 7), (10, 20, 1000))
    pred = strip((3, 15, 5), (0, 3, 2))
    iou = match_instances(gt, pred).toarray()
    # rows: gt 7, 1000; columns: pred 2, 5
    expected = np.array([[3 / 10, 7 / 15], [0.0, 5 / 17]])
    np.testing.assert_allclose(iou, expected)


def test_hungarian_prefers_more_matches_over_the_best_single_pair():
    gt = strip((0, 10, 1), (10, 20, 2))
    pred = strip((3, 15, 1), (0, 1, 2))  # pred 1: IoU 7/15 with gt 1, 5/17 with gt 2; pred 2: 1/10 with gt 1
    iou = match_instances(gt, pred)
    # The single best pair (0.467) outscores both other pairs together (0.394): a plain IoU maximum finds 1.
    assert count_true_positives(iou, 0.09) == 2
    assert count_true_positives(iou, 0.2) == 1
    assert count_true_positives(iou, 0.5) == 0


def test_scores_of_one_partial_match_one_miss_one_false_positive():
    gt = np.zeros((20, 30), np.int32)
    pred = np.zeros_like(gt)
    gt[0:10, 0:10] = 1
    pred[0:6, 0:10] = 4  # inside gt 1: IoU exactly 60 / 100
    gt[12:16, 12:16] = 2  # missed
    pred[12:16, 20:24] = 9  # invented
    scores = instance_scores(gt, pred)
    assert (scores["tp"], scores["fp"], scores["fn"], scores["n_true"], scores["n_pred"]) == (1, 1, 1, 2, 2)
    assert scores["f1"] == pytest.approx(0.5)
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(0.5)
    assert scores["ap"] == pytest.approx(1 / 3)
    # Matched at IoU 0.50, 0.55 and 0.60 (AP 1/3 each), unmatched at the other 7 thresholds (AP 0).
    assert scores["map"] == pytest.approx(3 / 10 / 3)


def test_perfect_prediction_with_other_ids():
    gt = np.zeros((16, 16), np.int32)
    gt[2:6, 2:6], gt[8:14, 8:12] = 1, 2
    pred = np.where(gt == 1, 50, np.where(gt == 2, 3, 0))
    scores = evaluate(gt, pred)
    assert scores["f1"] == scores["map"] == scores["dice"] == scores["jaccard"] == 1.0
    assert scores["tp"] == 2


def test_empty_images():
    empty = np.zeros((8, 8), np.int32)
    one = empty.copy()
    one[2:4, 2:4] = 1
    both_empty = evaluate(empty, empty)
    assert both_empty["f1"] == both_empty["map"] == both_empty["precision"] == both_empty["dice"] == 1.0
    nothing_found = instance_scores(one, empty)
    found = (nothing_found["f1"], nothing_found["precision"], nothing_found["recall"], nothing_found["fn"])
    assert found == (0, 0, 0, 1)
    all_invented = instance_scores(empty, one)
    assert (all_invented["f1"], all_invented["map"], all_invented["fp"]) == (0, 0, 1)


def test_foreground_scores_by_hand():
    gt = strip((0, 10, 1))
    pred = strip((5, 15, 2))
    scores = foreground_scores(gt, pred)
    assert scores["dice"] == pytest.approx(2 * 5 / 20)
    assert scores["jaccard"] == pytest.approx(5 / 15)


@pytest.mark.parametrize("pred", [np.zeros((4, 5), np.int32), np.zeros((4, 4), np.float32),
                                  np.full((4, 4), -1, np.int32)])
def test_bad_labels_raise(pred):
    with pytest.raises(InputError):
        evaluate(np.zeros((4, 4), np.int32), pred)
