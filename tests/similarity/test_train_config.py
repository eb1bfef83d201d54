"""The one training config: every field typed, checked and stored; unknown keys refused."""

from __future__ import annotations

import dataclasses

import pytest

from similarity.train_config import InvalidTrainConfig, TrainConfig


def test_it_refuses_an_unknown_key_and_names_the_known_ones():
    with pytest.raises(InvalidTrainConfig, match="unknown hyperparameter epoch; known: epochs, batch_size"):
        TrainConfig.from_mapping({"epoch": 5})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"embedding_dim": 0}, "embedding_dim must be a whole number ≥ 2, got 0"),
        ({"dropout": 1.0}, r"dropout must be a number in \[0, 1\)"),
        ({"hard_negative_share": 1.5}, r"hard_negative_share must be a number in \[0, 1\]"),
        ({"learning_rate": 0}, "learning_rate must be a number > 0"),
        ({"learning_rate": float("nan")}, "learning_rate must be a finite number"),
        ({"architecture": "transformer"}, "architecture must be one of residual, mlp"),
        ({"loss": "hinge"}, "loss must be one of contrastive, triplet"),
        ({"epochs": 2.5}, "epochs must be a whole number, got 2.5"),
        ({"epochs": True}, "epochs must be a whole number, got True"),
        ({"batch_size": "many"}, "batch_size must be a whole number, got 'many'"),
        ({"seed": -1}, "seed must be a whole number ≥ 0"),
    ],
)
def test_it_refuses_bad_values_with_a_clear_error(values, message):
    with pytest.raises(InvalidTrainConfig, match=message) as caught:
        TrainConfig.from_mapping(values)
    assert caught.value.field == next(iter(values))


def test_it_checks_a_config_built_directly_too():
    with pytest.raises(InvalidTrainConfig, match="patience"):
        TrainConfig(patience=-1)


@pytest.mark.parametrize("weight", [-0.1, 1.0, 2])
def test_it_keeps_the_colour_weight_below_one(weight):
    # At 1 the tower's part of a product vector would vanish: lists would rank by colour alone.
    with pytest.raises(InvalidTrainConfig, match="colour_weight"):
        TrainConfig(colour_weight=weight)


def test_it_reads_command_line_strings_as_the_fields_types():
    config = TrainConfig.from_mapping({"epochs": "5", "learning_rate": "3e-4", "architecture": "mlp", "margin": 2})

    assert (config.epochs, config.learning_rate, config.architecture, config.margin) == (5, 3e-4, "mlp", 2.0)
    assert isinstance(config.margin, float)


def test_it_puts_overrides_over_a_base_and_keeps_the_rest():
    base = TrainConfig(epochs=8, seed=3)

    config = TrainConfig.from_mapping({"patience": 0}, base=base)

    assert config == dataclasses.replace(base, patience=0)


def test_it_serialises_every_field_and_reads_it_back():
    config = TrainConfig(dropout=0.2, hard_negative_pool=4)

    stored = config.to_dict()

    assert tuple(stored) == TrainConfig.field_names()
    assert TrainConfig.from_mapping(stored) == config
