"""Shop pages and admin screens: what shoppers and staff see, and how many queries it costs."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.core.files.base import ContentFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from shop.models import Feature, ModelVersion, SearchQuery, vector_to_bytes
from tests.factories import (
    image_bytes,
    jpeg_bytes,
    make_embedding,
    make_product,
    make_similar,
    make_street_photo,
    make_version,
)

pytestmark = pytest.mark.django_db

FIGURES = {"top1": 0.1, "top5": 0.3, "top10": 0.4, "top20": 0.5}
BASELINE = {"top1": 0.05, "top5": 0.2, "top10": 0.3, "top20": 0.35}

REPO = Path(__file__).resolve().parents[1]


def _scores(**extra) -> dict:
    return {"queries": 12, "gallery": 30, "baseline": BASELINE, "siamese": FIGURES, **extra}


def _staff(*codenames: str) -> User:
    user = User.objects.create_user(f"staff{User.objects.count()}", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


def _query_count(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


# --- ModelVersion admin ----------------------------------------------------------------------


def test_it_renders_test_metrics_as_a_table_when_there_is_no_validation_split(admin_client):
    version = make_version(metrics={"test": _scores(), "gate": {"passed": True, "reason": "first model"}})
    content = admin_client.get(reverse("admin:shop_modelversion_change", args=[version.pk])).content.decode()
    assert '<table class="metrics"><tr><th>test (12 queries, 30 products)' in content
    assert "&lt;table" not in content
    assert "raw backbone" in content and "top-20" in content
    assert "no validation split (too few products)" in content


def test_it_notes_a_missing_validation_curve(admin_client):
    history = [
        {"epoch": 1, "loss": 0.9, "val_top1": None, "val_top20": None},
        {"epoch": 2, "loss": 0.5, "val_top1": None, "val_top20": None},
    ]
    version = make_version(history=history, metrics={"test": _scores()})
    content = admin_client.get(reverse("admin:shop_modelversion_change", args=[version.pk])).content.decode()
    assert 'aria-label="loss per epoch"' in content
    assert 'aria-label="validation accuracy per epoch"' not in content
    assert "Validation accuracy: no validation split (too few products)." in content


def test_it_shows_one_click_buttons_only_to_staff_who_may_activate(client, admin_client):
    now = timezone.now()
    passed = {"passed": True, "reason": "ok"}
    make_version(status="active", activated_at=now, metrics={"gate": passed})
    earlier = make_version(activated_at=now, metrics={"gate": passed})
    fresh = make_version(metrics={"gate": passed})
    refused = make_version(metrics={"gate": {"passed": False, "reason": "below the baseline"}})
    url = reverse("admin:shop_modelversion_changelist")

    content = admin_client.get(url).content.decode()
    assert "active (serving)" in content
    assert content.count('name="csrfmiddlewaretoken"') >= 2
    assert reverse("admin:shop_modelversion_activate", args=[earlier.pk]) in content
    assert "Roll back to this" in content
    assert reverse("admin:shop_modelversion_activate", args=[fresh.pk]) in content
    assert reverse("admin:shop_modelversion_activate", args=[refused.pk]) not in content
    assert "gate refused: review" in content

    client.force_login(_staff("view_modelversion"))
    content = client.get(url).content.decode()
    assert "active (serving)" in content
    assert "Roll back to this" not in content and "gate refused: review" not in content
    assert "/activate/" not in content


def test_it_keeps_no_request_on_the_shared_admin_instance(rf):
    from django.contrib import admin

    model_admin = admin.site._registry[ModelVersion]
    make_version(activated_at=timezone.now(), metrics={"gate": {"passed": True}})
    version = ModelVersion.objects.get()
    boss = User.objects.create_superuser("boss", "boss@example.com", "pw")
    clerk = _staff("view_modelversion")
    buttons = {}

    def render(user: User) -> None:
        request = rf.get("/")
        request.user = user
        buttons[user.username] = model_admin.get_list_display(request)[-1](version)

    # Two requests interleaved on two threads each see their own user's rights.
    threads = [threading.Thread(target=render, args=(user,)) for user in (boss, clerk)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert "Roll back to this" in buttons["boss"] and buttons[clerk.username] == ""
    assert not hasattr(model_admin, "_request")


def test_it_shows_a_version_read_only_and_refuses_to_delete_the_active_one(admin_client):
    active = make_version(
        status="active",
        activated_at=timezone.now(),
        weights_id="vgg19-fc2/random",
        metrics={"validation": _scores(), "test": _scores(), "gate": {"passed": True}},
    )
    url = reverse("admin:shop_modelversion_change", args=[active.pk])
    content = admin_client.get(url).content.decode()
    assert 'name="_save"' not in content and 'name="_continue"' not in content
    assert "deletelink" not in content
    assert "vgg19-fc2/random" in content  # the weights id stays on the detail page
    assert "validation (gate)" in content
    assert admin_client.post(url, {"status": "failed"}).status_code == 403
    assert admin_client.post(reverse("admin:shop_modelversion_delete", args=[active.pk])).status_code == 403
    active.refresh_from_db()
    assert active.status == "active"


def test_it_keeps_activate_and_override_buttons_on_the_read_only_page(admin_client):
    refused = make_version(metrics={"gate": {"passed": False, "reason": "below the baseline"}})
    passed = make_version(metrics={"gate": {"passed": True, "reason": "ok"}})
    content = admin_client.get(reverse("admin:shop_modelversion_change", args=[refused.pk])).content.decode()
    assert "Activate despite the gate" in content and 'name="_save"' not in content
    content = admin_client.get(reverse("admin:shop_modelversion_change", args=[passed.pk])).content.decode()
    assert 'id="activate"' in content


def test_it_lists_versions_in_narrow_columns(admin_client):
    make_version(
        status="active",
        weights_id="vgg19-fc2/random",
        metrics={"validation": _scores(), "test": _scores(), "gate": {"passed": True, "reason": "ok"}},
    )
    content = admin_client.get(reverse("admin:shop_modelversion_changelist")).content.decode()
    assert "column-weights_id" not in content and "vgg19-fc2/random" not in content
    assert "0.500 (baseline 0.350)" in content and "(raw" not in content
    assert '<td class="field-progress_text">done</td>' in content


# --- query counts ------------------------------------------------------------------------------


def _features(count: int) -> None:
    for index in range(count):
        product = make_product(title=f"Dress {index}")
        image = product.images.get()
        photo = make_street_photo(product)
        Feature.objects.create(product_image=image, weights_id="w", vector=vector_to_bytes([0.0]))
        Feature.objects.create(street_photo=photo, weights_id="w", vector=vector_to_bytes([0.0]))


def test_it_lists_features_in_constant_queries(admin_client, django_assert_max_num_queries):
    url = reverse("admin:shop_feature_changelist")
    _features(2)
    few = _query_count(admin_client, url)
    _features(9)  # 22 rows
    with django_assert_max_num_queries(few):
        admin_client.get(url)


def test_it_lists_search_queries_in_constant_queries(admin_client, django_assert_max_num_queries):
    url = reverse("admin:shop_searchquery_changelist")
    version = make_version(status="active")

    def searches(count: int) -> None:
        for _ in range(count):
            query = SearchQuery(status="done", version=version)
            query.image.save("q.jpg", ContentFile(jpeg_bytes()), save=True)

    searches(2)
    few = _query_count(admin_client, url)
    searches(18)
    with django_assert_max_num_queries(few):
        admin_client.get(url)


def test_it_shows_indexing_against_each_categorys_active_version(admin_client, django_assert_max_num_queries):
    dresses, skirts = make_version(status="active"), make_version(status="active", category="skirts")
    stale = make_version(status="ready")
    make_embedding(make_product(title="Indexed dress"), dresses)
    make_embedding(make_product(title="Indexed skirt", category="skirts"), skirts)
    make_embedding(make_product(title="Only under an old version"), stale)
    url = reverse("admin:shop_product_changelist")
    few = _query_count(admin_client, url)

    content = admin_client.get(url).content.decode()
    assert content.count('<td class="field-indexing_status">indexed</td>') == 2
    assert content.count('<td class="field-indexing_status">not indexed yet</td>') == 1

    for index in range(17):
        make_product(title=f"More {index}", category="skirts" if index % 2 else "dresses")
    with django_assert_max_num_queries(few):
        admin_client.get(url)


# --- shop pages --------------------------------------------------------------------------------


def test_it_says_an_empty_category_is_empty_not_the_catalogue(client):
    make_product()
    content = client.get(reverse("catalogue"), {"category": "skirts"}).content.decode()
    assert "No products in this category yet." in content
    assert "The catalogue is empty" not in content
    assert '<a href="?category=skirts" class="active" aria-current="page">Skirts</a>' in content


def test_it_says_so_when_the_whole_catalogue_is_empty(client):
    content = client.get(reverse("catalogue")).content.decode()
    assert "The catalogue is empty" in content and "No products in this category" not in content


def test_it_styles_the_current_filter_and_page(client):
    content = client.get(reverse("catalogue")).content.decode()
    assert 'href="/static/shop/shop.css"' in content
    assert ".filters a.active" in (REPO / "shop" / "static" / "shop" / "shop.css").read_text()
    assert 'class="active" aria-current="page">All</a>' in content
    assert 'class="active" aria-current="page">Catalogue</a>' in content
    content = client.get(reverse("search")).content.decode()
    assert 'class="active" aria-current="page">Search by photo</a>' in content


def test_it_credits_the_street2shop_format_not_its_photos(client):
    product = make_product(s2s_product_id=4242)
    content = client.get(reverse("product-detail", args=[product.pk])).content.decode()
    assert "Catalogue in the Street2Shop format (Kiapour et al., ICCV 2015)." in content
    assert "seeded from Street2Shop" not in content
    assert "Street2Shop id 4242" in content


def test_it_shows_thumbnails_in_cards_and_the_admin(client, admin_client):
    with_thumb, without = make_product(title="Thumbed"), make_product(title="Plain")
    image = with_thumb.images.get()
    image.thumbnail.save("t.jpg", ContentFile(jpeg_bytes(size=(16, 20))), save=True)
    image.thumbnail_large.save("t-large.jpg", ContentFile(jpeg_bytes(size=(32, 40))), save=True)
    version = make_version(status="active")
    make_similar(without, [with_thumb], version)
    make_similar(with_thumb, [without], version)

    catalogue = client.get(reverse("catalogue")).content.decode()
    assert f'src="{image.thumbnail.url}"' in catalogue
    assert f'src="{without.images.get().image.url}"' in catalogue
    similar = client.get(reverse("product-detail", args=[without.pk])).content.decode()
    assert f'src="{image.thumbnail.url}"' in similar
    # 2x screens get the large one; the product page shows it rather than the original photo.
    assert f'srcset="{image.thumbnail.url} 1x, {image.thumbnail_large.url} 2x"' in similar
    page = client.get(reverse("product-detail", args=[with_thumb.pk])).content.decode()
    assert f'<img class="main" src="{image.thumbnail_large.url}"' in page

    admin_list = admin_client.get(reverse("admin:shop_product_changelist")).content.decode()
    assert f'src="{image.thumbnail.url}"' in admin_list
    assert f'src="{without.images.get().image.url}"' in admin_list
    images = admin_client.get(reverse("admin:shop_productimage_changelist")).content.decode()
    assert f'src="{image.thumbnail.url}"' in images


# --- search form -------------------------------------------------------------------------------


def _post_search(client, **box):
    upload = io.BytesIO(jpeg_bytes(size=(64, 80)))
    upload.name = "street.jpg"
    return client.post(reverse("search"), {"image": upload, **{f"box_{k}": v for k, v in box.items()}})


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ({"left": 0, "top": 0, "width": -5, "height": 10}, "The box needs a positive width and height."),
        ({"left": 0, "top": 0, "width": 10, "height": 0}, "The box needs a positive width and height."),
        ({"left": 0, "top": 0, "width": 10}, "The box needs a left, top, width and height."),
        ({"left": "abc", "top": 0, "width": 10, "height": 10}, "The box could not be read"),
        ({"left": -3, "top": 0, "width": 10, "height": 10}, "The box must start inside the photo."),
        (
            {"left": 5000, "top": 0, "width": 10, "height": 10},
            "The box lies outside the photo (64×80 px): draw it on the photo again.",
        ),
    ],
)
def test_it_explains_a_bad_box_in_words(client, box, message):
    response = _post_search(client, **box)
    assert response.status_code == 400
    form = response.context["form"]
    assert len(form.non_field_errors()) == 1 and form.non_field_errors()[0].startswith(message)
    assert not [name for name in form.errors if name.startswith("box_")]  # hidden fields show no errors
    assert message in response.content.decode()
    assert SearchQuery.objects.count() == 0


def test_it_clamps_a_box_that_overhangs_the_photo(client):
    response = _post_search(client, left=50, top=60, width=100, height=100)
    assert response.status_code == 302
    assert SearchQuery.objects.get().bbox == (50, 60, 14, 20)


def test_it_offers_clear_box_only_once_a_box_is_drawn(client):
    assert (
        '<button type="button" class="link-button" id="clear-box" hidden>Clear box</button>'
        in client.get(reverse("search")).content.decode()
    )


def _own(client, query: SearchQuery) -> None:
    session = client.session
    session["searches"] = [str(query.pk)]
    session.save()


def test_it_draws_the_searched_box_over_the_photo(client):
    query = SearchQuery(
        status="done", bbox_left=16, bbox_top=20, bbox_width=32, bbox_height=40, width=64, height=80, photo_ready=True
    )
    query.image.save("q.jpg", ContentFile(jpeg_bytes(size=(64, 80))), save=True)
    _own(client, query)
    content = client.get(reverse("search-results", args=[query.pk])).content.decode()
    assert '<rect x="25.000" y="25.000" width="50.000" height="50.000"/>' in content

    whole = SearchQuery(status="done", width=64, height=80, photo_ready=True)
    whole.image.save("w.jpg", ContentFile(jpeg_bytes()), save=True)
    _own(client, whole)
    content = client.get(reverse("search-results", args=[whole.pk])).content.decode()
    assert reverse("search-photo", args=[whole.pk]) in content and 'id="searched-box"' not in content


# --- admin smoke ---------------------------------------------------------------------------------


def test_it_opens_every_admin_list_and_form(admin_client):
    product = make_product(s2s_product_id=7)
    photo = make_street_photo(product)
    version = make_version(status="active")
    make_embedding(product, version)
    make_similar(product, [make_product(title="Other")], version)
    Feature.objects.create(street_photo=photo, weights_id="w", vector=vector_to_bytes([0.0]))
    image = product.images.get()
    for name in (
        "product",
        "productimage",
        "streetphoto",
        "feature",
        "productembedding",
        "similarproduct",
        "searchquery",
        "modelversion",
        "photodownload",
    ):
        assert admin_client.get(reverse(f"admin:shop_{name}_changelist")).status_code == 200, name
    for url in (
        reverse("admin:shop_product_change", args=[product.pk]),
        reverse("admin:shop_product_add"),
        reverse("admin:shop_productimage_change", args=[image.pk]),
        reverse("admin:shop_productimage_add"),
        reverse("admin:shop_streetphoto_change", args=[photo.pk]),
    ):
        assert admin_client.get(url).status_code == 200, url


@pytest.mark.django_db
def test_it_stores_an_upload_under_its_own_name_and_detected_format(client, django_capture_on_commit_callbacks):
    upload = io.BytesIO(image_bytes("PNG", size=(80, 100)))
    upload.name = "evil.html"  # a valid image must never be served back as a web page

    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(reverse("search"), {"image": upload})

    assert response.status_code == 302
    query = SearchQuery.objects.get()
    assert query.image.name.endswith(f"{query.pk}-upload.png") and "evil" not in query.image.name
    # Kept outside MEDIA_ROOT, where no URL reaches it.
    assert not Path(query.image.path).is_relative_to(settings.MEDIA_ROOT)
    assert len(callbacks) == 1  # the search is queued once the row is committed
