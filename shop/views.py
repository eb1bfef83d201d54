"""Thin views: validate, call a selector or service, render."""

from __future__ import annotations

import logging
import math
from urllib.parse import urlencode
from uuid import UUID

from django.conf import settings
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET
from redis.exceptions import RedisError

from shop import selectors
from shop.forms import SearchForm
from shop.models import Category, Product, SearchQuery
from shop.services import search as search_service
from shop.services import similar_lists
from shop.uploads import UploadTooLarge, cap_body, count_upload
from similarity.colour import PALETTE_NAMES

PAGE_SIZE = 24
logger = logging.getLogger("shop")


def catalogue(request: HttpRequest) -> HttpResponse:
    category = request.GET.get("category") or None
    if category and category not in Category.values:
        raise Http404("No such category")
    page = Paginator(selectors.product_list(category=category), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "shop/catalogue.html",
        {"page": page, "category": category, "categories": Category.choices},
    )


def _chosen_colour(request: HttpRequest) -> str | None:
    colour = request.GET.get("colour") or None
    if colour is not None and colour not in PALETTE_NAMES:
        raise Http404("No such colour")
    return colour


def product_detail(request: HttpRequest, pk: int) -> HttpResponse:
    colour = _chosen_colour(request)
    try:
        product, version = selectors.product_with_version(product_id=pk)
    except Product.DoesNotExist:
        raise Http404("No such product") from None
    similar = similar_lists.for_product(product, version, colour=colour)
    context = {"product": product, "similar": similar, "version": version, "chips": _chips(similar)}
    return render(request, "shop/product_detail.html", context)


def _chips(similar: similar_lists.SimilarList) -> list[dict[str, object]]:
    """Colour links: choosing one refines the list, choosing it again (or "any") undoes it."""
    names = list(similar.chips)
    if similar.colour and similar.colour not in names:
        names.insert(0, similar.colour)
    return [
        {
            "name": name,
            "slug": name.replace(" ", "-"),
            "selected": name == similar.colour,
            "query": urlencode({"colour": name}),
        }
        for name in names
    ]


SESSION_SEARCHES = "searches"  # the ids of the searches this browser made: only it sees their photos
SESSION_SEARCHES_KEPT = 20


