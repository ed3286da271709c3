"""The promotion gate: is the challenger truly better than the champion?

Both models are scored per image on the same frozen test set. The challenger is promoted
only if

1. the one-sided lower confidence bound (``registry.gate_confidence``) of the mean
   per-image Dice difference *challenger - champion*, from a paired bootstrap over the
   test images (:func:`sa2_pipeline.metrics.stats.paired_comparison`), is above
   ``registry.promotion_margin``; and
2. no class's mean Dice drops by more than ``registry.class_tolerance`` (for a binary
   task the one class is the foreground, i.e. the Dice itself).

With no champion the challenger is promoted. Everything the decision rests on (n, the
difference with its interval and lower bound, the Wilcoxon p-value, each class's change,
the settings) is returned in :class:`GateResult`; ``sa2_pipeline.tracking.champion``
writes it on the model version as ``sa2.gate.*`` tags. The statistics are pure: no MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from sa2_pipeline.metrics.stats import paired_comparison

if TYPE_CHECKING:
    from sa2_pipeline.config import RegistryConfig

__all__ = ["GATE_METRIC", "GateResult", "class_columns", "require_metric", "statistical_gate"]

#: The per-image column the gate compares.
GATE_METRIC = "dice"

# The settings as the gate's record and tags name them (``sa2.gate.margin``...: registries
# already hold these names) -> the ``registry.*`` setting.
_SETTING_NAMES = {"confidence": "gate_confidence", "margin": "promotion_margin",
                  "class_tolerance": "class_tolerance"}
_NUMBERS = ("n", "candidate_mean", "champion_mean", "delta", "delta_low", "delta_high",
            "lower_bound", "wilcoxon_p")


@dataclass(frozen=True)
class GateResult:
    """The gate's decision, the numbers behind it and the settings it ran with."""

    promote: bool
    reason: str
    metric: str
    config: RegistryConfig = field(repr=False)
    n: int | None = None
    candidate_mean: float | None = None
    champion_mean: float | None = None
    delta: float | None = None
    delta_low: float | None = None
    delta_high: float | None = None
    lower_bound: float | None = None
    wilcoxon_p: float | None = None
    class_deltas: dict[str, float] = field(default_factory=dict)

    def settings(self) -> dict[str, float]:
        """``confidence``, ``margin`` and ``class_tolerance`` of the run, by their tag names."""
        return {name: getattr(self.config, setting) for name, setting in _SETTING_NAMES.items()}

    def as_dict(self) -> dict:
        """The decision, numbers and settings (the registration record's ``gate``)."""
        return {"promote": self.promote, "reason": self.reason, "metric": self.metric,
                **{key: getattr(self, key) for key in _NUMBERS}, **self.settings(),
                "class_deltas": dict(self.class_deltas)}

    def tags(self, prefix: str = "sa2.gate.") -> dict[str, str]:
        """The numbers as model-version tags (strings; absent values left out)."""
        out = {f"{prefix}decision": "promoted" if self.promote else "rejected",
               f"{prefix}reason": self.reason}
        values = {**{key: getattr(self, key) for key in _NUMBERS}, **self.settings()}
        for key, value in values.items():
            if value is not None:
                out[f"{prefix}{key}"] = str(value) if key == "n" else f"{float(value):.6g}"
        for name, value in self.class_deltas.items():
            out[f"{prefix}delta_{name}"] = f"{value:.6g}"
        return out


def class_columns(frame: pd.DataFrame, metric: str = GATE_METRIC) -> list[str]:
    """Per-class columns of ``metric`` (``dice_class_1``...), or ``[metric]`` if binary."""
    per_class = sorted(c for c in frame.columns if c.startswith(f"{metric}_class_"))
    return per_class or [metric]


def require_metric(frame: pd.DataFrame, metric: str = GATE_METRIC) -> None:
    """Raise ``KeyError`` naming ``metric`` when the per-image scores lack its column."""
    if metric not in frame.columns:
        raise KeyError(f"promotion metric {metric!r} not in the per-image scores "
                       f"{sorted(map(str, frame.columns))}")


def statistical_gate(
    candidate: pd.DataFrame,
    champion: pd.DataFrame | None,
    config: RegistryConfig,
    *,
    metric: str = GATE_METRIC,
) -> GateResult:
    """Decide whether ``candidate`` replaces ``champion``.

    Args:
        candidate: Per-image scores of the challenger, indexed by image id, with a
            ``metric`` column (and ``<metric>_class_<k>`` columns for multi-class tasks).
        champion: The champion's scores on the same images, or None (no champion).
        config: ``params:registry``: ``promotion_margin``, ``gate_confidence``,
            ``class_tolerance``, ``gate_resamples`` and ``gate_seed``.
        metric: Column compared (``dice``).

    Raises:
        KeyError: ``candidate`` has no ``metric`` column.
        ValueError: The two frames do not cover the same images.
    """

    require_metric(candidate, metric)
    if champion is None:
        return GateResult(True, "no champion yet", metric, config, n=len(candidate),
                          candidate_mean=float(candidate[metric].mean()))
    missing = sorted(set(candidate.index) ^ set(champion.index))
    if missing:
        raise ValueError(f"challenger and champion were scored on different images "
                         f"(not in both: {missing[:10]}); the gate needs one frozen test set")
    champion = champion.loc[candidate.index]
    paired = paired_comparison(candidate[metric].to_numpy(), champion[metric].to_numpy(),
                               confidence=config.gate_confidence,
                               n_resamples=config.gate_resamples, seed=config.gate_seed)
    deltas = {c: float(candidate[c].mean() - champion[c].mean())
              for c in class_columns(candidate, metric) if c in champion}
    numbers = {"n": paired.n, "candidate_mean": paired.mean_a, "champion_mean": paired.mean_b,
               "delta": paired.delta, "delta_low": paired.delta_low,
               "delta_high": paired.delta_high, "lower_bound": paired.delta_lower_bound,
               "wilcoxon_p": paired.wilcoxon_p, "class_deltas": deltas}
    promote, reason = _decide(paired.delta, paired.delta_lower_bound, paired.n, deltas, config)
    return GateResult(promote, reason, metric, config, **numbers)


def _decide(delta: float, lower: float, n: int, deltas: Mapping[str, float],
            config: RegistryConfig) -> tuple[bool, str]:
    level = f"{100 * config.gate_confidence:g}%"
    margin, tolerance = config.promotion_margin, config.class_tolerance
    if math.isnan(lower):
        return False, (f"{n} paired test image(s): too few for a {level} lower bound; "
                       "champion kept")
    regressed = {c: d for c, d in deltas.items() if d < -tolerance}
    stats = (f"delta Dice {delta:+.4f}, one-sided {level} lower bound {lower:+.4f} "
             f"(n = {n})")
    if lower <= margin:
        return False, f"{stats} is not above the margin {margin:g}; champion kept"
    if regressed:
        worst = ", ".join(f"{c} {d:+.4f}" for c, d in sorted(regressed.items()))
        return False, (f"{stats} is above the margin, but {worst} regress(es) by more than "
                       f"the tolerance {tolerance:g}; champion kept")
    return True, f"{stats} is above the margin {margin:g}; no class regresses"
