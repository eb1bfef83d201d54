"""The synthetic demo dataset: Street2Shop's layout and format, sound boxes, splits and determinism."""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from shop.street2shop.demo.dataset import README_MARKER, generate_dataset
from shop.street2shop.demo.photos import SHOP_SIZE, shop_photo, street_photo
from shop.street2shop.demo.plan import COLOURS, DemoDatasetError, Dress, plan_catalogue

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "street2shop"
SEED = 7
N_PRODUCTS = 12


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "set"
    generate_dataset(out, n_products=N_PRODUCTS, seed=SEED, street_per_product=2)
    return out


def load(out: Path, name: str) -> list[dict]:
    return json.loads((out / "meta" / "json" / f"{name}_dresses.json").read_text())


def pairs(out: Path) -> list[dict]:
    return load(out, "train_pairs") + load(out, "test_pairs")


def digest(out: Path) -> dict[str, str]:
    files = sorted(p for p in out.rglob("*") if p.is_file())
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_it_lays_out_files_like_street2shop(dataset: Path) -> None:
    names = {str(p.relative_to(dataset)) for p in dataset.rglob("*") if p.is_file() and p.parent.name != "photos"}
    assert names == {
        "README.txt",
        "photos.txt",
        "meta/json/retrieval_dresses.json",
        "meta/json/train_pairs_dresses.json",
        "meta/json/test_pairs_dresses.json",
        "meta/json/demo_products_dresses.json",
    }
    assert all((p.stat().st_mode & 0o444) == 0o444 for p in dataset.rglob("*") if p.is_file())
    assert (dataset / "README.txt").read_text().startswith(README_MARKER)
    assert f"--seed {SEED}" in (dataset / "README.txt").read_text()


def test_it_names_photos_by_nine_digit_ids_listed_in_photos_txt(dataset: Path) -> None:
    files = {p.name for p in (dataset / "photos").iterdir()}
    assert all(re.fullmatch(r"\d{9}\.jpg", name) for name in files)
    listed = {}
    for line in (dataset / "photos.txt").read_text().splitlines():
        photo_id, url = line.split(",", 1)
        assert re.fullmatch(r"\d{9}", photo_id)
        assert url == f"http://demo.fashion-similarity.invalid/photos/{photo_id}.jpg"
        listed[photo_id] = url
    assert {f"{i}.jpg" for i in listed} == files
    json_ids = {e["photo"] for e in load(dataset, "retrieval") + pairs(dataset)}
    assert {f"{i:09d}.jpg" for i in json_ids} == files


def test_it_writes_one_line_json_with_int_ids(dataset: Path) -> None:
    for name in ("retrieval", "train_pairs", "test_pairs", "demo_products"):
        text = (dataset / "meta" / "json" / f"{name}_dresses.json").read_text()
        assert "\n" not in text and text.startswith("[{")
    for entry in load(dataset, "retrieval"):
        assert list(entry) == ["photo", "product"]
        assert all(type(v) is int for v in entry.values())
    for entry in pairs(dataset):
        assert list(entry) == ["photo", "product", "bbox"]
        assert list(entry["bbox"]) == ["width", "top", "left", "height"]
        assert all(type(v) is int for v in [entry["photo"], entry["product"], *entry["bbox"].values()])


@pytest.mark.skipif(not REAL.is_dir(), reason="the real Street2Shop metadata (../shared) is not here")
def test_it_matches_the_real_files_format(dataset: Path) -> None:
    for name in ("retrieval", "train_pairs", "test_pairs"):
        real_text = (REAL / "meta" / "json" / f"{name}_dresses.json").read_text()
        ours_text = (dataset / "meta" / "json" / f"{name}_dresses.json").read_text()
        real, ours = json.loads(real_text)[0], json.loads(ours_text)[0]
        assert list(ours) == list(real)
        if "bbox" in real:
            assert list(ours["bbox"]) == list(real["bbox"])
        # Same separators and spacing: the first entry prints exactly as json.dumps prints it.
        assert real_text.startswith("[" + json.dumps(real)) and ours_text.startswith("[" + json.dumps(ours))
    real_line = (REAL / "photos.txt").read_text().splitlines()[0]
    ours_line = (dataset / "photos.txt").read_text().splitlines()[0]
    assert re.fullmatch(r"\d{9},http://\S+", real_line) and re.fullmatch(r"\d{9},http://\S+", ours_line)


def test_it_puts_every_box_inside_its_street_photo(dataset: Path) -> None:
    for entry in pairs(dataset):
        with Image.open(dataset / "photos" / f"{entry['photo']:09d}.jpg") as image:
            width, height = image.size
        box = entry["bbox"]
        assert box["width"] > 0 and box["height"] > 0
        assert box["left"] >= 0 and box["top"] >= 0
        assert box["left"] + box["width"] <= width and box["top"] + box["height"] <= height


def test_it_keeps_train_and_test_products_disjoint(dataset: Path) -> None:
    train = {e["product"] for e in load(dataset, "train_pairs")}
    test = {e["product"] for e in load(dataset, "test_pairs")}
    assert train and test and not train & test


def test_it_gives_every_product_a_shop_photo_and_two_street_photos(dataset: Path) -> None:
    products = {e["product"] for e in load(dataset, "demo_products")}
    assert len(products) == N_PRODUCTS
    assert {e["product"] for e in load(dataset, "retrieval")} == products
    street = Counter(e["product"] for e in pairs(dataset))
    assert set(street) == products and min(street.values()) >= 2
    shop_ids = {e["photo"] for e in load(dataset, "retrieval")}
    assert not shop_ids & {e["photo"] for e in pairs(dataset)}


