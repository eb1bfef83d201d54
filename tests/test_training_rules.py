"""Training rules without a worker: the config's one path, the override rule, the comparison, the admin tables."""

from __future__ import annotations

import dataclasses
import io
import logging
import os

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from shop.models import RUNNING_STATUSES, ModelVersion
from shop.services import model_versions, training, training_stages
from shop.services.training_config import SETTING_NAMES, default_config, run_config
from similarity.train_config import InvalidTrainConfig, TrainConfig
from tests.factories import make_version, store_model_file
from tests.similarity.test_metrics import STORED

pytestmark = pytest.mark.django_db

Status = ModelVersion.Status


# --- one source of training settings ------------------------------------------------------------


def test_it_takes_its_defaults_from_the_settings_and_theirs_from_train_config(settings):
    assert set(SETTING_NAMES) == set(TrainConfig.field_names())
    assert default_config() == TrainConfig.from_mapping(
        {field: getattr(settings, name) for field, name in SETTING_NAMES.items()}
    )
    # tests/settings.py shortens training; every other setting is TrainConfig's default.
    assert default_config() == dataclasses.replace(TrainConfig(), epochs=settings.SIAMESE_EPOCHS)

    settings.SIAMESE_DROPOUT = 0.3
    settings.SIAMESE_HARD_NEGATIVE_POOL = 4
    assert (default_config().dropout, default_config().hard_negative_pool) == (0.3, 4)


def test_it_names_the_setting_that_is_out_of_range(settings):
    settings.SIAMESE_DROPOUT = 1.5

    with pytest.raises(ImproperlyConfigured, match="SIAMESE_DROPOUT: dropout must be"):
        run_config()


def test_it_records_every_field_of_a_requested_run():
    version = training.request_training(hyperparameters={"epochs": 2, "dropout": 0.2})

    assert tuple(version.hyperparameters) == TrainConfig.field_names()
    assert version.hyperparameters == run_config({"epochs": 2, "dropout": 0.2}).to_dict()
    assert version.hyperparameters["hard_negative_pool"] == default_config().hard_negative_pool


@pytest.mark.parametrize("overrides", [{"epoch": 2}, {"embedding_dim": 0}, {"architecture": "transformer"}])
def test_it_refuses_a_run_with_an_unknown_key_or_a_bad_value(overrides):
    with pytest.raises(InvalidTrainConfig):
        training.request_training(hyperparameters=overrides)

    assert not ModelVersion.objects.exists()


def test_it_takes_train_model_params_through_the_same_path():
    out = io.StringIO()

    call_command(
        "train_model", "--param", "learning_rate=3e-4", "--param", "architecture=mlp", "--epochs", "3", stdout=out
    )

    version = ModelVersion.objects.get()
    assert "queued training run" in out.getvalue()
    assert version.hyperparameters == run_config({"learning_rate": 3e-4, "architecture": "mlp", "epochs": 3}).to_dict()


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("bogus=1", "unknown hyperparameter bogus"),
        ("epochs=many", "epochs must be a whole number"),
        ("epochs", "NAME=VALUE"),
    ],
)
def test_it_refuses_a_bad_train_model_param(param, message):
    with pytest.raises(CommandError, match=message):
        call_command("train_model", "--param", param, stdout=io.StringIO())
    assert not ModelVersion.objects.exists()


def test_it_fails_a_queued_run_whose_stored_hyperparameters_are_invalid():
    version = ModelVersion.objects.create(hyperparameters={"embedding_dim": 0})

    training.run_training(version_id=version.pk)  # fails on the config, before any backbone is loaded

    version.refresh_from_db()
    assert version.status == Status.FAILED and "embedding_dim must be" in version.error


# --- model-version rules ---------------------------------------------------------------------------


def test_it_needs_an_override_only_for_a_refused_version_that_never_served():
    refused = {"gate": {"passed": False, "reason": "below the baseline"}}

    assert make_version(metrics=refused).needs_override
    assert make_version(metrics={}).needs_override  # never judged by the gate
    assert not make_version(metrics={"gate": {"passed": True, "reason": "ok"}}).needs_override
    assert not make_version(metrics=refused, activated_at=timezone.now()).needs_override  # a rollback


