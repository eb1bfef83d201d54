"""The Street2Shop metadata parser, on the real files where present and on small written ones."""

from __future__ import annotations

import json
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from shop.street2shop.metadata import (
    MetadataError,
    category_files,
    load_demo_products,
    load_pairs,
    load_retrieval,
    photo_filename,
    split_from_filename,
)

REAL_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "street2shop"

real = pytest.mark.skipif(not (REAL_ROOT / "meta" / "json").is_dir(), reason="../shared/street2shop is absent")


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def entry(photo: int = 1, product: int = 10, left=0, top=0, width=10, height=20) -> dict:
    return {"photo": photo, "product": product, "bbox": {"width": width, "top": top, "left": left, "height": height}}


# --- the real files -----------------------------------------------------------------------


@real
def test_it_parses_the_real_dresses_pairs() -> None:
    files = category_files(REAL_ROOT, "dresses")
    train, test = load_pairs(files.train_pairs), load_pairs(files.test_pairs)

    assert (len(train), len(test)) == (12_875, 3_292)
    assert (train.split, test.split) == ("train", "test")
    assert (len(train.product_ids), len(test.product_ids)) == (3_316, 1_112)
    assert (len(train.photo_ids), len(test.photo_ids)) == (9_348, 2_925)
    assert not train.product_ids & test.product_ids
    first = train.pairs[0]
    assert (first.photo_id, first.product_id, first.bbox) == (2847, 47270, (146, 307, 693, 993))


@real
def test_it_parses_the_real_skirts_pairs() -> None:
    files = category_files(REAL_ROOT, "skirts")
    train, test = load_pairs(files.train_pairs), load_pairs(files.test_pairs)

    assert (len(train), len(test)) == (3_337, 604)
    assert (len(train.product_ids), len(test.product_ids)) == (427, 142)
    assert not train.product_ids & test.product_ids
    # Skirts entries order their bbox keys differently; the parser does not care.
    assert test.pairs[0].bbox == (197, 442, 261, 296)


@real
def test_it_finds_no_empty_box_in_the_real_files() -> None:
    # NOTES.md calls street photo 8288 a zero-size dress box; in these files 8288 is a
    # skirts photo with two ordinary boxes, and no entry of either category is empty.
    for category in ("dresses", "skirts"):
        files = category_files(REAL_ROOT, category)
        for path in (files.train_pairs, files.test_pairs):
            assert not [pair for pair in load_pairs(path).pairs if pair.has_empty_box]
    skirts = load_pairs(category_files(REAL_ROOT, "skirts").train_pairs)
    assert [p.bbox for p in skirts.pairs if p.photo_id == 8288] == [(189, 510, 364, 383), (113, 473, 485, 544)]
    dresses = category_files(REAL_ROOT, "dresses")
    assert all(p.photo_id != 8288 for path in (dresses.train_pairs, dresses.test_pairs) for p in load_pairs(path).pairs)


@real
def test_it_reads_real_float_boxes_as_whole_numbers() -> None:
    raw = json.loads(category_files(REAL_ROOT, "dresses").train_pairs.read_text())
    floats = [i for i, e in enumerate(raw) if any(isinstance(v, float) for v in e["bbox"].values())]
    assert len(floats) == 14

    pairs = load_pairs(category_files(REAL_ROOT, "dresses").train_pairs).pairs

    assert pairs[237].bbox == (6, 144, 611, 1097)
    assert all(type(value) is int for pair in pairs for value in pair.bbox)


@real
def test_it_counts_several_boxes_of_one_product_in_one_photo() -> None:
    pairs = load_pairs(category_files(REAL_ROOT, "dresses").train_pairs).pairs
    boxes = Counter((p.photo_id, p.product_id) for p in pairs)
    repeated = {key: n for key, n in boxes.items() if n > 1}

    # Nearly half the entries are further boxes of the same product in the same photo.
    assert len(repeated) == 2_782
    assert sum(repeated.values()) == 6_182
    assert max(repeated.values()) == 12


