"""The metrics JSON's declared shape: stored rows round-trip unchanged; old and partial rows still read."""

from __future__ import annotations

import json

from similarity.metrics import Gate, RunMetrics, Scores, TopK


def _figures(top20: float, queries: int = 12, gallery: int = 30) -> dict:
    return {"top1": 0.1, "top5": 0.2, "top10": 0.3, "top20": top20, "queries": queries, "gallery": gallery}


STORED = {
    "best_epoch": 4,
    "previous_version": 3,
    "test": {
        "queries": 12,
        "gallery": 30,
        "baseline": _figures(0.4),
        "previous": _figures(0.6),
        "siamese": _figures(0.7),
    },
    "validation": {"queries": 5, "gallery": 9, "baseline": _figures(0.5, 5, 9), "siamese": _figures(0.9, 5, 9)},
    "gate": {"passed": False, "reason": "below", "overridden_by": "boss", "overridden_at": "2026-01-01T00:00:00"},
    "backbone": {
        "name": "vgg19-fc2",
        "weights_id": "vgg19-fc2/random",
        "dim": 4096,
        "fallback": True,
        "ms_per_image": 176.3,
    },
}


def test_it_round_trips_a_stored_row_unchanged():
    metrics = RunMetrics.from_json(json.loads(json.dumps(STORED)))

    assert metrics.to_json() == STORED
    assert list(metrics.to_json()) == list(STORED)  # same key order as the runs wrote
    assert RunMetrics.from_json(metrics.to_json()) == metrics


def test_it_reads_the_typed_parts():
    metrics = RunMetrics.from_json(STORED)

    assert metrics.test is not None and metrics.test.previous == TopK.from_json(_figures(0.6))
    assert metrics.validation is not None and metrics.validation.previous is None
    assert [name for name, _ in metrics.test.rows()] == ["baseline", "previous", "siamese"]
    assert metrics.gate == Gate(False, "below", None, "boss", "2026-01-01T00:00:00")
    assert metrics.backbone is not None and metrics.backbone.ms_per_image == 176.3


def test_it_reads_empty_and_partial_rows():
    assert RunMetrics.from_json(None) == RunMetrics.from_json({}) == RunMetrics()
    partial = RunMetrics.from_json({"gate": {"passed": True}, "test": {"siamese": {"top20": 0.5}}})

    assert partial.gate == Gate(passed=True, reason="")
    assert partial.test == Scores(siamese=TopK(top20=0.5))
    assert partial.test.to_json() == {"siamese": {"top1": 0.0, "top5": 0.0, "top10": 0.0, "top20": 0.5}}
    assert RunMetrics.from_json(
        {"backbone": {"name": "b", "weights_id": "w", "dim": 8, "fallback": False}}
    ).to_json() == {
        "best_epoch": None,
        "backbone": {"name": "b", "weights_id": "w", "dim": 8, "fallback": False},
    }
