"""The results page learns that a search is done from a request that waits for it, not a fixed refresh."""

from __future__ import annotations

import re
import threading
import uuid

import pytest
from django.core.files.base import ContentFile
from django.db import connection
from django.urls import reverse

from shop import selectors
from shop.models import SearchQuery
from tests.factories import jpeg_bytes

pytestmark = pytest.mark.django_db


def _query(status: str = "pending", **fields) -> SearchQuery:
    return SearchQuery.objects.create(status=status, **fields)


def _wait(client, query_id, **params):
    return client.get(reverse("search-wait", args=[query_id]), params)


@pytest.fixture
def spy(monkeypatch):
    """Records every timeout the view waits with, then waits as usual."""
    calls: list[float] = []
    real = selectors.wait_for_search_status

    def recording(*, query_id, timeout, **kwargs):
        calls.append(timeout)
        return real(query_id=query_id, timeout=timeout, **kwargs)

    monkeypatch.setattr(selectors, "wait_for_search_status", recording)
    return calls


@pytest.mark.parametrize("status", ["done", "failed"])
def test_it_answers_a_finished_search_at_once(client, settings, status, django_assert_num_queries):
    settings.SEARCH_WAIT_SECONDS = 60
    query = _query(status, error="boom" if status == "failed" else "")
    with django_assert_num_queries(1):  # one read of the status, no waiting
        response = _wait(client, query.pk)
    assert response.status_code == 200
    assert response.json() == {"status": status}
    assert "no-store" in response["Cache-Control"]


def test_it_answers_pending_when_the_wait_times_out(client, settings):
    settings.SEARCH_WAIT_SECONDS = 0.2
    query = _query()
    response = _wait(client, query.pk)
    assert response.status_code == 200
    assert response.json() == {"status": "pending"}


def test_it_lets_the_client_ask_for_a_shorter_wait_capped_by_the_setting(client, settings, spy):
    settings.SEARCH_WAIT_SECONDS = 0.3
    query = _query()
    assert _wait(client, query.pk, timeout="0").json() == {"status": "pending"}
    assert _wait(client, query.pk, timeout="0.1").json() == {"status": "pending"}
    assert _wait(client, query.pk, timeout="3600").json() == {"status": "pending"}
    assert _wait(client, query.pk).json() == {"status": "pending"}
    assert spy == [0.0, 0.1, 0.3, 0.3]


@pytest.mark.parametrize("asked", ["abc", "-1", "nan", "inf", ""])
def test_it_refuses_a_timeout_that_is_not_a_number_of_seconds(client, asked, spy):
    response = _wait(client, _query().pk, timeout=asked)
    assert response.status_code == 400
    assert "timeout" in response.json()["error"]
    assert spy == []


@pytest.mark.parametrize(("status", "shown"), [("done", 'id="search-results"'), ("failed", "not indexed yet")])
def test_it_sends_the_results_page_along_when_asked(client, settings, status, shown):
    settings.SEARCH_WAIT_SECONDS = 60
    query = SearchQuery(status=status, error="The catalogue is not indexed yet." if status == "failed" else "")
    query.image.save("q.jpg", ContentFile(jpeg_bytes()), save=True)
    body = _wait(client, query.pk, include="page").json()
    assert body["status"] == status
    assert '<div id="search-outcome">' in body["page"] and shown in body["page"]
    assert "page" not in _wait(client, query.pk).json()  # only when asked


def test_it_sends_no_page_while_pending(client, settings):
    settings.SEARCH_WAIT_SECONDS = 0
    assert _wait(client, _query().pk, include="page").json() == {"status": "pending"}


def test_it_says_404_for_an_unknown_search(client, settings):
    settings.SEARCH_WAIT_SECONDS = 60  # an unknown id is answered at once, not after the wait
    response = _wait(client, uuid.uuid4())
    assert response.status_code == 404
    assert response.json() == {"error": "no such search"}


def test_it_answers_only_get(client):
    assert client.post(reverse("search-wait", args=[_query().pk])).status_code == 405


@pytest.mark.django_db(transaction=True)
def test_it_reports_a_search_finished_while_the_request_waits(client, settings, monkeypatch):
    # Far longer than the test: a "pending" answer would mean the wait missed the worker's commit.
    settings.SEARCH_WAIT_SECONDS = 60
    query = _query()
    first_read = threading.Event()
    real = selectors.search_status

    def watched(*, query_id):
        status = real(query_id=query_id)
        first_read.set()
        return status

    monkeypatch.setattr(selectors, "search_status", watched)

    def worker() -> None:
        # Another connection, as the Celery worker's: it commits once the request is waiting.
        try:
            if first_read.wait(timeout=60):
                SearchQuery.objects.filter(pk=query.pk).update(status=SearchQuery.Status.DONE, results=[])
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        response = _wait(client, query.pk)
    finally:
        thread.join(timeout=60)
    assert first_read.is_set()
    assert response.status_code == 200
    assert response.json() == {"status": "done"}


def _page(client, status: str) -> tuple[str, SearchQuery]:
    query = SearchQuery(status=status, error="The catalogue is not indexed yet." if status == "failed" else "")
    query.image.save("q.jpg", ContentFile(jpeg_bytes()), save=True)
    response = client.get(reverse("search-results", args=[query.pk]))
    assert response.status_code == 200
    return response.content.decode(), query


def test_it_waits_for_a_pending_search_with_a_script_and_refreshes_only_without_javascript(client):
    content, query = _page(client, "pending")
    assert reverse("search-wait", args=[query.pk]) in content
    assert "/static/shop/results.js" in content and "?include=page" in content
    assert "<script>" not in content  # no inline code: the Content-Security-Policy forbids it
    assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in content
    # No refresh outside <noscript>: with JavaScript the wait request alone brings the results.
    assert len(re.findall(r'http-equiv="refresh"', content)) == 1
    assert re.search(r'<p class="notice" id="search-pending" role="status" aria-live="polite" data-wait-url=', content)


@pytest.mark.parametrize("status", ["done", "failed"])
def test_it_neither_waits_nor_refreshes_once_a_search_is_over(client, status):
    content, query = _page(client, status)
    assert 'http-equiv="refresh"' not in content
    assert reverse("search-wait", args=[query.pk]) not in content
    assert "aria-live" not in content