@real
def test_it_reads_the_real_retrieval_files_in_file_order() -> None:
    dresses = load_retrieval(category_files(REAL_ROOT, "dresses").retrieval)
    skirts = load_retrieval(category_files(REAL_ROOT, "skirts").retrieval)

    assert len(dresses) == 4_428
    assert sum(map(len, dresses.values())) == 19_549
    assert dresses[28] == [86623, 86625, 86627, 86628]
    assert len(skirts) == 8_412
    assert sum(map(len, skirts.values())) == 18_295
    assert skirts[1] == [146763, 146761]
    files = category_files(REAL_ROOT, "dresses")
    paired = load_pairs(files.train_pairs).product_ids | load_pairs(files.test_pairs).product_ids
    assert paired <= dresses.keys()


@real
def test_it_finds_product_ids_reused_across_categories() -> None:
    dresses = load_retrieval(category_files(REAL_ROOT, "dresses").retrieval)
    skirts = load_retrieval(category_files(REAL_ROOT, "skirts").retrieval)
    shared = dresses.keys() & skirts.keys()

    # Same number, different product: no shop photo in common. Ids are per category.
    assert len(shared) == 533
    assert all(not set(dresses[pid]) & set(skirts[pid]) for pid in shared)


@real
def test_it_parses_the_real_files_quickly() -> None:
    files = category_files(REAL_ROOT, "dresses")
    started = time.perf_counter()
    load_pairs(files.train_pairs)
    load_pairs(files.test_pairs)
    load_retrieval(files.retrieval)
    assert time.perf_counter() - started < 2.0


# --- written files ------------------------------------------------------------------------


def test_it_keeps_zero_size_boxes_but_flags_them(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "train_pairs_dresses.json",
        [entry(photo=1), entry(photo=8288, width=0), entry(photo=3, height=-5)],
    )

    pairs = load_pairs(path)

    assert len(pairs) == 3
    assert [(p.photo_id, p.index) for p in pairs.pairs if p.has_empty_box] == [(8288, 1), (3, 2)]
    assert not pairs.pairs[0].has_empty_box


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not valid JSON"),
        ('{"photo": 1}', "expected a JSON array"),
        (json.dumps([entry(), 7]), "entry 1: entry must be an object"),
        (json.dumps([entry(), {"photo": 1, "bbox": {}}]), "entry 1: entry is missing 'product'"),
        (json.dumps([entry(), {"photo": 1, "product": 2, "bbox": {"left": 0}}]), "entry 1: bbox is missing"),
        (json.dumps([entry(), {"photo": 1, "product": 2, "bbox": [0, 0, 1, 1]}]), "entry 1: bbox must be an object"),
        (json.dumps([entry(), entry(photo="12")]), "entry 1: 'photo' must be a non-negative integer"),
        (json.dumps([entry(), entry(product=True)]), "entry 1: 'product' must be a non-negative integer"),
        (json.dumps([entry(), entry(photo=-3)]), "entry 1: 'photo' must be a non-negative integer"),
        (json.dumps([entry(), entry(photo=1.0)]), "entry 1: 'photo' must be a non-negative integer"),
        (json.dumps([entry(), entry(width="10")]), "entry 1: bbox 'width' must be a number"),
        (json.dumps([entry(), entry(left=None)]), "entry 1: bbox 'left' must be a number"),
        ('[{"photo": 1, "product": 2, "bbox": {"left": NaN, "top": 0, "width": 1, "height": 1}}]', "entry 0: bbox"),
    ],
)
def test_it_rejects_malformed_pairs_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "train_pairs_dresses.json"
    path.write_text(content)

    with pytest.raises(MetadataError, match=message) as caught:
        load_pairs(path)

    assert "train_pairs_dresses.json" in str(caught.value)


def test_it_rejects_a_file_that_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "retrieval_dresses.json"
    path.write_bytes(b"\xff\xd8\xff\xe0 a jpeg")

    with pytest.raises(MetadataError, match="retrieval_dresses.json: not UTF-8"):
        load_retrieval(path)


def test_it_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="test_pairs_skirts.json: file not found"):
        load_pairs(tmp_path / "test_pairs_skirts.json")


def test_it_rejects_malformed_retrieval_entries(tmp_path: Path) -> None:
    path = write_json(tmp_path / "retrieval_dresses.json", [{"photo": 1, "product": 2}, {"photo": 3}])

    with pytest.raises(MetadataError, match="retrieval_dresses.json: entry 1: entry is missing 'product'"):
        load_retrieval(path)


