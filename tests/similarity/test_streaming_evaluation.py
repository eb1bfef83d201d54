"""The streaming Street2Shop evaluation gives exactly what top_k_accuracy gives, one chunk at a time."""

from __future__ import annotations

import numpy as np
import pytest

import similarity.evaluation as evaluation_module
from similarity.evaluation import (
    View,
    iter_chunks,
    streaming_top_k_accuracies,
    streaming_top_k_accuracy,
    top_k_accuracy,
)

CHUNK_ROWS = (1, 2, 3, 5, 7, 16, 1000)
KS = (1, 2, 3, 5, 10)


def _catalogue(rng: np.random.Generator, *, products: int, rows: int, queries: int, dim: int = 3):
    """Small-integer features (so many exact ties), some zero rows (NaN under cosine), and
    queries of products that have no shop photo at all."""
    gallery = rng.integers(-1, 2, size=(rows, dim)).astype(np.float32)
    gallery[rng.random(rows) < 0.1] = 0.0
    gallery_labels = rng.integers(0, products, size=rows)
    query_vectors = rng.integers(-1, 2, size=(queries, dim)).astype(np.float32)
    query_vectors[rng.random(queries) < 0.1] = 0.0
    query_labels = rng.integers(0, products + 3, size=queries)  # up to 3 labels never in the gallery
    return query_vectors, query_labels, gallery, gallery_labels


def _once(chunks):
    """A one-shot iterator that fails if read twice (the gallery must be read in one pass)."""
    used = []

    def generate():
        assert not used, "the gallery was read twice"
        used.append(True)
        yield from chunks

    return generate()


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_it_matches_top_k_accuracy_for_every_chunk_size(seed, metric):
    rng = np.random.default_rng(seed)
    queries, query_labels, gallery, gallery_labels = _catalogue(
        rng, products=int(rng.integers(1, 25)), rows=int(rng.integers(1, 90)), queries=int(rng.integers(1, 30))
    )
    expected = top_k_accuracy(queries, query_labels, gallery, gallery_labels, ks=KS, metric=metric)
    by_product = np.argsort(gallery_labels, kind="stable")
    shuffled = rng.permutation(len(gallery))
    for order in (by_product, shuffled):
        for rows in CHUNK_ROWS:
            chunks = iter_chunks(gallery[order], gallery_labels[order], rows)
            result = streaming_top_k_accuracy(queries, query_labels, chunks, ks=KS, metric=metric)
            assert result == expected, (rows, order is shuffled)


def test_it_matches_on_a_larger_gallery_with_products_split_across_chunks():
    rng = np.random.default_rng(99)
    queries, query_labels, gallery, gallery_labels = _catalogue(rng, products=300, rows=1300, queries=120, dim=6)
    gallery_labels = np.sort(gallery_labels)  # as read from the database: by product
    for metric in ("cosine", "euclidean"):
        expected = top_k_accuracy(queries, query_labels, gallery, gallery_labels, metric=metric)
        for rows in (1, 4, 9, 64, 333):  # 4.3 rows a product: most chunk sizes split products
            chunks = iter_chunks(gallery, gallery_labels, rows)
            assert streaming_top_k_accuracy(queries, query_labels, chunks, metric=metric) == expected


def test_it_keeps_the_keys_tie_and_nan_rules_of_top_k_accuracy():
    # Degenerate features: every product ties; a zero query is NaN against all under cosine.
    gallery = np.ones((6, 4))
    gallery_labels = [0, 0, 1, 1, 2, 2]
    queries = np.array([[1.0, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]])
    labels = [0, 1, "absent"]
    expected = top_k_accuracy(queries, labels, gallery, gallery_labels, ks=(1, 2, 3))
    assert expected == {"top1": 0.0, "top2": 0.0, "top3": 2 / 3, "queries": 3, "gallery": 3}
    for rows in (1, 2, 3, 5):
        result = streaming_top_k_accuracy(queries, labels, iter_chunks(gallery, gallery_labels, rows), ks=(1, 2, 3))
        assert result == expected


def test_it_matches_with_string_and_numpy_labels():
    rng = np.random.default_rng(5)
    queries, query_labels, gallery, gallery_labels = _catalogue(rng, products=8, rows=30, queries=12)
    names = np.array([f"p{label}" for label in range(20)])
    expected = top_k_accuracy(queries, names[query_labels], gallery, list(names[gallery_labels]), ks=KS)
    for rows in (1, 4, 30):
        chunks = ((vectors, list(labels)) for vectors, labels in iter_chunks(gallery, names[gallery_labels], rows))
        assert streaming_top_k_accuracy(queries, names[query_labels], chunks, ks=KS) == expected


