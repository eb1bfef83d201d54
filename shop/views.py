"""Thin views: validate, call a selector or service, render."""

from __future__ import annotations

import math
from uuid import UUID

from django.conf import settings
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from PIL import ExifTags, Image, UnidentifiedImageError

from shop import selectors
from shop.forms import SearchForm
from shop.models import Category, Product, SearchQuery
from shop.services.search import create_search_query

PAGE_SIZE = 24


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


def product_detail(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        product, version, similar = selectors.product_page(product_id=pk, k=settings.SIMILAR_ITEMS)
    except Product.DoesNotExist:
        raise Http404("No such product") from None
    return render(request, "shop/product_detail.html", {"product": product, "similar": similar, "version": version})


def search(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = SearchForm(request.POST, request.FILES)
        if form.is_valid():
            query = create_search_query(
                image=form.cleaned_data["image"], image_format=form.image_format, bbox=form.cleaned_data["bbox"]
            )
            return redirect("search-results", pk=query.pk)
        return render(request, "shop/search.html", {"form": form}, status=400)
    return render(request, "shop/search.html", {"form": SearchForm()})


def _upright_size(field) -> tuple[int, int] | None:
    """A stored photo's size as the browser shows it, from its header alone (EXIF 5-8 swap the sides)."""
    try:
        with field.open("rb") as handle, Image.open(handle) as image:
            width, height = image.size
            try:
                orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
            except (OSError, SyntaxError, ValueError, KeyError, TypeError):
                orientation = 1
    except (OSError, UnidentifiedImageError):
        return None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _box_overlay(query: SearchQuery) -> dict[str, float] | None:
    """The searched box in percent of the photo's size, to draw it over the photo as shown."""
    size = _upright_size(query.image) if query.bbox else None
    if not size or not all(size):
        return None
    width, height = size
    left, top, box_width, box_height = query.bbox
    return {
        "left": 100 * left / width,
        "top": 100 * top / height,
        "width": 100 * box_width / width,
        "height": 100 * box_height / height,
    }


def _search_results_page(request: HttpRequest, query: SearchQuery) -> str:
    ids = [row["product_id"] for row in query.results]
    distances = {row["product_id"]: row["distance"] for row in query.results}
    products = [(p, distances[p.pk]) for p in selectors.products_by_ids(ids=ids)]
    context = {"query": query, "products": products, "box": _box_overlay(query)}
    return render_to_string("shop/search_results.html", context, request=request)


def search_results(request: HttpRequest, pk: UUID) -> HttpResponse:
    query = get_object_or_404(SearchQuery, pk=pk)
    return HttpResponse(_search_results_page(request, query))


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
    status = selectors.wait_for_search_status(query_id=pk, timeout=timeout)
    if status is None:
        return JsonResponse({"error": "no such search"}, status=404)
    body = {"status": status}
    if status != SearchQuery.Status.PENDING and request.GET.get("include") == "page":
        query = SearchQuery.objects.filter(pk=pk).first()
        if query is None:
            return JsonResponse({"error": "no such search"}, status=404)
        body["page"] = _search_results_page(request, query)
    return JsonResponse(body)


def healthz(request: HttpRequest) -> HttpResponse:
    Product.objects.exists()
    return HttpResponse("ok", content_type="text/plain")
