"""Edits to the catalogue leave no stale similar-item list, no features of a replaced photo and no orphan files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.conf import settings as django_settings
from django.core.files.base import ContentFile
from django.db.models import Count, Q
from django.urls import reverse
from scipy.spatial.distance import cdist

from shop import runtime
from shop.models import Feature, ModelVersion, Product, ProductEmbedding, ProductImage, SimilarProduct, vector_to_bytes
from shop.services import catalogue, embedding_index, indexing
from shop.services.recommendations import rebuild_recommendations, update_recommendations
from tests.factories import jpeg_bytes, make_product

SIZE = 24


@pytest.fixture(autouse=True)
def _fresh_indexes(settings):
    settings.CDIST_MAX_ROWS = 0  # the scaled (BLAS candidates) path, as at 1e5 products
    embedding_index.forget()
    yield
    embedding_index.forget()


@pytest.fixture
def sent(monkeypatch) -> dict[str, list]:
    """Tasks queued once an edit commits, recorded instead of sent to a broker."""
    from shop.services import enqueue

    calls: dict[str, list] = {"index_products": [], "rerank_similar_lists": []}
    monkeypatch.setattr(enqueue, "index_products", lambda ids: calls["index_products"].append(list(ids)))
    monkeypatch.setattr(enqueue, "rerank_similar_lists", lambda *args: calls["rerank_similar_lists"].append(args))
    return calls


def _embed(version: ModelVersion, products: list[Product], rng: np.random.Generator, dim: int = 8) -> None:
    """What embed_products writes, without a trained tower."""
    vectors = rng.normal(size=(len(products), dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ProductEmbedding.objects.bulk_create(
        [ProductEmbedding(product=p, version=version, vector=vector_to_bytes(v)) for p, v in zip(products, vectors)]
    )


def _catalogue(seed: int) -> tuple[list[Product], ModelVersion, ModelVersion, np.random.Generator]:
    """Products with a photo each, embedded and ranked under a ready and an active version."""
    rng = np.random.default_rng(seed)
    products = [make_product(title=f"dress {i}", colour=(10 * i, 40, 90)) for i in range(SIZE)]
    ready = ModelVersion.objects.create(status="ready")
    active = ModelVersion.objects.create(status="active")
    for version in (ready, active):
        _embed(version, products, rng)
        rebuild_recommendations(version_id=version.pk)
    return products, ready, active, rng


def _lists(version: ModelVersion) -> dict[int, list[tuple[int, float]]]:
    lists: dict[int, list[tuple[int, float]]] = {}
    for row in SimilarProduct.objects.filter(version=version).order_by("product_id", "ranking"):
        lists.setdefault(row.product_id, []).append((row.recommendation_id, round(row.distance, 6)))
    return lists


def _rebuilt(version: ModelVersion) -> dict[int, list[tuple[int, float]]]:
    """The reference: every list computed afresh by plain cdist over the version's stored embeddings."""
    rows = list(ProductEmbedding.objects.filter(version=version).order_by("id"))
    ids = [row.product_id for row in rows]
    vectors = np.stack([row.as_array() for row in rows]).astype(np.float64)
    distances = cdist(vectors, vectors)
    k = django_settings.SIMILAR_ITEMS
    lists = {}
    for i, product_id in enumerate(ids):
        order = [j for j in np.lexsort((np.arange(len(ids)), distances[i])) if j != i][:k]
        lists[product_id] = [(ids[j], round(float(distances[i, j]), 6)) for j in order]
    return lists


def _assert_fresh(*versions: ModelVersion) -> None:
    """Every stored list is what a full rebuild gives now, and holds SIMILAR_ITEMS entries."""
    for version in versions:
        stored = _lists(version)
        assert stored == _rebuilt(version), f"stale lists in {version}"
        assert all(len(rows) == django_settings.SIMILAR_ITEMS for rows in stored.values())


def _most_recommended(version: ModelVersion) -> Product:
    """The product in the most lists: an edit of it touches many."""
    counts = (
        SimilarProduct.objects.filter(version=version)
        .values("recommendation_id")
        .annotate(n=Count("id"))
        .order_by("-n", "recommendation_id")
    )
    return Product.objects.get(pk=counts[0]["recommendation_id"])


