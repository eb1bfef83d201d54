"""Categories chosen by shoppers and staff: a search within skirts, a training run of skirts."""

from __future__ import annotations

import io

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from shop.forms import SearchForm
from shop.models import ModelVersion, SearchQuery
from shop.services import enqueue
from tests.factories import jpeg_bytes, make_version

pytestmark = pytest.mark.django_db


def _search_form(**data: str) -> SearchForm:
    photo = SimpleUploadedFile("photo.jpg", jpeg_bytes(size=(120, 160)), content_type="image/jpeg")
    return SearchForm(data, {"image": photo})


def _upload() -> io.BytesIO:
    upload = io.BytesIO(jpeg_bytes(size=(120, 160)))
    upload.name = "photo.jpg"
    return upload


@pytest.fixture
def sent(monkeypatch) -> dict[str, list]:
    """The tasks the code under test would send, by name, instead of a broker."""
    calls: dict[str, list] = {"run_search": [], "train_model_version": []}
    monkeypatch.setattr(enqueue, "run_search", lambda query_id, expires: calls["run_search"].append(query_id))
    monkeypatch.setattr(enqueue, "train_model_version", lambda pk: calls["train_model_version"].append(pk))
    return calls


# --- the search form -------------------------------------------------------------------------------


def test_it_searches_dresses_when_an_old_client_posts_no_category():
    form = _search_form()
    assert form.is_valid(), form.errors
    assert form.cleaned_data["category"] == "dresses"
    assert SearchForm().fields["category"].initial == "dresses"


def test_it_accepts_skirts():
    form = _search_form(category="skirts")
    assert form.is_valid(), form.errors
    assert form.cleaned_data["category"] == "skirts"


def test_it_refuses_an_unknown_category_in_the_search_form():
    form = _search_form(category="shoes")
    assert not form.is_valid()
    assert list(form.errors) == ["category"]


def test_it_labels_the_category_choice_on_the_search_page(client):
    content = client.get(reverse("search")).content.decode()
    assert '<label for="id_category">Category</label>' in content
    assert '<select name="category" id="id_category">' in content
    assert '<option value="dresses" selected>Dresses</option>' in content
    assert '<option value="skirts">Skirts</option>' in content
    assert "Photo of the garment" in content and "Photo of a dress" not in content


def test_it_stores_the_search_category_and_queues_the_search(client, sent, django_capture_on_commit_callbacks):
    cache.clear()  # the upload rate counters
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("search"), {"image": _upload(), "category": "skirts"})

    assert response.status_code == 302, response.content[:500]
    query = SearchQuery.objects.get()
    assert query.category == "skirts"
    assert sent["run_search"] == [str(query.pk)]


def test_it_stores_nothing_for_an_unknown_search_category(client, sent, django_capture_on_commit_callbacks):
    cache.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("search"), {"image": _upload(), "category": "shoes"})

    assert response.status_code == 400 and b'id="category-errors"' in response.content
    assert SearchQuery.objects.count() == 0 and sent["run_search"] == []


# --- the admin's training button -------------------------------------------------------------------


def _train(admin_client, django_capture_on_commit_callbacks, **data: str) -> list[str]:
    """Press the train button with `data` posted; the messages the changelist then shows."""
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:shop_modelversion_train"), data, follow=True)
    assert response.redirect_chain == [(reverse("admin:shop_modelversion_changelist"), 302)]
    return [str(message) for message in response.context["messages"]]


def test_it_queues_a_skirts_run_beside_a_running_dresses_one(admin_client, sent, django_capture_on_commit_callbacks):
    active = make_version(status="active", category="dresses")
    running = make_version(status="training", category="dresses")

    messages = _train(admin_client, django_capture_on_commit_callbacks, category="skirts")

    queued = ModelVersion.objects.get(category="skirts")
    assert queued.status == "queued" and sent["train_model_version"] == [queued.pk]
    assert any(f"{queued} for skirts queued" in message for message in messages), messages
    active.refresh_from_db()
    running.refresh_from_db()
    assert (active.status, running.status) == ("active", "training")
    assert ModelVersion.objects.count() == 3


def test_it_trains_dresses_when_an_old_form_posts_no_category(admin_client, sent, django_capture_on_commit_callbacks):
    messages = _train(admin_client, django_capture_on_commit_callbacks)

    queued = ModelVersion.objects.get()
    assert queued.category == "dresses" and sent["train_model_version"] == [queued.pk]
    assert any("for dresses queued" in message for message in messages), messages


def test_it_refuses_an_unknown_category_to_train(admin_client, sent, django_capture_on_commit_callbacks):
    messages = _train(admin_client, django_capture_on_commit_callbacks, category="shoes")

    assert ModelVersion.objects.count() == 0 and sent["train_model_version"] == []
    assert any("Unknown category" in message and "Nothing queued" in message for message in messages), messages


def test_it_shows_each_categorys_active_version_and_busy_category(admin_client):
    dresses = make_version(status="active", category="dresses")
    make_version(status="training", category="skirts")

    content = admin_client.get(reverse("admin:shop_modelversion_changelist")).content.decode()

    assert f'<span id="active-versions">Active: dresses v{dresses.pk}, skirts none</span>' in content
    assert '<label for="training-category">Category to train</label>' in content
    assert '<option value="dresses">Dresses</option>' in content
    assert '<option value="skirts" disabled>Skirts (running)</option>' in content
    assert 'id="start-training" disabled' not in content  # dresses may still train
