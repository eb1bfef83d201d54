"""The quality gate's rule: at least the raw baseline and the active model on validation top-20."""

from __future__ import annotations

from similarity.gate import gate_decision
from similarity.metrics import Scores, TopK


def _validation(new: float, baseline: float, previous: float | None = None) -> Scores:
    return Scores(
        queries=10,
        gallery=20,
        baseline=TopK(top20=baseline),
        previous=None if previous is None else TopK(top20=previous),
        siamese=TopK(top20=new),
    )


def test_it_passes_a_model_at_least_as_good_as_the_baseline_and_the_active_one():
    gate = gate_decision(_validation(0.8, 0.5, previous=0.8), has_previous=True)

    assert gate.passed
    assert gate.reason == "validation top-20 0.800 ≥ baseline 0.500, active model 0.800"


def test_it_refuses_a_model_below_the_active_one():
    gate = gate_decision(_validation(0.6, 0.5, previous=0.7), has_previous=True)

    assert not gate.passed
    assert gate.reason == "validation top-20 0.600 is below the active model 0.700"


def test_it_refuses_a_model_below_the_raw_baseline():
    gate = gate_decision(_validation(0.4, 0.5), has_previous=False)

    assert not gate.passed and "below the baseline 0.500" in gate.reason


def test_it_passes_a_first_model_without_a_validation_split_but_not_a_later_one():
    assert gate_decision(None, has_previous=False).passed
    later = gate_decision(None, has_previous=True)
    assert not later.passed and "no validation products" in later.reason


def test_it_refuses_a_model_it_could_not_compare_with_the_active_one():
    gate = gate_decision(_validation(0.9, 0.5), has_previous=False, comparison_error="v3 (Ready): file missing")

    assert not gate.passed
    assert gate.comparison_error == "v3 (Ready): file missing"
    assert "could not be loaded (v3 (Ready): file missing)" in gate.reason
    assert "validation top-20 0.900, baseline 0.500" in gate.reason
    assert gate.to_json()["comparison_error"] == "v3 (Ready): file missing"
