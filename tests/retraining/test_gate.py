"""The statistical promotion gate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sa2_pipeline.retraining.gate import GateConfig, statistical_gate


def _scores(values, **classes):
    ids = [f"img{i:02d}" for i in range(len(values))]
    return pd.DataFrame({"dice": values, **classes}, index=ids)


RNG = np.random.default_rng(0)
BASE = RNG.uniform(0.6, 0.8, 14)


def test_no_champion_promotes():
    result = statistical_gate(_scores(BASE), None)
    assert result.promote and result.reason == "no champion yet" and result.n == 14


def test_consistent_gain_promotes_and_records_the_numbers():
    result = statistical_gate(_scores(BASE + 0.05 + RNG.normal(0, 0.005, 14)), _scores(BASE),
                              GateConfig(n_resamples=999))
    assert result.promote
    assert result.n == 14
    assert result.delta == pytest.approx(0.05, abs=0.01)
    assert result.delta_low < result.delta < result.delta_high
    assert 0 < result.lower_bound < result.delta
    assert result.wilcoxon_p < 0.01
    tags = result.tags()
    assert tags["sa2.gate.decision"] == "promoted" and tags["sa2.gate.n"] == "14"
    assert float(tags["sa2.gate.lower_bound"]) == pytest.approx(result.lower_bound, rel=1e-5)


def test_noisy_gain_with_a_higher_mean_is_rejected():
    # The old rule (mean above the champion's) would promote this one.
    noise = np.array([0.2, -0.18, 0.15, -0.12, 0.1, -0.09, 0.2, -0.15, 0.05, -0.03,
                      0.12, -0.1, 0.02, 0.0])
    candidate = _scores(BASE + noise)
    assert candidate["dice"].mean() > BASE.mean()
    result = statistical_gate(candidate, _scores(BASE), GateConfig(n_resamples=999))
    assert not result.promote
    assert result.lower_bound <= 0 and "not above the margin" in result.reason


def test_margin_changes_the_decision():
    candidate = _scores(BASE + 0.03 + RNG.normal(0, 0.002, 14))
    assert statistical_gate(candidate, _scores(BASE), GateConfig(n_resamples=999)).promote
    assert not statistical_gate(candidate, _scores(BASE),
                                GateConfig(margin=0.05, n_resamples=999)).promote


def test_one_class_regressing_blocks_promotion():
    gain = BASE + 0.05
    champion = _scores(BASE, dice_class_1=BASE, dice_class_2=BASE)
    candidate = _scores(gain, dice_class_1=gain + 0.1, dice_class_2=BASE - 0.05)
    result = statistical_gate(candidate, champion, GateConfig(n_resamples=999))
    assert not result.promote and "dice_class_2" in result.reason
    assert result.class_deltas["dice_class_2"] == pytest.approx(-0.05)
    loose = statistical_gate(candidate, champion,
                             GateConfig(class_tolerance=0.1, n_resamples=999))
    assert loose.promote


def test_different_images_are_refused():
    with pytest.raises(ValueError, match="different images"):
        statistical_gate(_scores(BASE), _scores(BASE[:10]))


def test_one_image_is_too_few():
    result = statistical_gate(_scores(BASE[:1] + 0.1), _scores(BASE[:1]))
    assert not result.promote and "too few" in result.reason