@csrf_exempt  # checked by _search_post, after the cheap refusals, so a refused body is never read
def search(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _search_page(request, SearchForm())
    try:
        rate = count_upload(request)
        search_service.check_capacity()
    except RedisError:
        logger.exception("the rate limit's cache does not answer")
        return _refused(request, status=503, retry_after=30)
    except search_service.SearchBusy:
        return _refused(request, status=503, retry_after=10)
    if rate.limited:
        return _refused(request, status=429, retry_after=rate.retry_after)
    cap_body(request)
    try:
        return csrf_protect(_search_post)(request)
    except UploadTooLarge:
        return _refused(request, status=413)


def _search_post(request: HttpRequest) -> HttpResponse:
    form = SearchForm(request.POST, request.FILES)
    if not form.is_valid():
        return _search_page(request, form, status=400)
    try:
        query = search_service.create_search_query(
            image=form.cleaned_data["image"],
            header=form.header,
            bbox=form.cleaned_data["bbox"],
            category=form.cleaned_data["category"],
        )
    except search_service.SearchBusy:
        return _refused(request, status=503, retry_after=10)
    request.session[SESSION_SEARCHES] = [*request.session.get(SESSION_SEARCHES, []), str(query.pk)][
        -SESSION_SEARCHES_KEPT:
    ]
    return redirect("search-results", pk=query.pk)


def _search_page(request: HttpRequest, form: SearchForm, status: int = 200) -> HttpResponse:
    box_fields = [form[name] for name in ("box_left", "box_top", "box_width", "box_height")]
    return render(request, "shop/search.html", {"form": form, "box_fields": box_fields}, status=status)


def _refused(request: HttpRequest, *, status: int, retry_after: int | None = None) -> HttpResponse:
    """A friendly page for an upload the shop will not take now: too many, too busy, too large."""
    context = {"status": status, "retry_after": retry_after, "limit": settings.UPLOAD_MAX_BYTES}
    response = render(request, "shop/refused.html", context, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def _owns(request: HttpRequest, query_id: UUID) -> bool:
    return str(query_id) in request.session.get(SESSION_SEARCHES, [])


@require_GET
def search_photo(request: HttpRequest, pk: UUID) -> FileResponse:
    """A search's photo (the clean copy), for the browser session that made the search only."""
    if not _owns(request, pk):
        raise Http404("No such photo")
    query = get_object_or_404(SearchQuery, pk=pk, photo_ready=True)
    try:
        response = FileResponse(query.image.open("rb"), content_type="image/jpeg")
    except FileNotFoundError:
        raise Http404("No such photo") from None
    response["Cache-Control"] = "private, max-age=3600"
    return response


def _box_overlay(query: SearchQuery) -> dict[str, float] | None:
    """The searched box in percent of the photo's upright size, to draw it over the photo as shown."""
    if not query.bbox or not query.width or not query.height:
        return None
    left, top, box_width, box_height = query.bbox
    return {
        "left": 100 * left / query.width,
        "top": 100 * top / query.height,
        "width": 100 * box_width / query.width,
        "height": 100 * box_height / query.height,
    }


def _search_results_page(request: HttpRequest, query: SearchQuery, colour: str | None = None) -> str:
    similar = similar_lists.for_search(query, colour=colour)
    context = {
        "query": query,
        "similar": similar,
        # A colour chosen while the search is pending: the page it waits for is refined too.
        "colour_query": urlencode({"colour": colour}) if colour else "",
        "chips": _chips(similar),
        "box": _box_overlay(query),
        "owner": _owns(request, query.pk),
    }
    return render_to_string("shop/search_results.html", context, request=request)


def search_results(request: HttpRequest, pk: UUID) -> HttpResponse:
    colour = _chosen_colour(request)
    query = get_object_or_404(SearchQuery, pk=pk)
    if query.status == SearchQuery.Status.PENDING and not search_service.seconds_left(created_at=query.created_at):
        search_service.end_overdue_searches(query_id=pk)  # a write only where one is due
        query.refresh_from_db()
    return HttpResponse(_search_results_page(request, query, colour))


@require_GET
@never_cache
def search_wait(request: HttpRequest, pk: UUID) -> JsonResponse:
    """{"status": ...} once the search is done or failed, or "pending" after a short wait.

    The results page asks in a loop instead of refreshing every second. `?timeout=S` asks for
    a shorter wait; SEARCH_WAIT_SECONDS caps it, since each wait holds a web thread or worker.
    `?include=page` adds the finished search's results page as "page", saving the page a
    second request before it can show the results.
    """
    timeout = settings.SEARCH_WAIT_SECONDS
    asked = request.GET.get("timeout")
    if asked is not None:
        try:
            seconds = float(asked)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds < 0:
            return JsonResponse({"error": "timeout must be a number of seconds, 0 or more"}, status=400)
        timeout = min(seconds, timeout)
    status = _wait_within_deadline(pk, timeout)
    if status is None:
        return JsonResponse({"error": "no such search"}, status=404)
    body = {"status": status}
    if status != SearchQuery.Status.PENDING and request.GET.get("include") == "page":
        colour = request.GET.get("colour") or None
        if colour is not None and colour not in PALETTE_NAMES:
            return JsonResponse({"error": "no such colour"}, status=404)
        query = selectors.search_query(query_id=pk)
        if query is None:
            return JsonResponse({"error": "no such search"}, status=404)
        body["page"] = _search_results_page(request, query, colour)
    return JsonResponse(body)


def _wait_within_deadline(pk: UUID, timeout: float) -> str | None:
    """Wait for a search's outcome, never past its deadline; at the deadline the search ends as failed."""
    state = selectors.search_state(query_id=pk)
    if state is None or state[0] != SearchQuery.Status.PENDING:
        return state[0] if state else None
    left = search_service.seconds_left(created_at=state[1])
    status = selectors.wait_for_search_status(query_id=pk, timeout=min(timeout, left + 0.1))
    if status == SearchQuery.Status.PENDING and search_service.end_overdue_searches(query_id=pk):
        return SearchQuery.Status.FAILED
    return status


def healthz(request: HttpRequest) -> HttpResponse:
    selectors.catalogue_answers()
    return HttpResponse("ok", content_type="text/plain")
