"""HD95 and boundary F1 on masks whose boundaries are counted by hand.

Truth: two touching nuclei (rows 2-5, columns 2-6 and 7-9) whose union is the 4 x 8 block
rows 2-5, columns 2-9. Its inner boundary is the ring top (8) + bottom (8) + left (2) +
right (2) = 20 pixels. Objects stay away from the image edge.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sa2_pipeline.metrics.boundary import boundary_f1, boundary_scores, hd95, mask_boundary


def _mask(*column_ranges: tuple[int, int]) -> np.ndarray:
    mask = np.zeros((9, 16), dtype=np.uint8)
    for start, stop in column_ranges:
        mask[2:6, start:stop] = 1
    return mask


TRUTH = _mask((2, 7), (7, 10))


def test_ring_size():
    assert np.count_nonzero(mask_boundary(TRUTH)) == 20


def test_two_touching_nuclei_predicted_merged_one_column_too_wide():
    # Prediction: one block over columns 2-10, ring 9 + 9 + 2 + 2 = 22 pixels. The 4 pixels
    # of column 10 are 1 px from the truth ring, the other 18 lie on it; the truth's right
    # column (2 px) is 1 px from the prediction's ring, the other 18 lie on it.
    pred = _mask((2, 11))
    # P95 of 18 zeros + 4 ones (linear interpolation at rank 19.95) = 1; of 18 + 2: 1.
    assert hd95(pred, TRUTH) == pytest.approx(1.0)
    assert boundary_f1(pred, TRUTH, tolerance=1) == 1.0
    # Tolerance 0: precision 18/22, recall 18/20 -> F1 = 2PR / (P + R) = 6/7.
    assert boundary_f1(pred, TRUTH, tolerance=0) == pytest.approx(6 / 7)


def test_split_nucleus_with_a_gap():
    # Prediction: columns 2-5 (ring 12 px) and 7-9 (ring 10 px), background column 6.
    # Prediction -> truth: 4 pixels (columns 5 and 7, rows 3-4) are 1 px away, 18 on it.
    # Truth -> prediction: (2, 6) and (5, 6) are 1 px away, 18 on it.
    pred = _mask((2, 6), (7, 10))
    assert hd95(pred, TRUTH) == pytest.approx(1.0)
    assert boundary_f1(pred, TRUTH, tolerance=0) == pytest.approx(6 / 7)
    assert boundary_f1(pred, TRUTH, tolerance=2) == 1.0


def test_far_outliers_count_only_beyond_the_95th_percentile():
    # A 1-pixel false positive at (3, 13) is its own boundary pixel, 4 px from the truth ring
    # ((3, 9)). Prediction -> truth: 20 zeros and one 4; P95 at rank 0.95 * 20 = 19 -> 0.
    # Truth -> prediction: the ring is part of the prediction's boundary -> all 0.
    pred = TRUTH.copy()
    pred[3, 13] = 1
    assert hd95(pred, TRUTH) == 0.0
    # A 4 x 2 blob at columns 12-13: 8 boundary pixels, 4 at distance 3 and 4 at 4, beside
    # the 20 zeros. P95 at rank 0.95 * 27 = 25.65 falls among the fours -> 4.
    pred[2:6, 12:14] = 1
    assert hd95(pred, TRUTH) == pytest.approx(4.0)


def test_empty_prediction_and_empty_truth():
    empty = np.zeros_like(TRUTH)
    for pred, truth in ((empty, TRUTH), (TRUTH, empty)):
        scores = boundary_scores(pred, truth)
        assert math.isnan(scores["hd95"]) and scores["boundary_f1"] == 0.0
    assert boundary_scores(empty, empty) == {"hd95": 0.0, "boundary_f1": 1.0}
    assert boundary_scores(TRUTH, TRUTH) == {"hd95": 0.0, "boundary_f1": 1.0}


def test_bad_input():
    with pytest.raises(ValueError, match="one shape"):
        hd95(np.zeros((3, 3)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="tolerance"):
        boundary_f1(TRUTH, TRUTH, tolerance=-1)