def test_it_keeps_retrieval_file_order_and_drops_repeats(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "retrieval_dresses.json",
        [
            {"photo": 9, "product": 2},
            {"photo": 4, "product": 1},
            {"photo": 3, "product": 2},
            {"photo": 9, "product": 2},
        ],
    )

    assert load_retrieval(path) == {2: [9, 3], 1: [4]}


def test_it_takes_the_split_from_the_file_name(tmp_path: Path) -> None:
    path = write_json(tmp_path / "test_pairs_dresses.json", [entry()])

    assert split_from_filename(path) == "test"
    assert load_pairs(path).pairs[0].split == "test"
    assert load_pairs(path, split="train").split == "train"
    assert split_from_filename(Path("retrieval_dresses.json")) is None


def test_it_names_the_category_files(tmp_path: Path) -> None:
    files = category_files(tmp_path, "skirts")

    assert files.train_pairs == tmp_path / "meta" / "json" / "train_pairs_skirts.json"
    assert files.test_pairs.name == "test_pairs_skirts.json"
    assert files.retrieval.name == "retrieval_skirts.json"
    assert files.demo_products.name == "demo_products_skirts.json"
    assert files.missing() == list(files.required)


@pytest.mark.parametrize("category", ["../dresses", "Dresses", "", "dresses/x"])
def test_it_refuses_category_names_that_are_not_plain_words(tmp_path: Path, category: str) -> None:
    with pytest.raises(MetadataError, match="is not a category name"):
        category_files(tmp_path, category)


def test_it_pads_photo_file_names_to_nine_digits() -> None:
    assert photo_filename(146763) == "000146763.jpg"
    assert photo_filename(1) == "000000001.jpg"
    assert photo_filename(425_000) == "000425000.jpg"


def test_it_reads_demo_products(tmp_path: Path) -> None:
    write_json(
        tmp_path / "meta" / "json" / "demo_products_dresses.json",
        [{"product": 7, "title": "Red wrap dress", "price": "49.00", "attributes": {"colour": "red"}}],
    )

    products = load_demo_products(tmp_path, "dresses")

    assert products[7].title == "Red wrap dress"
    assert products[7].price == Decimal("49.00")
    assert products[7].attributes == {"colour": "red"}
    assert load_demo_products(tmp_path, "skirts") == {}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"product": 7, "title": "", "price": "1.00"}, "'title' must be a non-empty string"),
        ({"product": 7, "title": "A", "price": "cheap"}, "'price' 'cheap' is not a number"),
        ({"product": 7, "title": "A", "price": "-1"}, "'price' '-1' must be at least 0"),
        ({"product": 7, "title": "A", "price": "1000000"}, "'price' '1000000' must be at least 0 and below 1000000"),
        ({"product": 7, "title": "A", "price": "1", "attributes": []}, "'attributes' must be an object"),
    ],
)
def test_it_rejects_malformed_demo_products(tmp_path: Path, item: dict, message: str) -> None:
    write_json(tmp_path / "meta" / "json" / "demo_products_dresses.json", [item])

    with pytest.raises(MetadataError, match=f"demo_products_dresses.json: entry 0: {message}"):
        load_demo_products(tmp_path, "dresses")


@pytest.mark.parametrize("digits", [19, 4_301, 10_000])
def test_it_names_the_entry_of_an_id_too_long_to_be_one(tmp_path: Path, digits: int) -> None:
    huge = "9" * digits
    path = tmp_path / "train_pairs_dresses.json"
    path.write_text(
        f'[{json.dumps(entry())}, {{"photo": 2, "product": {huge}, '
        f'"bbox": {{"width": 1, "top": 0, "left": 0, "height": 1}}}}]'
    )
    with pytest.raises(MetadataError, match=rf"entry 1: 'product' has {digits} digits; an id has at most 18"):
        load_pairs(path)


def test_it_accepts_the_longest_id_that_fits(tmp_path: Path) -> None:
    path = write_json(tmp_path / "retrieval_dresses.json", [{"photo": 10**18 - 1, "product": 7}])
    assert load_retrieval(path) == {7: [10**18 - 1]}