def _upload(name: str, colour=(0, 0, 200)) -> io.BytesIO:
    upload = io.BytesIO(jpeg_bytes(colour=colour))
    upload.name = name
    return upload


def _add_photo(product: Product, colour=(30, 160, 30)) -> ProductImage:
    photo = ProductImage(product=product, position=1)
    photo.image.save(f"extra{product.pk}.jpg", ContentFile(jpeg_bytes(colour=colour)), save=True)
    return photo


def _in_no_list(product_id: int) -> bool:
    return not SimilarProduct.objects.filter(Q(product_id=product_id) | Q(recommendation_id=product_id)).exists()


def _reembed(active: ModelVersion, product: Product, rng: np.random.Generator) -> None:
    """What the worker's index_products does for the queued product: embed, then rank it."""
    _embed(active, [product], rng)
    update_recommendations(version_id=active.pk, product_ids=[product.pk])


# --- Lists ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_takes_a_replaced_photo_out_of_every_list_and_then_ranks_its_new_vector(
    admin_client, django_capture_on_commit_callbacks, sent
):
    _, ready, active, rng = _catalogue(seed=3)
    edited = _most_recommended(active)
    photo = edited.images.get()

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:shop_productimage_change", args=[photo.pk]),
            {"product": edited.pk, "image": _upload("replacement.jpg"), "s2s_photo_id": "", "position": "0"},
        )

    assert response.status_code == 302, response.content[:2000]
    # In the edit's own transaction: no list ranks the old vector, and none is left short.
    assert _in_no_list(edited.pk)
    assert not ProductEmbedding.objects.filter(product=edited).exists()
    _assert_fresh(ready, active)
    assert sent["index_products"] == [[edited.pk]]

    _reembed(active, edited, rng)

    _assert_fresh(ready, active)
    assert len(_lists(active)[edited.pk]) == django_settings.SIMILAR_ITEMS


@pytest.mark.django_db
@pytest.mark.parametrize("how", ["admin", "admin-action", "orm", "orm-queryset"])
def test_it_refills_every_list_a_deleted_product_was_in(how, admin_client, sent):
    products, ready, active, _ = _catalogue(seed=5)
    deleted = [_most_recommended(active)]
    if how in ("admin-action", "orm-queryset"):
        deleted.append(next(p for p in products if p.pk != deleted[0].pk))
    ids = [p.pk for p in deleted]

    if how == "admin":
        response = admin_client.post(reverse("admin:shop_product_delete", args=[ids[0]]), {"post": "yes"})
        assert response.status_code == 302
    elif how == "admin-action":
        response = admin_client.post(
            reverse("admin:shop_product_changelist"),
            {"action": "delete_selected", "_selected_action": ids, "post": "yes"},
        )
        assert response.status_code == 302
    elif how == "orm":
        deleted[0].delete()  # the pre_delete safety net
    else:
        Product.objects.filter(pk__in=ids).delete()

    assert not Product.objects.filter(pk__in=ids).exists()
    assert all(_in_no_list(pk) for pk in ids)
    _assert_fresh(ready, active)
    assert sent == {"index_products": [], "rerank_similar_lists": []}