def test_it_shows_two_dresses_in_a_few_street_photos(dataset: Path) -> None:
    products_by_photo: dict[int, set[int]] = defaultdict(set)
    for entry in pairs(dataset):
        products_by_photo[entry["photo"]].add(entry["product"])
    assert any(len(products) == 2 for products in products_by_photo.values())


def test_it_builds_families_of_distractors(dataset: Path) -> None:
    looks = [e["attributes"] for e in load(dataset, "demo_products")]
    cut = ("silhouette", "length", "neckline", "sleeves")

    def differ_only_in(a: dict, b: dict, keys: set[str]) -> bool:
        return all(a[k] == b[k] for k in cut) and {k for k in a if a[k] != b[k]} - {"accent_colour"} == keys

    assert any(differ_only_in(a, b, {"colour"}) for a in looks for b in looks)
    assert any(differ_only_in(a, b, {"pattern"}) for a in looks for b in looks)
    assert len({tuple(sorted(a.items())) for a in looks}) == len(looks)


def test_it_titles_and_prices_products_like_a_shop(dataset: Path) -> None:
    products = load(dataset, "demo_products")
    ids = [p["product"] for p in products]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert max(ids) - min(ids) >= len(ids)  # sampled, not 1..N
    for p in products:
        assert re.fullmatch(r"\d+\.\d{2}", p["price"])
        assert p["title"].endswith("dress") or " with " in p["title"]
        assert p["attributes"]["colour"].split()[0] in p["title"].lower()


def test_it_is_byte_identical_for_the_same_seed(dataset: Path, tmp_path: Path) -> None:
    generate_dataset(tmp_path / "again", n_products=N_PRODUCTS, seed=SEED, street_per_product=2)
    assert digest(tmp_path / "again") == digest(dataset)


def test_it_draws_something_else_for_another_seed(dataset: Path, tmp_path: Path) -> None:
    generate_dataset(tmp_path / "other", n_products=N_PRODUCTS, seed=SEED + 1, street_per_product=2)
    ours, theirs = digest(dataset), digest(tmp_path / "other")
    assert set(ours.values()).isdisjoint(theirs.values())


def test_it_writes_the_same_files_with_several_workers(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "one", n_products=3, seed=1, street_per_product=2, workers=1)
    generate_dataset(tmp_path / "two", n_products=3, seed=1, street_per_product=2, workers=2)
    assert digest(tmp_path / "one") == digest(tmp_path / "two")


def test_it_draws_a_solid_dress_in_its_colour() -> None:
    dress = Dress("a-line", "knee", "round", "short", "emerald", "solid", "emerald", motif_seed=1)
    image = shop_photo(dress, np.random.default_rng(0))
    assert image.size == SHOP_SIZE
    centre = np.asarray(image, dtype=float)[150:180, 118:138].mean(axis=(0, 1))
    assert np.abs(centre - COLOURS["emerald"]).max() < 30


def test_it_boxes_the_dress_in_a_street_photo() -> None:
    dress = Dress("sheath", "midi", "v-neck", "long", "red", "solid", "red", motif_seed=1)
    image, (box,) = street_photo([dress], np.random.default_rng(3))
    pixels = np.asarray(image, dtype=float)
    inside = pixels[box.top : box.top + box.height, box.left : box.left + box.width]
    centre = inside[box.height // 3 : box.height // 2, box.width // 3 : 2 * box.width // 3]
    # Lighting changes, but red stays the strongest channel inside the box.
    assert (centre[..., 0] > centre[..., 1] + 30).mean() > 0.9


def test_it_never_gives_a_strapless_dress_sleeves() -> None:
    plan = plan_catalogue(seed=3, n_products=200, street_per_product=2)
    dresses = [p.garment for p in plan.products if isinstance(p.garment, Dress)]
    strapless = [d for d in dresses if d.neckline == "strapless"]
    assert strapless and all(d.sleeves == "sleeveless" for d in strapless)


def test_it_refuses_a_directory_that_holds_something_else(tmp_path: Path) -> None:
    (tmp_path / "thesis.txt").write_text("precious")
    with pytest.raises(DemoDatasetError):
        generate_dataset(tmp_path, n_products=2, street_per_product=2)
    assert [p.name for p in tmp_path.iterdir()] == ["thesis.txt"]


def test_it_rewrites_an_earlier_demo_dataset_without_stale_photos(tmp_path: Path) -> None:
    generate_dataset(tmp_path, n_products=4, seed=1, street_per_product=2)
    generate_dataset(tmp_path, n_products=2, seed=2, street_per_product=2)
    listed = {line.split(",", 1)[0] + ".jpg" for line in (tmp_path / "photos.txt").read_text().splitlines()}
    assert {p.name for p in (tmp_path / "photos").iterdir()} == listed


def test_it_runs_as_a_management_command(tmp_path: Path) -> None:
    out = io.StringIO()
    call_command(
        "make_demo_dataset",
        str(tmp_path / "cmd"),
        "--products",
        "3",
        "--street-per-product",
        "2",
        "--seed",
        "5",
        "--workers",
        "1",
        stdout=out,
    )
    assert "Wrote 3 products" in out.getvalue()
    assert len(load(tmp_path / "cmd", "demo_products")) == 3


def test_it_rejects_fewer_than_two_street_photos_per_product(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="street-per-product"):
        call_command("make_demo_dataset", str(tmp_path / "cmd"), "--street-per-product", "1")
