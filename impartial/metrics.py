"""Instance and foreground scores of a predicted label image against ground truth.

Objects are matched one-to-one by IoU (Hungarian where a match is ambiguous). At an IoU threshold t a matched
pair with IoU >= t is a true positive; unmatched predictions are false positives, unmatched ground-truth objects
false negatives. Headline numbers follow the method: F1 = 2TP / (2TP + FP + FN), precision, recall and
"AP" = TP / (TP + FP + FN) at IoU 0.5, and mAP = mean AP over IoU 0.50:0.05:0.95.

Empty images: when ground truth and prediction are both empty, every score is 1.0 (nothing to find, nothing
invented). Otherwise a ratio whose denominator is zero (e.g. precision with no predictions) is 0.0.

Everything is computed from one sparse joint histogram of label pairs, so a 2048 x 2048 image with thousands of
cells takes well under a second.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment

from .errors import InputError

# Rounded so that an IoU of exactly 0.6 counts at the 0.6 threshold (np.arange gives 0.6000000000000001).
MAP_THRESHOLDS = np.round(np.arange(0.5, 1.0, 0.05), 2)
# Dense joint histograms up to this many label pairs (128 MiB of int64); sparse counting above it.
_DENSE_PAIR_LIMIT = 2**24


def match_instances(gt: np.ndarray, pred: np.ndarray) -> sparse.csr_array:
    """IoU of every ground-truth object with every predicted object.

    Args:
        gt: (H, W) non-negative integer ground-truth labels, 0 = background.
        pred: (H, W) non-negative integer predicted labels, 0 = background.

    Returns:
        (n_true, n_pred) sparse float64 IoU matrix. Row i is the i-th smallest id present in ``gt``, column j the
        j-th smallest id present in ``pred``; pairs that do not overlap are absent (IoU 0).
    """
    _check_labels(gt, pred)
    gt_index, gt_area = _compact(gt)
    pred_index, pred_area = _compact(pred)
    n_true, n_pred = len(gt_area), len(pred_area)
    overlap = (gt_index > 0) & (pred_index > 0)
    # One key per (gt, pred) pair of compact ids, both counted from 1.
    keys = (gt_index[overlap].astype(np.int64) - 1) * n_pred + (pred_index[overlap] - 1)
    pair_keys, intersection = _count_keys(keys, n_true * n_pred)
    rows, cols = np.divmod(pair_keys, max(n_pred, 1))
    union = gt_area[rows] + pred_area[cols] - intersection
    return sparse.csr_array((intersection / union, (rows, cols)), shape=(n_true, n_pred))


def count_true_positives(iou: sparse.csr_array, threshold: float) -> int:
    """Largest number of one-to-one pairs with IoU >= ``threshold``.

    Pairs whose ground-truth and predicted object have no other candidate are matched directly (always the case
    above IoU 0.5); only the ambiguous rest goes through the Hungarian algorithm, which maximises the number of
    matches and, among equal counts, the summed IoU.
    """
    pairs = iou.tocoo()
    keep = pairs.data >= threshold
    rows, cols, values = pairs.row[keep], pairs.col[keep], pairs.data[keep]
    row_degree = np.bincount(rows, minlength=iou.shape[0])
    col_degree = np.bincount(cols, minlength=iou.shape[1])
    alone = (row_degree[rows] == 1) & (col_degree[cols] == 1)
    return int(alone.sum()) + _hungarian_matches(rows[~alone], cols[~alone], values[~alone])


def instance_scores(gt: np.ndarray, pred: np.ndarray, thresholds: np.ndarray = MAP_THRESHOLDS,
                    iou_threshold: float = 0.5) -> dict[str, float | int]:
    """Matching scores of predicted objects against ground truth.

    Args:
        gt: (H, W) integer ground-truth labels, 0 = background.
        pred: (H, W) integer predicted labels of the same shape.
        thresholds: IoU thresholds averaged into ``map``.
        iou_threshold: the IoU at which ``f1``, ``precision``, ``recall``, ``ap``, ``tp``, ``fp``, ``fn`` are counted.

    Returns:
        dict with ``f1``, ``precision``, ``recall``, ``ap``, ``map`` (floats) and ``tp``, ``fp``, ``fn``,
        ``n_true``, ``n_pred`` (ints). See the module docstring for empty images.
    """
    iou = match_instances(gt, pred)
    n_true, n_pred = iou.shape
    tp = count_true_positives(iou, iou_threshold)
    fp, fn = n_pred - tp, n_true - tp
    average_precisions = [_ratio(matched, n_true + n_pred - matched, n_true + n_pred)
                          for matched in (count_true_positives(iou, t) for t in np.atleast_1d(thresholds))]
    return {
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, n_true + n_pred),
        "precision": _ratio(tp, n_pred, n_true + n_pred),
        "recall": _ratio(tp, n_true, n_true + n_pred),
        "ap": _ratio(tp, tp + fp + fn, n_true + n_pred),
        "map": float(np.mean(average_precisions)),
        "tp": tp, "fp": fp, "fn": fn, "n_true": n_true, "n_pred": n_pred,
    }


def foreground_scores(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Dice and Jaccard of the binary foregrounds (label > 0) of two (H, W) label images; 1.0 when both are empty."""
    _check_labels(gt, pred)
    truth, predicted = gt > 0, pred > 0
    intersection = int(np.count_nonzero(truth & predicted))
    total = int(np.count_nonzero(truth)) + int(np.count_nonzero(predicted))
    union = total - intersection
    return {"dice": _ratio(2 * intersection, total, total), "jaccard": _ratio(intersection, union, total)}