@pytest.mark.django_db
@pytest.mark.parametrize("how", ["admin", "inline", "orm"])
def test_it_takes_a_product_out_of_every_list_when_one_of_its_photos_is_deleted(
    how, admin_client, django_capture_on_commit_callbacks, sent
):
    _, ready, active, rng = _catalogue(seed=8)
    edited = _most_recommended(active)
    kept = edited.images.get()
    extra = _add_photo(edited)

    with django_capture_on_commit_callbacks(execute=True):
        if how == "admin":
            response = admin_client.post(reverse("admin:shop_productimage_delete", args=[extra.pk]), {"post": "yes"})
            assert response.status_code == 302
        elif how == "inline":
            response = admin_client.post(
                reverse("admin:shop_product_change", args=[edited.pk]),
                {
                    "title": edited.title,
                    "category": edited.category,
                    "price": "49.00",
                    "description": "",
                    "s2s_product_id": "",
                    "images-TOTAL_FORMS": "2",
                    "images-INITIAL_FORMS": "2",
                    "images-MIN_NUM_FORMS": "0",
                    "images-MAX_NUM_FORMS": "1000",
                    "images-0-id": kept.pk,
                    "images-0-product": edited.pk,
                    "images-0-position": "0",
                    "images-0-s2s_photo_id": "",
                    "images-1-id": extra.pk,
                    "images-1-product": edited.pk,
                    "images-1-position": "1",
                    "images-1-s2s_photo_id": "",
                    "images-1-DELETE": "on",
                    "street_photos-TOTAL_FORMS": "0",
                    "street_photos-INITIAL_FORMS": "0",
                },
            )
            assert response.status_code == 302, response.content[:3000]
        else:
            extra.delete()

    assert list(edited.images.values_list("pk", flat=True)) == [kept.pk]
    assert _in_no_list(edited.pk)
    _assert_fresh(ready, active)
    assert sent["index_products"][-1] == [edited.pk]

    _reembed(active, edited, rng)  # from the photo it kept

    _assert_fresh(ready, active)


@pytest.mark.django_db
def test_it_takes_both_products_out_of_every_list_when_a_photo_moves_between_them(
    admin_client, django_capture_on_commit_callbacks, sent
):
    products, ready, active, _ = _catalogue(seed=13)
    source = _most_recommended(active)
    target = next(p for p in products if p.pk != source.pk)
    moved = _add_photo(source)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:shop_productimage_change", args=[moved.pk]),
            {"product": target.pk, "s2s_photo_id": "", "position": "1"},
        )

    assert response.status_code == 302, response.content[:2000]
    assert _in_no_list(source.pk) and _in_no_list(target.pk)
    _assert_fresh(ready, active)
    assert sorted(pk for ids in sent["index_products"] for pk in ids) == sorted([source.pk, target.pk])


@pytest.mark.django_db
def test_it_leaves_many_lists_to_a_worker_and_the_worker_refills_them(
    monkeypatch, django_capture_on_commit_callbacks, sent
):
    from workers import tasks

    monkeypatch.setattr(catalogue, "RERANK_IN_REQUEST", 3)
    monkeypatch.setattr(catalogue, "RERANK_TASK_CHUNK", 4)
    _, ready, active, _ = _catalogue(seed=11)
    deleted = _most_recommended(active)
    lists = SimilarProduct.objects.filter(recommendation=deleted).count()
    assert lists > 3

    with django_capture_on_commit_callbacks(execute=True):
        catalogue.delete_products(product_ids=[deleted.pk])

    # Taken out at once; the lists it left are short until the worker runs.
    assert _in_no_list(deleted.pk)
    queued = sent["rerank_similar_lists"]
    assert sum(len(ids) for _, ids, _ in queued) == lists and all(len(ids) <= 4 for _, ids, _ in queued)
    assert all(removed == [deleted.pk] for _, _, removed in queued)
    with pytest.raises(AssertionError):
        _assert_fresh(ready, active)

    for version_id, ids, removed in queued:
        tasks.rerank_similar_lists(version_id, ids, removed)

    _assert_fresh(ready, active)


# --- A photo replaced while a worker read it --------------------------------------------------------


class _MeanColourBackbone:
    """A stand-in backbone: each image's mean colour; runs `during` once, as the admin acting mid-batch."""

    weights_id = "test/mean-colour"
    input_size = 16

    def __init__(self, during=None) -> None:
        self.during = during

    def extract_images(self, images, batch_size: int) -> np.ndarray:
        if self.during is not None:
            during, self.during = self.during, None
            during()
        return np.stack(
            [np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(axis=0) for image in images]
        )


