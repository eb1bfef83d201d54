"""The hyper-parameters of one training run: one typed, validated record, stored whole with the model.

Standard library only: shop/settings.py reads its SIAMESE_* defaults from here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

ARCHITECTURES = ("residual", "mlp")
LOSSES = ("contrastive", "triplet")


class InvalidTrainConfig(ValueError):
    """An unknown hyper-parameter or a bad value; the message names it, and `field` too (None: unknown keys)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run; every field is stored with the trained model.

    The defaults are the shop's: each SIAMESE_* setting defaults to its field here. Building
    one (directly, or through `from_mapping`) checks every value.
    """

    epochs: int = 30  # 0 keeps the untrained start (the benchmark's "principal directions only")
    batch_size: int = 64
    learning_rate: float = 1e-3
    margin: float = 1.0
    hidden_dim: int = 512
    embedding_dim: int = 128
    dropout: float = 0.1
    negatives_per_positive: int = 3
    seed: int = 0
    # "residual" starts from the raw features' principal directions, so small data stays near the baseline.
    architecture: str = "residual"
    weight_decay: float = 1e-4
    loss: str = "contrastive"
    hard_negative_share: float = 0.5
    hard_negative_pool: int = 10
    patience: int = 6  # epochs without a better validation top-20 before stopping; 0 = never stop early
    # The colour descriptor's share of the stored product vectors (similarity.embedding.with_colour):
    # 0 ranks by the tower alone. It shapes product pages' lists only; a photo search ranks by shape.
    colour_weight: float = 0.0

    def __post_init__(self) -> None:
        for name, rule in _RULES.items():
            value = _typed(name, rule.kind, getattr(self, name))
            if not rule.valid(value):
                raise InvalidTrainConfig(f"{name} must be {rule.meaning}, got {value!r}", field=name)
            # Frozen: a float field given an int is stored as the float it stands for.
            object.__setattr__(self, name, value)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, object], *, base: TrainConfig | None = None) -> TrainConfig:
        """`base` (default: the defaults above) with `values` over it.

        Refuses unknown keys and bad values with InvalidTrainConfig. Strings are read as the
        field's type, so command-line values ("3e-4", "mlp") need no parsing of their own.
        """
        known = cls.field_names()
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InvalidTrainConfig(
                f"unknown hyperparameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                f"known: {', '.join(known)}"
            )
        parsed: dict[str, Any] = {name: _from_text(name, _RULES[name].kind, value) for name, value in values.items()}
        return dataclasses.replace(base or cls(), **parsed)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _Rule:
    kind: type
    valid: Callable[[Any], bool]
    meaning: str


_RULES: dict[str, _Rule] = {
    "epochs": _Rule(int, lambda v: v >= 0, "a whole number ≥ 0"),
    "batch_size": _Rule(int, lambda v: v >= 1, "a whole number ≥ 1"),
    "learning_rate": _Rule(float, lambda v: v > 0, "a number > 0"),
    "margin": _Rule(float, lambda v: v > 0, "a number > 0"),
    "hidden_dim": _Rule(int, lambda v: v >= 2, "a whole number ≥ 2"),
    "embedding_dim": _Rule(int, lambda v: v >= 2, "a whole number ≥ 2"),
    "dropout": _Rule(float, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "negatives_per_positive": _Rule(int, lambda v: v >= 1, "a whole number ≥ 1"),
    "seed": _Rule(int, lambda v: v >= 0, "a whole number ≥ 0"),
    "architecture": _Rule(str, lambda v: v in ARCHITECTURES, "one of " + ", ".join(ARCHITECTURES)),
    "weight_decay": _Rule(float, lambda v: v >= 0, "a number ≥ 0"),
    "loss": _Rule(str, lambda v: v in LOSSES, "one of " + ", ".join(LOSSES)),
    "hard_negative_share": _Rule(float, lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "hard_negative_pool": _Rule(int, lambda v: v >= 1, "a whole number ≥ 1"),
    "patience": _Rule(int, lambda v: v >= 0, "a whole number ≥ 0"),
    "colour_weight": _Rule(float, lambda v: 0 <= v < 1, "a number in [0, 1)"),
}


def _typed(name: str, kind: type, value: object) -> Any:
    """The value as the field's type; a bool is no number (JSON `true` must not train for 1 epoch)."""
    if kind is str and isinstance(value, str):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise InvalidTrainConfig(f"{name} must be a finite number, got {value!r}", field=name)
        return float(value)
    wanted = {int: "a whole number", float: "a number", str: "text"}[kind]
    raise InvalidTrainConfig(f"{name} must be {wanted}, got {value!r}", field=name)


def _from_text(name: str, kind: type, value: object) -> object:
    """A command-line string read as the field's type; anything else is left to the checks."""
    if not isinstance(value, str) or kind is str:
        return value
    try:
        return kind(value.strip())
    except ValueError:
        wanted = "a whole number" if kind is int else "a number"
        raise InvalidTrainConfig(f"{name} must be {wanted}, got {value!r}", field=name) from None