def evaluate(gt: np.ndarray, pred: np.ndarray) -> dict[str, float | int]:
    """:func:`instance_scores` and :func:`foreground_scores` in one dict."""
    return {**instance_scores(gt, pred), **foreground_scores(gt, pred)}


def _ratio(numerator: float, denominator: float, n_objects: float) -> float:
    """numerator / denominator; 1.0 when there is nothing at all (n_objects == 0), 0.0 for another empty denominator."""
    if n_objects == 0:
        return 1.0
    return float(numerator / denominator) if denominator else 0.0


def _check_labels(gt: np.ndarray, pred: np.ndarray) -> None:
    for name, labels in (("ground truth", gt), ("prediction", pred)):
        if labels.ndim != 2:
            raise InputError(f"{name} labels must be 2-D (H, W), got shape {labels.shape}")
        if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
            raise InputError(f"{name} labels must be integers, got {labels.dtype}")
        if labels.size and labels.min() < 0:
            raise InputError(f"{name} labels must be non-negative")
    if gt.shape != pred.shape:
        raise InputError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber present ids to 1..n in increasing order.

    Returns the flat (H*W,) compact labels (int32, 0 = background) and the (n,) areas of the objects.
    """
    flat = labels.ravel().astype(np.intp, copy=False)  # bincount and lookups need a signed index type
    areas = np.bincount(flat)
    areas[:1] = 0
    present = np.flatnonzero(areas)
    lookup = np.zeros(len(areas), np.int32)
    lookup[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    return lookup[flat], areas[present]


def _count_keys(keys: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of ``keys`` (each in [0, n_keys)) and how often each occurs."""
    if n_keys <= _DENSE_PAIR_LIMIT:
        counts = np.bincount(keys, minlength=n_keys)
        distinct = np.flatnonzero(counts)
        return distinct, counts[distinct]
    return np.unique(keys, return_counts=True)


def _hungarian_matches(rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> int:
    """Maximum number of one-to-one pairs among candidate pairs (rows[k], cols[k]) with IoU values[k]."""
    if len(rows) == 0:
        return 0
    row_ids, row_index = np.unique(rows, return_inverse=True)
    col_ids, col_index = np.unique(cols, return_inverse=True)
    # A candidate is worth 1 plus a tie-break below 1 in total, so the count of matches always comes first.
    weights = np.zeros((len(row_ids), len(col_ids)))
    weights[row_index, col_index] = 1.0 + values / (min(weights.shape) + 1)
    chosen_rows, chosen_cols = linear_sum_assignment(weights, maximize=True)
    return int(np.count_nonzero(weights[chosen_rows, chosen_cols]))
