"""The promotion gate: is the challenger truly better than the champion?

Both models are scored per image on the same frozen test set. The challenger is promoted
only if

1. the one-sided lower confidence bound (``confidence``, 95 % by default) of the mean
   per-image Dice difference *challenger - champion*, from a paired bootstrap over the
   test images (:func:`sa2_pipeline.metrics.stats.paired_comparison`), is above
   ``margin``; and
2. no class's mean Dice drops by more than ``class_tolerance`` (for a binary task the one
   class is the foreground, i.e. the Dice itself).

With no champion the challenger is promoted. Everything the decision rests on (n, the
difference with its interval and lower bound, the Wilcoxon p-value, each class's change)
is returned in :class:`GateResult` and written on the model version as tags.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import pandas as pd

__all__ = ["GateConfig", "GateResult", "class_columns", "statistical_gate"]


@dataclass(frozen=True)
class GateConfig:
    """Settings of :func:`statistical_gate` (``registry.*`` in the parameters)."""

    margin: float = 0.0
    confidence: float = 0.95
    class_tolerance: float = 0.02
    n_resamples: int = 9999
    seed: int = 0


@dataclass(frozen=True)
class GateResult:
    """The gate's decision and the numbers behind it."""

    promote: bool
    reason: str
    metric: str
    n: int | None = None
    candidate_mean: float | None = None
    champion_mean: float | None = None
    delta: float | None = None
    delta_low: float | None = None
    delta_high: float | None = None
    lower_bound: float | None = None
    wilcoxon_p: float | None = None
    confidence: float = 0.95
    margin: float = 0.0
    class_tolerance: float = 0.02
    class_deltas: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def tags(self, prefix: str = "sa2.gate.") -> dict[str, str]:
        """The numbers as model-version tags (strings; absent values left out)."""
        out = {f"{prefix}decision": "promoted" if self.promote else "rejected",
               f"{prefix}reason": self.reason}
        for key in ("n", "candidate_mean", "champion_mean", "delta", "delta_low",
                    "delta_high", "lower_bound", "wilcoxon_p", "confidence", "margin",
                    "class_tolerance"):
            value = getattr(self, key)
            if value is not None:
                out[f"{prefix}{key}"] = str(value) if key == "n" else f"{float(value):.6g}"
        for name, value in self.class_deltas.items():
            out[f"{prefix}delta_{name}"] = f"{value:.6g}"
        return out


def class_columns(frame: pd.DataFrame, metric: str = "dice") -> list[str]:
    """Per-class columns of ``metric`` (``dice_class_1``...), or ``[metric]`` if binary."""
    per_class = sorted(c for c in frame.columns if c.startswith(f"{metric}_class_"))
    return per_class or [metric]


def statistical_gate(
    candidate: pd.DataFrame,
    champion: pd.DataFrame | None,
    config: GateConfig = GateConfig(),  # noqa: B008 - frozen, safe as a default
    *,
    metric: str = "dice",
) -> GateResult:
    """Decide whether ``candidate`` replaces ``champion``.

    Args:
        candidate: Per-image scores of the challenger, indexed by image id, with a
            ``metric`` column (and ``<metric>_class_<k>`` columns for multi-class tasks).
        champion: The champion's scores on the same images, or None (no champion).
        config: Margin, confidence, class tolerance, bootstrap settings.
        metric: Column compared (``dice``).

    Raises:
        ValueError: The two frames do not cover the same images.
    """
    from sa2_pipeline.metrics.stats import paired_comparison

    common = {"metric": metric, "confidence": config.confidence, "margin": config.margin,
              "class_tolerance": config.class_tolerance}
    if champion is None:
        return GateResult(True, "no champion yet", n=len(candidate),
                          candidate_mean=float(candidate[metric].mean()), **common)
    missing = sorted(set(candidate.index) ^ set(champion.index))
    if missing:
        raise ValueError(f"challenger and champion were scored on different images "
                         f"(not in both: {missing[:10]}); the gate needs one frozen test set")
    champion = champion.loc[candidate.index]
    paired = paired_comparison(candidate[metric].to_numpy(), champion[metric].to_numpy(),
                               confidence=config.confidence, n_resamples=config.n_resamples,
                               seed=config.seed)
    deltas = {c: float(candidate[c].mean() - champion[c].mean())
              for c in class_columns(candidate, metric) if c in champion}
    numbers = {"n": paired.n, "candidate_mean": paired.mean_a, "champion_mean": paired.mean_b,
               "delta": paired.delta, "delta_low": paired.delta_low,
               "delta_high": paired.delta_high, "lower_bound": paired.delta_lower_bound,
               "wilcoxon_p": paired.wilcoxon_p, "class_deltas": deltas}
    promote, reason = _decide(paired.delta, paired.delta_lower_bound, paired.n, deltas, config)
    return GateResult(promote, reason, **numbers, **common)


def _decide(delta: float, lower: float, n: int, deltas: Mapping[str, float],
            config: GateConfig) -> tuple[bool, str]:
    level = f"{100 * config.confidence:g}%"
    if math.isnan(lower):
        return False, (f"{n} paired test image(s): too few for a {level} lower bound; "
                       "champion kept")
    regressed = {c: d for c, d in deltas.items() if d < -config.class_tolerance}
    stats = (f"delta Dice {delta:+.4f}, one-sided {level} lower bound {lower:+.4f} "
             f"(n = {n})")
    if lower <= config.margin:
        return False, f"{stats} is not above the margin {config.margin:g}; champion kept"
    if regressed:
        worst = ", ".join(f"{c} {d:+.4f}" for c, d in sorted(regressed.items()))
        return False, (f"{stats} is above the margin, but {worst} regress(es) by more than "
                       f"the tolerance {config.class_tolerance:g}; champion kept")
    return True, f"{stats} is above the margin {config.margin:g}; no class regresses"
