"""Uncertainty of test-set metrics: bootstrap intervals and paired model comparisons.

Pure numpy/scipy, no Kedro. Every number here is computed over *images* (one value per
test image), so ``n`` is the number of test images behind it.

* :func:`bootstrap_ci` — a percentile-type confidence interval of a statistic (the mean by
  default) by :func:`scipy.stats.bootstrap` (BCa by default).
* :func:`paired_comparison` — model A against model B on the same images: the mean of the
  per-image differences ``a - b``, its two-sided interval, its one-sided lower bound (paired
  bootstrap, ``alternative="greater"``) and the two-sided Wilcoxon signed-rank p-value
  (:func:`scipy.stats.wilcoxon`).

Both are deterministic for a given ``seed``. Edge cases never raise; they return these
documented values instead:

* NaN inputs are dropped (pairwise in :func:`paired_comparison`); ``n`` counts what is left.
* ``n == 0``: every number is NaN.
* ``n == 1``: the estimate is that value; intervals, lower bound and p-value are NaN (a
  resampling interval or a rank test needs at least two values).
* all values equal (e.g. every difference is 0): the bootstrap distribution is a single
  point, so the interval is ``[v, v]`` and the lower bound is ``v``.
* all differences zero: the Wilcoxon p-value is 1.0 (no image shows any difference).
* when BCa cannot be computed (scipy returns NaN, e.g. a near-degenerate jackknife) the
  percentile interval is used and ``method`` says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Interval", "PairedComparison", "bootstrap_ci", "paired_comparison"]

DEFAULT_RESAMPLES = 9999
_METHODS = ("BCa", "percentile", "basic")


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap confidence interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    n: int
    method: str

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


@dataclass(frozen=True)
class PairedComparison:
    """Model A against model B on the same ``n`` images (``delta = a - b``)."""

    n: int
    mean_a: float
    mean_b: float
    delta: float
    delta_low: float
    delta_high: float
    delta_lower_bound: float
    confidence: float
    wilcoxon_p: float
    method: str

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def _check_options(confidence: float, n_resamples: int, method: str) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")


def _as_1d(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per image), got {array.shape}")
    return array


def _run_bootstrap(data, statistic, *, paired, confidence, n_resamples, seed, method, alternative):
    """``scipy.stats.bootstrap`` with a percentile fallback; returns ``(low, high, method)``."""
    from scipy.stats import bootstrap

    for attempt in dict.fromkeys((method, "percentile")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DegenerateDataWarning: handled by the fallback
            result = bootstrap(
                data,
                statistic,
                n_resamples=n_resamples,
                paired=paired,
                vectorized=True,
                confidence_level=confidence,
                alternative=alternative,
                method=attempt,
                rng=np.random.default_rng(seed),
            )
        low, high = result.confidence_interval
        if not (np.isnan(low) or np.isnan(high)):
            return float(low), float(high), attempt
    return float(low), float(high), attempt


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def bootstrap_ci(
    values,
    statistic: Callable[..., np.ndarray] = _mean,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    method: str = "BCa",
) -> Interval:
    """Bootstrap confidence interval of ``statistic`` over per-image values.

    Args:
        values: One value per image (1-D); NaNs are dropped.
        statistic: Vectorised statistic taking ``(x, axis=...)`` (``np.mean``, ``np.median``).
        confidence: Two-sided confidence level, in (0, 1).
        n_resamples: Bootstrap resamples.
        seed: Seed of the resampling generator (same seed, same interval).
        method: ``"BCa"`` (default), ``"percentile"`` or ``"basic"``.

    Returns:
        :class:`Interval`; see the module docstring for ``n < 2`` and constant values.

    Raises:
        ValueError: On a non-1-D input or an invalid option.
    """
    _check_options(confidence, n_resamples, method)
    array = _as_1d(values, "values")
    array = array[~np.isnan(array)]
    n = int(array.size)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), confidence, 0, "none")
    estimate = float(statistic(array, axis=-1))
    if n == 1:
        return Interval(estimate, float("nan"), float("nan"), confidence, 1, "none")
    if np.all(array == array[0]):
        return Interval(estimate, estimate, estimate, confidence, n, "degenerate")
    low, high, used = _run_bootstrap(
        (array,),
        statistic,
        paired=False,
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
        method=method,
        alternative="two-sided",
    )
    return Interval(estimate, low, high, confidence, n, used)


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a - b, axis=axis)


def _wilcoxon_p(diff: np.ndarray) -> float:
    from scipy.stats import wilcoxon

    if diff.size < 2:
        return float("nan")
    if not np.any(diff):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(wilcoxon(diff, alternative="two-sided").pvalue)


def paired_comparison(
    a,
    b,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    method: str = "BCa",
) -> PairedComparison:
    """Compare two models' per-image scores on the same images.

    Images are resampled as pairs (``scipy.stats.bootstrap(paired=True)``), so the interval
    reflects the spread of the per-image differences, not of each model's scores.

    Args:
        a: Per-image scores of model A (e.g. SA2-Net), 1-D.
        b: Per-image scores of model B (e.g. the U-Net) on the same images, same order.
        confidence: Level of the two-sided interval and of the one-sided lower bound.
        n_resamples: Bootstrap resamples.
        seed: Seed of the resampling generator.
        method: Bootstrap interval method (see :func:`bootstrap_ci`).

    Returns:
        :class:`PairedComparison` with ``delta = mean(a - b)``, ``[delta_low, delta_high]``
        (two-sided), ``delta_lower_bound`` (one-sided: ``delta`` is at least this with
        ``confidence``) and the two-sided Wilcoxon signed-rank p-value (zero differences
        dropped, scipy's default). Edge cases: see the module docstring.

    Raises:
        ValueError: If ``a`` and ``b`` differ in length, are not 1-D, or an option is invalid.
    """
    _check_options(confidence, n_resamples, method)
    a, b = _as_1d(a, "a"), _as_1d(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must score the same images: lengths {a.size} and {b.size}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    n = int(a.size)
    nan = float("nan")
    if n == 0:
        return PairedComparison(0, nan, nan, nan, nan, nan, nan, confidence, nan, "none")
    diff = a - b
    delta = float(diff.mean())
    common = (n, float(a.mean()), float(b.mean()), delta)
    if n == 1:
        return PairedComparison(*common, nan, nan, nan, confidence, nan, "none")
    if np.all(diff == diff[0]):
        return PairedComparison(
            *common, delta, delta, delta, confidence, _wilcoxon_p(diff), "degenerate"
        )
    options = dict(
        paired=True, confidence=confidence, n_resamples=n_resamples, seed=seed, method=method
    )
    low, high, used = _run_bootstrap((a, b), _mean_difference, alternative="two-sided", **options)
    lower, _, _ = _run_bootstrap((a, b), _mean_difference, alternative="greater", **options)
    return PairedComparison(*common, low, high, lower, confidence, _wilcoxon_p(diff), used)
