"""Lists a shopper can steer: colour chips, one listing per garment, duplicate groups kept current."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from shop.models import ModelVersion, Product, ProductEmbedding, ProductImage, SearchQuery, vector_to_bytes
from shop.services import colours, duplicates, embedding_index
from shop.services.recommendations import rebuild_recommendations
from similarity.colour import PALETTE_NAMES, GarmentColours, colour_mask
from similarity.embedding import COLOUR_DIM
from similarity.garment import SIGNATURE_DIM
from tests.factories import jpeg_bytes, make_product, make_version

pytestmark = pytest.mark.django_db
PALETTE_USED = ("navy", "red", "green", "black")


@pytest.fixture(autouse=True)
def _fresh_indexes():
    embedding_index.forget()
    yield
    embedding_index.forget()


def _catalogue(size: int, *, seed: int = 0, groups: dict[int, int] | None = None):
    """An active version over ``size`` products with random vectors; product i's colours are
    PALETTE_USED[i % 4] (and "white" for every third). ``groups`` maps row -> row of its group."""
    rng = np.random.default_rng(seed)
    version = make_version(status="active")
    products = [Product.objects.create(title=f"dress {i}", price="10.00") for i in range(size)]
    vectors = rng.normal(size=(size, 8)).astype(np.float32)
    for i, product in enumerate(products):
        names = [PALETTE_USED[i % 4]] + (["white"] if i % 3 == 0 else [])
        product.colours, product.colour_mask = names, colour_mask(names)
        if groups and i in groups:
            product.duplicate_group = products[groups[i]].pk
    Product.objects.bulk_update(products, ["colours", "colour_mask", "duplicate_group"])
    ProductEmbedding.objects.bulk_create(
        ProductEmbedding(product=p, version=version, vector=vector_to_bytes(v)) for p, v in zip(products, vectors)
    )
    rebuild_recommendations(version_id=version.pk)
    return version, products, vectors


def _finished_search(version, results: list[Product], vector: np.ndarray) -> SearchQuery:
    """A search the worker finished: its results as stored, and its photo's vector."""
    return SearchQuery.objects.create(
        image="x.jpg",
        status=SearchQuery.Status.DONE,
        version=version,
        results=[{"product_id": p.pk, "distance": 0.0} for p in results],
        vector=vector.tobytes(),
    )


def _shown(response) -> list[int]:
    return [item.product.pk for item in response.context["similar"].items]


def test_it_ranks_within_a_chosen_colour_and_still_shows_ten(client):
    _version, products, vectors = _catalogue(60)
    response = client.get(reverse("product-detail", args=[products[0].pk]), {"colour": "red"})
    assert response.status_code == 200
    red = [i for i in range(1, 60) if i % 4 == 1]
    distances = np.linalg.norm(vectors[red] - vectors[0], axis=1)
    expected = [products[red[i]].pk for i in np.argsort(distances, kind="stable")[:10]]
    assert _shown(response) == expected
    assert b'aria-current="true"' in response.content and b"Similar items in red" in response.content


def test_it_offers_the_colours_of_nearby_products_as_links(client):
    _version, products, _vectors = _catalogue(30)
    response = client.get(reverse("product-detail", args=[products[0].pk]))
    chips = [chip["name"] for chip in response.context["chips"]]
    assert set(chips) == {*PALETTE_USED, "white"}
    content = response.content.decode()
    # Plain links: the choice works without JavaScript.
    assert '<a href="?colour=navy"' in content and '<a href="?" id="colour-any" class="active"' in content


def test_it_refuses_an_unknown_colour(client):
    _version, products, _vectors = _catalogue(12)
    assert client.get(reverse("product-detail", args=[products[0].pk]), {"colour": "chartreuse"}).status_code == 404


def test_it_says_when_no_similar_item_has_the_colour(client):
    _version, products, _vectors = _catalogue(12)
    response = client.get(reverse("product-detail", args=[products[0].pk]), {"colour": "purple"})
    assert response.status_code == 200 and b'id="no-colour-match"' in response.content


def test_it_shows_one_listing_of_a_garment_and_links_the_others(client):
    # Rows 5, 6 and 7 are one garment; row 1 and row 2 another, row 0's own.
    _version, products, vectors = _catalogue(40, groups={5: 5, 6: 5, 7: 5, 0: 0, 1: 0})
    vectors_by_pk = {p.pk: v for p, v in zip(products, vectors)}
    response = client.get(reverse("product-detail", args=[products[0].pk]))
    shown = _shown(response)
    assert len(shown) == 10 and len(set(shown)) == 10
    assert products[1].pk not in shown  # the page's own garment is not "similar" to itself
    assert len({p for p in shown if p in {products[5].pk, products[6].pk, products[7].pk}}) <= 1
    distances = [np.linalg.norm(vectors_by_pk[p] - vectors[0]) for p in shown]
    assert distances == sorted(distances)
    content = response.content.decode()
    assert f'id="other-listings">Also sold as 1 other listing: <a href="/products/{products[1].pk}/"' in content
    groups = [item for item in response.context["similar"].items if item.others]
    for item in groups:
        assert len(item.others) == 2 and "Also sold as 2 other listings" in content


def test_it_reads_a_product_page_in_constant_queries(client, django_assert_max_num_queries):
    counts = []
    for size in (20, 80):
        _version, products, _vectors = _catalogue(size, seed=size, groups={0: 0})
        with django_assert_max_num_queries(20) as captured:
            assert client.get(reverse("product-detail", args=[products[0].pk])).status_code == 200
        counts.append(len(captured))
        Product.objects.all().delete()
        ModelVersion.objects.all().delete()
        embedding_index.forget()
    assert counts[0] == counts[1]


