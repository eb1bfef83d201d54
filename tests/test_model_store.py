"""Model files through the "models" storage: what goes live is what every host can load."""

from __future__ import annotations

import hashlib

import pytest
from django.core.files.base import ContentFile

from shop.models import ModelVersion
from shop.services import model_versions, training
from tests.factories import make_version

pytestmark = pytest.mark.django_db
Status = ModelVersion.Status


def stored_version(storage, name: str, data: bytes, **fields) -> ModelVersion:
    storage.save(name, ContentFile(data))
    return make_version(artifact_name=name, checksum=hashlib.sha256(data).hexdigest(), **fields)


def test_it_refuses_to_activate_a_version_whose_stored_file_was_corrupted(model_storage):
    live = stored_version(model_storage, "siamese/v1-dresses.keras", b"tower one", status="active")
    candidate = stored_version(model_storage, "siamese/v2-dresses.keras", b"tower two")
    model_storage.save("siamese/v2-dresses.keras", ContentFile(b"tower two, damaged"))

    with pytest.raises(model_versions.ActivationRefused, match="v2-dresses.keras.*replaced or corrupted"):
        model_versions.activate_version(version_id=candidate.pk)

    live.refresh_from_db()
    candidate.refresh_from_db()
    assert (live.status, candidate.status) == (Status.ACTIVE, Status.READY)


def test_it_fails_a_finished_run_whose_stored_file_was_corrupted_and_the_live_version_keeps_serving(model_storage):
    live = stored_version(model_storage, "siamese/v1-dresses.keras", b"tower one", status="active")
    run = stored_version(
        model_storage,
        "siamese/v2-dresses.keras",
        b"tower two",
        status="embedding",
        metrics={"gate": {"passed": True, "reason": "better than the live version"}},
    )
    model_storage.delete("siamese/v2-dresses.keras")

    training._finish_run(run.pk)

    live.refresh_from_db()
    run.refresh_from_db()
    assert live.status == Status.ACTIVE
    assert run.status == Status.FAILED and "not in the model store" in run.error


def test_it_activates_a_version_whose_stored_file_checks_out(model_storage):
    stored_version(model_storage, "siamese/v1-dresses.keras", b"tower one", status="active")
    candidate = stored_version(model_storage, "siamese/v2-dresses.keras", b"tower two")

    assert model_versions.activate_version(version_id=candidate.pk, override=True).status == Status.ACTIVE


def test_it_names_a_trained_tower_in_the_store_and_caches_it_on_this_host(model_storage, settings):
    from similarity.artifacts import cached_path
    from similarity.siamese import build_embedding_model

    name, checksum = training.store_tower(build_embedding_model(8, hidden_dim=4, embedding_dim=2), "siamese/v9.keras")

    assert name == "siamese/v9.keras" and model_storage.exists(name)
    with model_storage.open(name, "rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == checksum
    # A folder store is its own cache: nothing copied; a bucket's host keeps a copy named by sha256.
    assert not cached_path(settings.MODEL_CACHE_DIR, name, checksum).exists()
    assert list(settings.MODEL_CACHE_DIR.iterdir()) == []