def test_it_scores_several_views_in_one_pass():
    rng = np.random.default_rng(3)
    queries, query_labels, gallery, gallery_labels = _catalogue(rng, products=40, rows=170, queries=50, dim=5)
    gallery_labels = np.sort(gallery_labels)
    projection = rng.normal(size=(5, 2)).astype(np.float32)
    squash = rng.normal(size=(5, 3)).astype(np.float32)

    def project(rows):
        return np.asarray(rows, dtype=np.float32) @ projection

    def tanh(rows):
        return np.tanh(np.asarray(rows, dtype=np.float32) @ squash)

    views = {
        "baseline": View(queries, metric="cosine"),
        "projected": View(project(queries), metric="euclidean", transform=project),
        "squashed": View(tanh(queries), metric="euclidean", transform=tanh),
    }
    expected = {
        "baseline": top_k_accuracy(queries, query_labels, gallery, gallery_labels, ks=KS),
        "projected": top_k_accuracy(
            project(queries), query_labels, project(gallery), gallery_labels, ks=KS, metric="euclidean"
        ),
        "squashed": top_k_accuracy(
            tanh(queries), query_labels, tanh(gallery), gallery_labels, ks=KS, metric="euclidean"
        ),
    }
    for rows in (1, 7, 64, 500):
        result = streaming_top_k_accuracies(
            views, query_labels, _once(iter_chunks(gallery, gallery_labels, rows)), ks=KS
        )
        assert result == expected


def test_it_never_computes_distances_to_more_than_one_chunk(monkeypatch):
    rng = np.random.default_rng(8)
    queries, query_labels, gallery, gallery_labels = _catalogue(rng, products=50, rows=400, queries=30)
    widths = []
    real = evaluation_module.blocked_distances

    def recording(queries, matrix, **kwargs):
        widths.append(len(matrix))
        return real(queries, matrix, **kwargs)

    def recording_cosine(queries, rows):
        widths.append(len(rows))
        return real_cosine(queries, rows)

    real_cosine = evaluation_module._cosine_blocks
    monkeypatch.setattr(evaluation_module, "blocked_distances", recording)
    monkeypatch.setattr(evaluation_module, "_cosine_blocks", recording_cosine)
    for metric in ("cosine", "euclidean"):
        widths.clear()
        streaming_top_k_accuracy(queries, query_labels, iter_chunks(gallery, gallery_labels, 25), metric=metric)
        assert widths and max(widths) == 25 and len(widths) == 16


def test_it_refuses_empty_or_mislabelled_input():
    gallery, labels = np.ones((4, 2)), [0, 0, 1, 2]
    with pytest.raises(ValueError, match="No queries"):
        streaming_top_k_accuracy(np.zeros((0, 2)), [], iter_chunks(gallery, labels, 2))
    with pytest.raises(ValueError, match="gallery is empty"):
        streaming_top_k_accuracy(np.ones((1, 2)), [0], iter([]))
    with pytest.raises(ValueError, match="gallery is empty"):
        streaming_top_k_accuracy(np.ones((1, 2)), [0], iter([(np.zeros((0, 2)), [])]))
    with pytest.raises(ValueError):
        streaming_top_k_accuracy(np.ones((2, 2)), [0], iter_chunks(gallery, labels, 2))
    with pytest.raises(ValueError):
        streaming_top_k_accuracy(np.ones((1, 2)), [0], iter([(gallery, labels[:3])]))


# --- Through the shop: features read from the database in chunks. ---


def _stored_catalogue(rng: np.random.Generator, *, products: int = 30, dim: int = 8):
    """Products with 1-6 shop photos each, street crops of train and test, features stored
    as float16 or float32, plus noise the evaluation must ignore (another category and weights)."""
    from shop.models import Feature, Product, ProductImage, StreetPhoto, vector_to_bytes

    def feature(**image) -> None:
        vector = rng.normal(size=dim).astype(np.float32)
        if rng.random() < 0.05:
            vector[:] = 0.0
        dtype = "float16" if rng.random() < 0.5 else "float32"
        Feature.objects.create(weights_id="w", vector=vector_to_bytes(vector, dtype), dtype=dtype, **image)

    # Noise first (the newest feature's weights are the current ones): another category, other weights.
    skirt = Product.objects.create(title="skirt", category="skirts")
    feature(product_image=ProductImage.objects.create(product=skirt, image="skirt.jpg"))
    dress = Product.objects.create(title="old dress", category="dresses")
    other = ProductImage.objects.create(product=dress, image="other-weights.jpg")
    Feature.objects.create(product_image=other, weights_id="other", vector=vector_to_bytes(np.ones(dim)))
    for index in range(products):
        product = Product.objects.create(title=f"dress {index}", category="dresses")
        for position in range(int(rng.integers(1, 7)) if index % 7 else 0):  # some have no photo
            feature(
                product_image=ProductImage.objects.create(
                    product=product, image=f"p{index}-{position}.jpg", position=position
                )
            )
        for crop in range(int(rng.integers(0, 3))):
            split = "test" if rng.random() < 0.6 else "train"
            feature(
                street_photo=StreetPhoto.objects.create(
                    product=product,
                    image=f"s{index}-{crop}.jpg",
                    split=split,
                    bbox_left=0,
                    bbox_top=0,
                    bbox_width=5,
                    bbox_height=5,
                )
            )


