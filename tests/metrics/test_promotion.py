"""The statistical promotion gate."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from sa2_pipeline.config import RegistryConfig
from sa2_pipeline.metrics.promotion import GateResult, statistical_gate

CONFIG = RegistryConfig(gate_resamples=999)


def _scores(values, **classes):
    ids = [f"img{i:02d}" for i in range(len(values))]
    return pd.DataFrame({"dice": values, **classes}, index=ids)


RNG = np.random.default_rng(0)
BASE = RNG.uniform(0.6, 0.8, 14)


def test_no_champion_promotes():
    result = statistical_gate(_scores(BASE), None, CONFIG)
    assert result.promote and result.reason == "no champion yet" and result.n == 14


def test_consistent_gain_promotes_and_records_the_numbers():
    result = statistical_gate(_scores(BASE + 0.05 + RNG.normal(0, 0.005, 14)), _scores(BASE),
                              CONFIG)
    assert result.promote
    assert result.n == 14
    assert result.delta == pytest.approx(0.05, abs=0.01)
    assert result.delta_low < result.delta < result.delta_high
    assert 0 < result.lower_bound < result.delta
    assert result.wilcoxon_p < 0.01
    tags = result.tags()
    assert tags["sa2.gate.decision"] == "promoted" and tags["sa2.gate.n"] == "14"
    assert float(tags["sa2.gate.lower_bound"]) == pytest.approx(result.lower_bound, rel=1e-5)


def test_the_settings_are_the_registry_config_under_the_tag_names_registries_hold():
    config = RegistryConfig(promotion_margin=0.01, gate_confidence=0.9, class_tolerance=0.03,
                            gate_resamples=99)
    result = statistical_gate(_scores(BASE + 0.05), _scores(BASE), config)
    assert result.config is config
    tags = result.tags()
    assert (tags["sa2.gate.margin"], tags["sa2.gate.confidence"],
            tags["sa2.gate.class_tolerance"]) == ("0.01", "0.9", "0.03")
    record = result.as_dict()
    assert (record["margin"], record["confidence"], record["class_tolerance"]) == (
        0.01, 0.9, 0.03)
    # No setting of the gate has a default of its own: it comes from the config.
    fields = {f.name: f for f in dataclasses.fields(GateResult)}
    assert not {"margin", "confidence", "class_tolerance"} & set(fields)
    assert fields["config"].default is dataclasses.MISSING


def test_noisy_gain_with_a_higher_mean_is_rejected():
    # The old rule (mean above the champion's) would promote this one.
    noise = np.array([0.2, -0.18, 0.15, -0.12, 0.1, -0.09, 0.2, -0.15, 0.05, -0.03,
                      0.12, -0.1, 0.02, 0.0])
    candidate = _scores(BASE + noise)
    assert candidate["dice"].mean() > BASE.mean()
    result = statistical_gate(candidate, _scores(BASE), CONFIG)
    assert not result.promote
    assert result.lower_bound <= 0 and "not above the margin" in result.reason


def test_margin_changes_the_decision():
    candidate = _scores(BASE + 0.03 + RNG.normal(0, 0.002, 14))
    assert statistical_gate(candidate, _scores(BASE), CONFIG).promote
    assert not statistical_gate(candidate, _scores(BASE),
                                dataclasses.replace(CONFIG, promotion_margin=0.05)).promote


def test_one_class_regressing_blocks_promotion():
    gain = BASE + 0.05
    champion = _scores(BASE, dice_class_1=BASE, dice_class_2=BASE)
    candidate = _scores(gain, dice_class_1=gain + 0.1, dice_class_2=BASE - 0.05)
    result = statistical_gate(candidate, champion, CONFIG)
    assert not result.promote and "dice_class_2" in result.reason
    assert result.class_deltas["dice_class_2"] == pytest.approx(-0.05)
    loose = statistical_gate(candidate, champion,
                             dataclasses.replace(CONFIG, class_tolerance=0.1))
    assert loose.promote


def test_different_images_are_refused():
    with pytest.raises(ValueError, match="different images"):
        statistical_gate(_scores(BASE), _scores(BASE[:10]), CONFIG)


def test_scores_without_the_promotion_metric_are_an_error():
    frame = pd.DataFrame({"iou": BASE}, index=[f"img{i:02d}" for i in range(len(BASE))])
    with pytest.raises(KeyError, match="'dice'"):
        statistical_gate(frame, None, CONFIG)


def test_one_image_is_too_few():
    result = statistical_gate(_scores(BASE[:1] + 0.1), _scores(BASE[:1]), CONFIG)
    assert not result.promote and "too few" in result.reason