def test_it_refines_a_photo_search_by_colour(client):
    version, products, vectors = _catalogue(50)
    query = _finished_search(version, products[:10], vectors[7])
    response = client.get(reverse("search-results", args=[query.pk]), {"colour": "green"})
    assert response.status_code == 200
    green = [i for i in range(50) if i % 4 == 2]
    nearest = np.argsort(np.linalg.norm(vectors[green] - vectors[7], axis=1), kind="stable")[:10]
    assert _shown(response) == [products[green[i]].pk for i in nearest]
    assert b"closest dresses in green" in response.content
    plain = client.get(reverse("search-results", args=[query.pk]))
    assert _shown(plain) == [p.pk for p in products[:10]]  # as the worker stored them


def _look(names: list[str]) -> dict:
    descriptor = np.zeros(COLOUR_DIM, dtype=np.float32)
    for name in names:
        descriptor[PALETTE_NAMES.index(name)] = 1.0
    descriptor /= np.linalg.norm(descriptor)
    return GarmentColours(
        names=tuple(names), shares=tuple(1 / len(names) for _ in names), descriptor=descriptor
    ).to_json()


def _photographed(signature: float, names: list[str]) -> Product:
    """A product whose one photo has this colour and a signature of ``signature`` in every cell."""
    product = make_product()
    cells = np.full(SIGNATURE_DIM, signature / np.sqrt(SIGNATURE_DIM), dtype=np.float16)
    ProductImage.objects.filter(product=product).update(signature=cells.tobytes(), colours=_look(names))
    colours.update_product_colours(product_ids=[product.pk])
    return product


def test_it_takes_a_products_colours_from_its_first_photo():
    product = _photographed(0, ["navy", "white"])
    product.refresh_from_db()
    assert product.colours == ["navy", "white"]
    assert product.colour_mask == colour_mask(["navy", "white"])
    assert np.frombuffer(product.colour_descriptor, dtype=np.float32)[PALETTE_NAMES.index("navy")] > 0


def test_it_groups_relistings_of_a_photo(settings):
    settings.DUPLICATE_MAX_DISTANCE = 1.0
    original = _photographed(10, ["navy"])
    copy = _photographed(10.5, ["navy"])  # 0.5 apart: a re-encoded copy
    other = _photographed(14, ["navy"])
    duplicates.regroup(product_ids=[original.pk, copy.pk, other.pk])
    groups = dict(Product.objects.values_list("id", "duplicate_group"))
    assert groups == {original.pk: original.pk, copy.pk: original.pk, other.pk: None}
    late = _photographed(13.4, ["navy"])  # 0.6 from `other`, 2.9 from the copy: joins `other` only
    duplicates.regroup(product_ids=[late.pk])
    groups = dict(Product.objects.values_list("id", "duplicate_group"))
    assert groups[late.pk] == groups[other.pk] == other.pk and groups[copy.pk] == original.pk


def test_it_splits_a_group_when_a_photo_is_replaced(settings):
    settings.DUPLICATE_MAX_DISTANCE = 1.0
    original = _photographed(0, ["navy"])
    copy = _photographed(0.8, ["navy"])
    third = _photographed(1.6, ["navy"])
    duplicates.regroup(product_ids=[original.pk, copy.pk, third.pk])
    assert set(Product.objects.values_list("duplicate_group", flat=True)) == {original.pk}
    far = np.full(SIGNATURE_DIM, 40 / np.sqrt(SIGNATURE_DIM), dtype=np.float16).tobytes()
    ProductImage.objects.filter(product=original).update(signature=far)
    duplicates.regroup(product_ids=[original.pk])
    groups = dict(Product.objects.values_list("id", "duplicate_group"))
    assert groups == {original.pk: None, copy.pk: copy.pk, third.pk: copy.pk}


def test_it_keeps_the_colours_every_photo_of_a_product_shows():
    product = _photographed(0, ["navy", "white"])
    worn = ProductImage(product=product, position=1, colours=_look(["navy", "pink", "brown"]))  # skin and hair
    worn.image.save("worn.jpg", ContentFile(jpeg_bytes()), save=True)
    colours.update_product_colours(product_ids=[product.pk])
    product.refresh_from_db()
    assert product.colours == ["navy"] and product.colour_mask == colour_mask(["navy"])


def test_it_shows_a_search_whose_result_left_the_index(client):
    version, products, vectors = _catalogue(30)
    query = _finished_search(version, products[:10], vectors[0])
    client.get(reverse("search-results", args=[query.pk]))  # the index is loaded with every product
    ProductEmbedding.objects.filter(product=products[3]).delete()  # a photo being replaced, say
    response = client.get(reverse("search-results", args=[query.pk]))
    assert response.status_code == 200
    shown = _shown(response)
    assert products[3].pk not in shown and len(shown) == 10


def test_it_sees_colours_read_after_a_product_was_embedded():
    version, products, _vectors = _catalogue(12)
    cached = embedding_index.version_index(version)
    Product.objects.filter(pk=products[0].pk).update(colour_mask=colour_mask(["purple"]))
    embedding_index.version_index(version, recount=True)
    assert cached.colour_masks[cached.positions[products[0].pk]] == colour_mask(["purple"])


def test_it_keeps_the_colour_chosen_while_a_search_was_pending(client):
    version, products, vectors = _catalogue(40)
    query = _finished_search(version, products[:10], vectors[3])
    url = reverse("search-wait", args=[query.pk])
    body = client.get(url, {"include": "page", "colour": "green"}).json()
    assert body["status"] == "done" and "closest dresses in green" in body["page"]
    assert client.get(url, {"include": "page", "colour": "chartreuse"}).status_code == 404
