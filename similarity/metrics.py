"""The declared shape of a training run's metrics (ModelVersion.metrics), read and written here only.

    {"best_epoch": int | None,
     "previous_version": int,                        # the active version compared with, if any
     "test": Scores, "validation": Scores,           # absent when there was nothing to score
     "gate": {"passed", "reason", "comparison_error"?, "overridden_by"?, "overridden_at"?},
     "backbone": {"name", "weights_id", "dim", "fallback", "ms_per_image"?}}

    Scores = {"queries", "gallery", "baseline": TopK, "previous": TopK?, "siamese": TopK?}
    TopK = {"top1", "top5", "top10", "top20", "queries", "gallery"}

`from_json` is lenient (rows written before a key existed read with it missing); `to_json`
writes only what is set, so a stored row round-trips unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KS = (1, 5, 10, 20)
# The scorers of one split, in the order they are shown.
SCORERS = ("baseline", "previous", "siamese")


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int_or_none(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _without_none(items: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in items.items() if value is not None}


@dataclass(frozen=True)
class TopK:
    """One scorer's share of queries whose product is among its first k products."""

    top1: float = 0.0
    top5: float = 0.0
    top10: float = 0.0
    top20: float = 0.0
    queries: int | None = None
    gallery: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TopK:
        return cls(
            top1=float(data.get("top1", 0.0)),
            top5=float(data.get("top5", 0.0)),
            top10=float(data.get("top10", 0.0)),
            top20=float(data.get("top20", 0.0)),
            queries=_int_or_none(data.get("queries")),
            gallery=_int_or_none(data.get("gallery")),
        )

    def to_json(self) -> dict[str, Any]:
        return _without_none({**self.figures(), "queries": self.queries, "gallery": self.gallery})

    def figures(self) -> dict[str, float]:
        """{"top1": …, "top20": …}."""
        return {f"top{k}": float(getattr(self, f"top{k}")) for k in KS}


@dataclass(frozen=True)
class Scores:
    """One split's figures: the raw-feature baseline, the active model compared with, the new model."""

    queries: int | None = None
    gallery: int | None = None
    baseline: TopK | None = None
    previous: TopK | None = None
    siamese: TopK | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Scores:
        def scorer(name: str) -> TopK | None:
            value = data.get(name)
            return TopK.from_json(value) if isinstance(value, Mapping) else None

        return cls(
            queries=_int_or_none(data.get("queries")),
            gallery=_int_or_none(data.get("gallery")),
            baseline=scorer("baseline"),
            previous=scorer("previous"),
            siamese=scorer("siamese"),
        )

    def to_json(self) -> dict[str, Any]:
        scorers = {name: figures.to_json() for name, figures in self.rows()}
        return _without_none({"queries": self.queries, "gallery": self.gallery, **scorers})

    def rows(self) -> list[tuple[str, TopK]]:
        """(scorer, figures) of the scorers present, baseline first."""
        return [(name, figures) for name in SCORERS if (figures := getattr(self, name)) is not None]


@dataclass(frozen=True)
class Gate:
    """Whether the run may go live by itself, and why; an override is recorded on it."""

    passed: bool = False
    reason: str = ""
    # Set when the active model could not be loaded, so the run was not compared with it.
    comparison_error: str | None = None
    overridden_by: str | None = None
    overridden_at: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Gate:
        def text(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        return cls(
            passed=bool(data.get("passed")),
            reason=str(data.get("reason", "")),
            comparison_error=text("comparison_error"),
            overridden_by=text("overridden_by"),
            overridden_at=text("overridden_at"),
        )

    def to_json(self) -> dict[str, Any]:
        return _without_none(
            {
                "passed": self.passed,
                "reason": self.reason,
                "comparison_error": self.comparison_error,
                "overridden_by": self.overridden_by,
                "overridden_at": self.overridden_at,
            }
        )


@dataclass(frozen=True)
class BackboneCost:
    """The backbone a run used and what it costs per image on the machine that trained it."""

    name: str
    weights_id: str
    dim: int
    fallback: bool
    ms_per_image: float | None = None  # None: too few readable photos to time

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BackboneCost:
        ms = data.get("ms_per_image")
        return cls(
            name=str(data.get("name", "?")),
            weights_id=str(data.get("weights_id", "")),
            dim=int(data.get("dim", 0)),
            fallback=bool(data.get("fallback", False)),
            ms_per_image=None if ms is None else float(ms),
        )

    def to_json(self) -> dict[str, Any]:
        return _without_none(
            {
                "name": self.name,
                "weights_id": self.weights_id,
                "dim": self.dim,
                "fallback": self.fallback,
                "ms_per_image": self.ms_per_image,
            }
        )


@dataclass(frozen=True)
class RunMetrics:
    """Everything a run measured; `gate` is None until the run has been evaluated."""

    best_epoch: int | None = None
    previous_version: int | None = None
    test: Scores | None = None
    validation: Scores | None = None
    gate: Gate | None = None
    backbone: BackboneCost | None = None

    @classmethod
    def from_json(cls, data: object) -> RunMetrics:
        """Lenient: None, {} or a row from before a key existed reads with that part missing."""
        values = _mapping(data)

        def part(key: str) -> Mapping[str, Any] | None:
            value = values.get(key)
            return value if isinstance(value, Mapping) else None

        test, validation, gate, backbone = (part(key) for key in ("test", "validation", "gate", "backbone"))
        return cls(
            best_epoch=_int_or_none(values.get("best_epoch")),
            previous_version=_int_or_none(values.get("previous_version")),
            test=None if test is None else Scores.from_json(test),
            validation=None if validation is None else Scores.from_json(validation),
            gate=None if gate is None else Gate.from_json(gate),
            backbone=None if backbone is None else BackboneCost.from_json(backbone),
        )

    def to_json(self) -> dict[str, Any]:
        parts = {
            "previous_version": self.previous_version,
            "test": None if self.test is None else self.test.to_json(),
            "validation": None if self.validation is None else self.validation.to_json(),
            "gate": None if self.gate is None else self.gate.to_json(),
            "backbone": None if self.backbone is None else self.backbone.to_json(),
        }
        # best_epoch is always written (None: no validation picked one), as runs always wrote it.
        return {"best_epoch": self.best_epoch, **_without_none(parts)}