@pytest.mark.django_db
def test_it_never_stores_what_a_worker_made_from_a_photo_replaced_meanwhile(
    monkeypatch, django_capture_on_commit_callbacks, sent
):
    product = make_product(colour=(220, 20, 20))  # photo A: red
    photo = product.images.get()
    storage = photo.image.storage

    def admin_replaces_it() -> None:  # the admin saves photo B (blue) while the worker runs the backbone on A
        with django_capture_on_commit_callbacks(execute=True):
            replaced = catalogue.photo_file_names(image_ids=[photo.pk])
            edited = ProductImage.objects.get(pk=photo.pk)
            edited.image.save("blue.jpg", ContentFile(jpeg_bytes(colour=(20, 20, 220))), save=True)
            catalogue.product_changed(product_id=product.pk, changed_image_ids=[photo.pk], replaced_files=replaced)

    backbone = _MeanColourBackbone(during=admin_replaces_it)
    monkeypatch.setattr(runtime, "get_backbone", lambda: backbone)
    embedded: list[list[int]] = []
    monkeypatch.setattr(
        indexing, "embed_products", lambda *, version, product_ids: embedded.append(list(product_ids)) or 0
    )
    ModelVersion.objects.create(status="active", weights_id=backbone.weights_id)
    thumbnails_before = set(storage.listdir("thumbnails")[1]) if storage.exists("thumbnails") else set()

    assert indexing.index_products(product_ids=[product.pk]) == 0

    photo.refresh_from_db()
    assert not Feature.objects.filter(product_image=photo).exists()  # nothing from A's pixels
    assert photo.thumbnail.name == ""  # nor A's thumbnail, whose file is gone too
    assert set(storage.listdir("thumbnails")[1]) == thumbnails_before
    assert embedded == []  # an embedding now would miss B and stop the re-index from making one
    assert sent["index_products"] == [[product.pk]]

    assert indexing.index_products(product_ids=[product.pk]) == 1  # the re-index the replacement queued

    red, _, blue = Feature.objects.get(product_image=photo).as_array()
    assert blue > 150 and red < 60
    photo.refresh_from_db()
    assert photo.thumbnail.name and storage.exists(photo.thumbnail.name)
    assert embedded == [[product.pk]]


@pytest.mark.django_db
def test_it_replaces_an_embedding_a_late_worker_made_from_a_replaced_photos_features(
    monkeypatch, django_capture_on_commit_callbacks, sent
):
    _products, _, active, rng = _catalogue(seed=13)
    backbone = _MeanColourBackbone()
    ModelVersion.objects.filter(pk=active.pk).update(weights_id=backbone.weights_id)
    monkeypatch.setattr(runtime, "get_backbone", lambda: backbone)
    product = _most_recommended(active)
    photo = product.images.get()
    stale = ProductEmbedding.objects.get(product=product, version=active).vector

    with django_capture_on_commit_callbacks(execute=True):  # the admin replaces the photo...
        replaced = catalogue.photo_file_names(image_ids=[photo.pk])
        photo.image.save("new.jpg", ContentFile(jpeg_bytes(colour=(20, 20, 220))), save=True)
        catalogue.product_changed(product_id=product.pk, changed_image_ids=[photo.pk], replaced_files=replaced)
    # ...while a worker that had read the old features embeds and ranks the product with them.
    ProductEmbedding.objects.create(product=product, version=active, vector=stale)
    update_recommendations(version_id=active.pk, product_ids=[product.pk])
    assert not _in_no_list(product.pk)

    def embed_anew(*, version, product_ids):
        _embed(version, list(Product.objects.filter(pk__in=product_ids)), rng)
        return len(product_ids)

    monkeypatch.setattr(indexing, "embed_products", embed_anew)
    assert indexing.index_products(product_ids=[product.pk]) == 1  # the re-index the replacement queued

    assert bytes(ProductEmbedding.objects.get(product=product, version=active).vector) != bytes(stale)
    assert _lists(active) == _rebuilt(active)