def _reference(split: str) -> dict:
    """top_k_accuracy over every stored vector of the category, decoded with its dtype."""
    from shop.models import Feature

    def read(**filters):
        rows = Feature.objects.filter(weights_id="w", **filters)
        image = "product_image" if "product_image__product__category" in filters else "street_photo"
        pairs = [(getattr(f, image).product_id, f.as_array()) for f in rows.select_related(image)]
        return np.stack([v for _, v in pairs]), np.array([p for p, _ in pairs])

    queries, query_labels = read(street_photo__product__category="dresses", street_photo__split=split)
    gallery, gallery_labels = read(product_image__product__category="dresses")
    return top_k_accuracy(queries, query_labels, gallery, gallery_labels)


@pytest.mark.django_db
def test_it_evaluates_a_category_from_chunks_of_the_database_like_the_whole_gallery():
    from shop.services.evaluation import evaluate_category

    _stored_catalogue(np.random.default_rng(21))
    expected = _reference("test")
    for chunk_size in (1, 3, 5, 17, 10_000):
        result = evaluate_category(category="dresses", split="test", chunk_size=chunk_size)
        assert result["baseline"] == expected
        assert (result["queries"], result["gallery"], result["weights_id"]) == (
            expected["queries"],
            expected["gallery"],
            "w",
        )


@pytest.mark.django_db
def test_it_reads_the_gallery_in_chunks_ordered_by_product(monkeypatch):
    from shop.models import Feature
    from shop.services import evaluation

    monkeypatch.setattr(evaluation, "PRODUCTS_PER_QUERY", 4)  # several queries, chunks straddling them
    _stored_catalogue(np.random.default_rng(22))
    stored = Feature.objects.filter(weights_id="w", product_image__product__category="dresses")
    chunks = list(evaluation.gallery_chunks(category="dresses", weights_id="w", chunk_size=7))
    assert [len(vectors) for vectors, _ in chunks[:-1]] == [7] * (len(chunks) - 1)
    labels = np.concatenate([labels for _, labels in chunks])
    assert len(labels) == stored.count() and np.all(np.diff(labels) >= 0)
    assert all(vectors.dtype == np.float32 and vectors.shape[1] == 8 for vectors, _ in chunks)
    expected = sorted(stored.values_list("product_image__product_id", flat=True))
    assert labels.tolist() == expected


@pytest.mark.django_db
def test_it_scores_baseline_and_towers_in_one_pass_over_the_database():
    import keras

    from shop.services import evaluation
    from similarity.embedding import embed
    from similarity.evaluation import score_towers

    _stored_catalogue(np.random.default_rng(23))
    keras.utils.set_random_seed(0)
    towers = {"baseline": None}
    for name in ("previous", "siamese"):
        towers[name] = keras.Sequential([keras.Input(shape=(8,)), keras.layers.Dense(4, activation="tanh")])
    queries, query_labels = evaluation.street_features(category="dresses", split="test", weights_id="w")
    gallery, gallery_labels = evaluation.shop_features(category="dresses", weights_id="w")
    chunks = _once(evaluation.gallery_chunks(category="dresses", weights_id="w", chunk_size=6))

    result = score_towers(queries, query_labels, chunks, towers)

    assert result["baseline"] == top_k_accuracy(queries, query_labels, gallery, gallery_labels)
    for name in ("previous", "siamese"):
        expected = top_k_accuracy(
            embed(towers[name], queries), query_labels, embed(towers[name], gallery), gallery_labels, metric="euclidean"
        )
        assert result[name] == expected
    assert result["queries"] == len(queries) and result["gallery"] == len(np.unique(gallery_labels))
