"""Bootstrap intervals and paired comparisons on cases whose answers are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sa2_pipeline.metrics.stats import bootstrap_ci, paired_comparison


def test_two_values_percentile_interval_spans_both():
    # Resampling [0, 1] twice gives means 0, 0.5, 1 with probability 1/4, 1/2, 1/4, so the
    # 2.5 % and 97.5 % quantiles of the bootstrap distribution are 0 and 1.
    ci = bootstrap_ci([0.0, 1.0], method="percentile", n_resamples=2000, seed=1)
    assert ci.estimate == 0.5
    assert (ci.low, ci.high) == (0.0, 1.0)
    assert ci.n == 2


def test_mean_interval_matches_normal_approximation():
    # 50 zeros and 50 ones: mean 0.5, standard error sqrt(0.25 / 100) = 0.05, so the 95 %
    # interval is about 0.5 +- 1.96 * 0.05 = [0.402, 0.598].
    values = np.array([0.0] * 50 + [1.0] * 50)
    ci = bootstrap_ci(values, seed=0)
    assert ci.method == "BCa"
    assert ci.low == pytest.approx(0.402, abs=0.015)
    assert ci.high == pytest.approx(0.598, abs=0.015)


def test_lower_confidence_gives_narrower_interval():
    values = np.linspace(0.0, 1.0, 30)
    wide = bootstrap_ci(values, confidence=0.95, seed=0)
    narrow = bootstrap_ci(values, confidence=0.5, seed=0)
    assert wide.low < narrow.low < narrow.high < wide.high


def test_seed_makes_it_deterministic():
    values = np.random.default_rng(3).random(12)
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert bootstrap_ci(values, seed=7) != bootstrap_ci(values, seed=8)


def test_median_statistic():
    ci = bootstrap_ci([1.0, 2.0, 3.0, 4.0, 100.0], statistic=np.median, method="percentile")
    assert ci.estimate == 3.0
    assert ci.high <= 100.0 and ci.low >= 1.0


def test_constant_values_give_a_point_interval():
    ci = bootstrap_ci([0.7] * 5)
    assert (ci.estimate, ci.low, ci.high, ci.method) == (0.7, 0.7, 0.7, "degenerate")


def test_nan_dropped_and_small_samples_documented():
    ci = bootstrap_ci([math.nan, 0.2, 0.4], method="percentile")
    assert ci.n == 2 and ci.estimate == pytest.approx(0.3)
    one = bootstrap_ci([0.9])
    assert one.n == 1 and one.estimate == 0.9 and math.isnan(one.low) and math.isnan(one.high)
    none = bootstrap_ci([])
    assert none.n == 0 and math.isnan(none.estimate)


def test_invalid_options_raise():
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=1.5)
    with pytest.raises(ValueError, match="one-dimensional"):
        bootstrap_ci(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="method"):
        bootstrap_ci([1.0, 2.0], method="magic")


def test_constant_improvement_is_a_point_and_wilcoxon_exact():
    # Every one of 8 images improves by 0.1: delta is exactly 0.1 whatever is resampled, and
    # the exact two-sided signed-rank p-value is 2 * (1/2)^8 = 0.0078125.
    b = np.linspace(0.5, 0.9, 8)
    result = paired_comparison(b + 0.1, b)
    assert result.n == 8
    assert result.delta == pytest.approx(0.1)
    assert result.delta_low == pytest.approx(0.1) and result.delta_high == pytest.approx(0.1)
    assert result.delta_lower_bound == pytest.approx(0.1)
    assert result.wilcoxon_p == pytest.approx(2 / 2**8)


def test_wilcoxon_hand_counted():
    # Differences 1, -2, 3, 4, 5: ranks equal magnitudes, W- = 2. Subsets of {1..5} with sum
    # <= 2 are {}, {1}, {2}: P(W- <= 2) = 3/32, two-sided p = 6/32.
    b = np.zeros(5)
    result = paired_comparison(b + np.array([1.0, -2.0, 3.0, 4.0, 5.0]), b)
    assert result.delta == pytest.approx(11 / 5)
    assert result.wilcoxon_p == pytest.approx(6 / 32)


def test_paired_interval_ignores_between_image_spread():
    # The images differ a lot (b from 0 to 1) but every difference is 0.04 or 0.06: any
    # resampled mean difference lies in [0.04, 0.06], so the paired interval does too.
    b = np.linspace(0.0, 0.8, 20)
    a = b + np.where(np.arange(20) % 2 == 0, 0.04, 0.06)
    result = paired_comparison(a, b, seed=0)
    assert result.delta == pytest.approx(0.05)
    assert 0.04 <= result.delta_low < 0.05 < result.delta_high <= 0.06
    # The one-sided 95 % bound is a 5 % quantile: above the two-sided 2.5 % one, below delta.
    assert result.delta_low <= result.delta_lower_bound < result.delta
    assert result.mean_a - result.mean_b == pytest.approx(result.delta)


def test_worse_model_has_negative_delta_and_bound():
    rng = np.random.default_rng(0)
    b = rng.random(14)
    a = b - 0.2 + rng.normal(0, 0.02, 14)
    result = paired_comparison(a, b, seed=0)
    assert result.delta_high < 0 and result.delta_lower_bound < 0
    assert result.wilcoxon_p == pytest.approx(2 / 2**14)


def test_identical_models_give_zero_and_p_one():
    a = np.array([0.3, 0.5, 0.8])
    result = paired_comparison(a, a.copy())
    assert (result.delta, result.delta_low, result.delta_high) == (0.0, 0.0, 0.0)
    assert result.wilcoxon_p == 1.0


def test_small_and_nan_pairs_never_crash():
    one = paired_comparison([0.8, math.nan], [0.6, 0.5])
    assert one.n == 1 and one.delta == pytest.approx(0.2)
    assert math.isnan(one.delta_low) and math.isnan(one.wilcoxon_p)
    empty = paired_comparison([], [])
    assert empty.n == 0 and math.isnan(empty.delta)
    with pytest.raises(ValueError, match="same images"):
        paired_comparison([1.0, 2.0], [1.0])


def test_paired_seed_deterministic():
    rng = np.random.default_rng(5)
    a, b = rng.random(10), rng.random(10)
    assert paired_comparison(a, b, seed=2) == paired_comparison(a, b, seed=2)