# --- Files ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_deletes_replaced_and_deleted_files_once_committed_but_never_a_shared_one(
    admin_client, django_capture_on_commit_callbacks, sent
):
    replaced, deleted_photo, deleted_product, sharing = (make_product(title=f"dress {i}") for i in range(4))
    photos = {p.pk: p.images.get() for p in (replaced, deleted_photo, deleted_product, sharing)}
    for photo in photos.values():
        photo.thumbnail.save(f"{photo.pk}.jpg", ContentFile(jpeg_bytes(size=(16, 20))), save=True)
    # Seeding stores a photo two products show once: the deleted product shares its file.
    ProductImage.objects.filter(pk=photos[deleted_product.pk].pk).update(image=photos[sharing.pk].image.name)
    photos[deleted_product.pk].refresh_from_db()
    storage = photos[replaced.pk].image.storage
    old = photos[replaced.pk]
    gone = [
        old.image.name,
        old.thumbnail.name,
        photos[deleted_photo.pk].image.name,
        photos[deleted_photo.pk].thumbnail.name,
        photos[deleted_product.pk].thumbnail.name,
    ]
    shared = photos[sharing.pk].image.name

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(
            reverse("admin:shop_productimage_change", args=[old.pk]),
            {"product": replaced.pk, "image": _upload("new.jpg"), "s2s_photo_id": "", "position": "0"},
        )
        assert response.status_code == 302
        response = admin_client.post(
            reverse("admin:shop_productimage_delete", args=[photos[deleted_photo.pk].pk]), {"post": "yes"}
        )
        assert response.status_code == 302
        response = admin_client.post(reverse("admin:shop_product_delete", args=[deleted_product.pk]), {"post": "yes"})
        assert response.status_code == 302
    assert all(storage.exists(name) for name in gone)  # nothing goes before the edit commits

    for callback in callbacks:
        callback()

    assert not any(storage.exists(name) for name in gone)
    assert storage.exists(shared)
    old.refresh_from_db()
    assert old.image.name not in gone and storage.exists(old.image.name)


@pytest.mark.django_db
def test_it_makes_other_processes_reread_the_lists_a_deleted_product_left(sent):
    """A worker caches each list's k-th distance; a deletion elsewhere makes lists farther than its cache says."""
    import copy

    from shop.services import recommendations

    _products, _, active, _rng = _catalogue(seed=9)
    update_recommendations(version_id=active.pk, product_ids=[])  # this "worker" reads the revision
    worker_cache = copy.deepcopy(embedding_index.version_index(active.pk))
    seen = dict(recommendations._seen_revisions)
    deleted = _most_recommended(active)
    before = _lists(active)
    vectors = {
        row.product_id: row.as_array().astype(np.float64) for row in ProductEmbedding.objects.filter(version=active)
    }

    catalogue.delete_products(product_ids=[deleted.pk])  # in "the web process"
    after = _lists(active)
    # A newcomer between a list's old and new k-th distance belongs in it. Put it on the side away
    # from the deleted product, so that the worker's stale index does not notice the deletion itself.
    k = django_settings.SIMILAR_ITEMS
    newcomer_vector = None
    for owner in sorted(p for p, rows in before.items() if deleted.pk in [r for r, _ in rows]):
        old_kth, new_kth = before[owner][-1][1], after[owner][-1][1]
        away = vectors[owner] - vectors[deleted.pk]
        away /= np.linalg.norm(away)
        candidate = vectors[owner] + (old_kth + new_kth) / 2 * away
        nearest = sorted(vectors, key=lambda p: np.linalg.norm(vectors[p] - candidate))[:k]
        if new_kth > old_kth and deleted.pk not in nearest:
            newcomer_vector = candidate
            break
    assert newcomer_vector is not None, "no list suits the test with this seed"

    # Back in "the worker": its cache is as it was before the deletion.
    embedding_index._indexes[active.pk] = worker_cache
    recommendations._seen_revisions.clear()
    recommendations._seen_revisions.update(seen)
    newcomer = make_product(title="newcomer")
    ProductEmbedding.objects.create(
        product=newcomer, version=active, vector=vector_to_bytes(newcomer_vector.astype(np.float32))
    )
    update_recommendations(version_id=active.pk, product_ids=[newcomer.pk])

    assert newcomer.pk in [p for p, _ in _lists(active)[owner]]
    assert _lists(active) == _rebuilt(active)