def test_it_activates_a_refused_version_only_with_a_recorded_override(model_storage):
    refused = store_model_file(make_version(metrics={"gate": {"passed": False, "reason": "below the baseline"}}))

    with pytest.raises(model_versions.ActivationRefused, match="needs an override"):
        model_versions.activate_version(version_id=refused.pk)
    model_versions.activate_version(version_id=refused.pk, override=True)

    refused.refresh_from_db()
    gate = refused.run_metrics.gate
    assert refused.status == Status.ACTIVE and refused.gate_overridden
    assert gate is not None and gate.overridden_by == "system" and gate.reason == "below the baseline"


def test_it_lists_the_running_statuses_once_for_the_constraint_and_the_code():
    constraint = next(c for c in ModelVersion._meta.constraints if c.name == "one_running_version_per_category")

    assert constraint.condition.children == [("status__in", list(RUNNING_STATUSES))]


# --- comparison with the active model ---------------------------------------------------------------


def test_it_refuses_to_pass_a_run_it_could_not_compare_with_the_active_model(monkeypatch, caplog):
    active = make_version(status="active", weights_id="w", artifact_name="/gone/v1.keras", checksum="0" * 64)
    new = make_version(status="evaluating", weights_id="w")

    def unreadable(version):
        raise FileNotFoundError(f"no file {version.artifact_name}")

    monkeypatch.setattr(training_stages.runtime, "tower_for", unreadable)
    with caplog.at_level(logging.ERROR, logger="shop"):
        comparison = training_stages.active_for_comparison(new)

    assert comparison.tower is None and comparison.version is None
    assert comparison.error == f"{active}: no file /gone/v1.keras"
    assert f"cannot load the active {active}" in caplog.text
    assert list(comparison.towers("new tower")) == ["baseline", "siamese"]


def test_it_compares_nothing_across_backbone_weights(monkeypatch):
    make_version(status="active", weights_id="other", artifact_name="/v1.keras")
    monkeypatch.setattr(training_stages.runtime, "tower_for", lambda version: pytest.fail("loaded"))

    assert training_stages.active_for_comparison(make_version(status="evaluating", weights_id="w")) == (
        training_stages.Comparison()
    )


# --- the admin's tables ------------------------------------------------------------------------------


def test_it_renders_the_metrics_and_history_tables_from_templates(admin_client):
    version = make_version(
        metrics={**STORED, "gate": {"passed": False, "reason": "not compared <b>", "comparison_error": "v1: gone"}},
        history=[{"epoch": 0, "loss": None, "val_top1": 0.25, "val_top20": 0.5}, {"epoch": 1, "loss": 0.5}],
    )

    content = admin_client.get(reverse("admin:shop_modelversion_change", args=[version.pk])).content.decode()

    assert '<table class="metrics"><tr><th>validation (gate) (5 queries, 9 products)</th><th>top-1</th>' in content
    assert "<tr><th>previous active</th><td>0.100</td><td>0.200</td><td>0.300</td><td>0.600</td></tr>" in content
    assert "<p>Backbone vgg19-fc2 (4096-d, random fallback): 176.3 ms per image on this machine.</p>" in content
    assert "<tr><td>0</td><td>—</td><td>0.2500</td><td>0.5000</td></tr>" in content
    assert "<tr><td>1</td><td>0.5000</td><td>—</td><td>—</td></tr>" in content
    assert "refused: not compared &lt;b&gt;" in content and "&lt;table" not in content


def test_it_shows_a_dash_for_a_version_without_figures(admin_client):
    version = make_version(metrics={})

    content = admin_client.get(reverse("admin:shop_modelversion_change", args=[version.pk])).content.decode()

    assert '<table class="metrics">' not in content and "Per-epoch history" in content


def test_it_refuses_a_bad_training_setting_when_the_shop_starts() -> None:
    import subprocess
    import sys

    env = {**os.environ, "DEBUG": "true", "SIAMESE_DROPOUT": "1.5"}
    done = subprocess.run(
        [sys.executable, "-c", "import shop.settings"], env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode != 0
    assert "SIAMESE_DROPOUT" in done.stderr and "dropout must be" in done.stderr
