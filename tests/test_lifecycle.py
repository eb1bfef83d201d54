"""The retraining lifecycle on a real worker: gate, override, rollback, failure, single flight."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from shop import selectors
from shop.models import ModelVersion, Product, SimilarProduct
from shop.services import enqueue, model_versions, training
from shop.services.training_config import run_config
from tests.conftest import wait_for

Status = ModelVersion.Status


def _finish(version: ModelVersion, timeout: float = 600) -> ModelVersion:
    wait_for(
        lambda: ModelVersion.objects.filter(pk=version.pk, status__in=["ready", "active", "failed"]).exists(),
        timeout=timeout,
        message=f"{version} to finish",
    )
    version.refresh_from_db()
    return version


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory, celery_worker_process, django_db_blocker):
    """A 60-product catalogue, indexed, with a first version trained and active, and a worse second one."""
    root = tmp_path_factory.mktemp("lifecycle")
    call_command("make_demo_dataset", str(root), products=60, seed=5, stdout=io.StringIO())
    with django_db_blocker.unblock():
        call_command("seed_street2shop", root=str(root), category="dresses", stdout=io.StringIO())
        call_command("index_catalogue", wait=True, stall_timeout=240, stdout=io.StringIO())
        first = _finish(training.request_training(hyperparameters={"epochs": 6}))
        assert first.status == Status.ACTIVE, first.error
        # A tower that starts random and barely trains ranks worse than the raw features.
        worse = _finish(
            training.request_training(
                hyperparameters={"architecture": "mlp", "epochs": 1, "learning_rate": 1e-6, "patience": 0}
            )
        )
        admin = User.objects.create_superuser("boss", "boss@example.com", "pw")
    yield {"first": first, "worse": worse, "admin": admin}
    with django_db_blocker.unblock():
        call_command("flush", interactive=False, verbosity=0)


@pytest.mark.django_db
def test_it_walks_a_run_through_every_stage_to_active(lifecycle):
    first = lifecycle["first"]
    assert first.started_at and first.finished_at and first.activated_at
    assert set(first.metrics) >= {"test", "validation", "gate", "best_epoch", "backbone"}
    assert first.hyperparameters == run_config({"epochs": 6}).to_dict()  # every field, as requested
    assert first.dataset_counts["validation_products"] >= 1
    assert first.progress["stage"] == "ready"
    assert first.checksum and first.artifact_name


@pytest.mark.django_db
def test_it_refuses_a_worse_model_at_the_gate_and_keeps_the_active_one(lifecycle):
    worse, first = lifecycle["worse"], lifecycle["first"]
    assert worse.status == Status.READY, worse.error
    gate = worse.metrics["gate"]
    assert not gate["passed"] and "below" in gate["reason"]
    assert worse.metrics["validation"]["siamese"]["top20"] < worse.metrics["validation"]["previous"]["top20"]
    assert worse.metrics["previous_version"] == first.pk
    assert selectors.active_version() == first
    # It was fully embedded all the same, ready for an override.
    assert worse.embeddings.count() == Product.objects.count()


@pytest.mark.django_db
def test_it_activates_a_refused_version_only_with_a_recorded_override(lifecycle, client):
    worse, first = lifecycle["worse"], lifecycle["first"]
    client.force_login(lifecycle["admin"])
    url = reverse("admin:shop_modelversion_activate", args=[worse.pk])

    client.post(url)
    assert selectors.active_version() == first

    client.post(url, {"override": "1"})
    worse.refresh_from_db()
    assert worse.status == Status.ACTIVE and worse.gate_overridden
    assert worse.metrics["gate"]["overridden_by"] == "boss"
    first.refresh_from_db()
    assert first.status == Status.READY


@pytest.mark.django_db
def test_it_rolls_back_to_an_earlier_version_in_one_click(lifecycle, client):
    worse, first = lifecycle["worse"], lifecycle["first"]
    model_versions.activate_version(version_id=worse.pk, override=True)
    client.force_login(lifecycle["admin"])

    page = client.get(reverse("admin:shop_modelversion_changelist"))
    assert b"Roll back to this" in page.content and b"active (serving)" in page.content

    client.post(reverse("admin:shop_modelversion_activate", args=[first.pk]))
    assert selectors.active_version() == first
    product = Product.objects.order_by("id").first()
    rows = selectors.similar_products(product=product, version=first)
    assert len(rows) == 10 and all(isinstance(row, SimilarProduct) for row in rows)


@pytest.mark.django_db
def test_it_shows_curves_metrics_and_gate_in_the_admin(lifecycle, client):
    client.force_login(lifecycle["admin"])
    page = client.get(reverse("admin:shop_modelversion_change", args=[lifecycle["worse"].pk]))
    assert page.status_code == 200
    content = page.content.decode()
    assert 'aria-label="loss per epoch"' in content and 'aria-label="validation accuracy per epoch"' in content
    assert "validation (gate)" in content
    assert "previous active" in content and "raw backbone" in content
    assert "Activate despite the gate" in content


@pytest.mark.django_db
def test_it_refuses_a_second_run_while_one_is_queued(lifecycle):
    training.request_training()
    with pytest.raises(training.TrainingAlreadyRunning):
        training.request_training()


@pytest.mark.django_db
def test_it_refuses_to_start_training_without_the_permission(lifecycle):
    staff = User.objects.create_user("clerk", password="pw", is_staff=True)
    client = Client()
    client.force_login(staff)
    assert client.post(reverse("admin:shop_modelversion_train")).status_code == 403
    assert client.post(reverse("admin:shop_modelversion_activate", args=[lifecycle["first"].pk])).status_code == 403


@pytest.mark.django_db
def test_it_never_runs_a_started_version_twice(lifecycle):
    version = ModelVersion.objects.create(status=Status.TRAINING, hyperparameters={"epochs": 1})

    training.run_training(version_id=version.pk)  # a duplicate delivery of its task

    version.refresh_from_db()
    assert version.status == Status.TRAINING and version.started_at is None
    assert selectors.active_version() == lifecycle["first"]


@pytest.mark.django_db
def test_it_abandons_a_run_that_was_failed_while_it_ran(lifecycle):
    version = ModelVersion.objects.create(status=Status.TRAINING)
    ModelVersion.objects.filter(pk=version.pk).update(status=Status.FAILED, error="no progress")

    with pytest.raises(training.RunSuperseded):
        training._update(version, progress={"stage": "training", "epoch": 3})

    version.refresh_from_db()
    assert version.status == Status.FAILED and version.progress == {}


def test_it_fails_a_broken_run_and_keeps_serving_the_active_version(lifecycle, django_db_blocker):
    with django_db_blocker.unblock():
        active = selectors.active_version()
        # request_training refuses this config, so queue the row directly, as a stale or edited one would be.
        broken = ModelVersion.objects.create(hyperparameters={"embedding_dim": 0, "epochs": 1})
        enqueue.train_model_version(broken.pk)
        broken = _finish(broken)
        assert broken.status == Status.FAILED and "embedding_dim must be" in broken.error
        assert broken.finished_at is not None
        assert selectors.active_version() == active
        assert not broken.embeddings.exists()


@pytest.mark.django_db
def test_it_fails_a_run_whose_worker_stopped_reporting(lifecycle, settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.TRAINING_STALL_SECONDS = 600
    stuck = ModelVersion.objects.create(status=Status.EMBEDDING)
    ModelVersion.objects.filter(pk=stuck.pk).update(updated_at=timezone.now() - timedelta(hours=1))

    fresh = training.request_training()

    stuck.refresh_from_db()
    assert stuck.status == Status.FAILED and "no progress" in stuck.error
    assert fresh.status == Status.QUEUED


@pytest.mark.django_db
def test_it_prints_the_gate_figures_from_evaluate(lifecycle):
    out = io.StringIO()
    call_command("evaluate", stdout=out)
    text = out.getvalue()
    assert "baseline (VGG19 fc2, cosine)" in text and f"siamese v{lifecycle['first'].pk}" in text
    assert "validation (gate" in text and "ms per image" in text
