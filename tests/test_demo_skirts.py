"""The demo dataset's skirts, its two categories in one folder and its relisted duplicates."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from PIL import Image

from shop.services.street2shop_dataset import open_dataset
from shop.street2shop.demo.dataset import README_MARKER, generate_dataset
from shop.street2shop.demo.draw import colour_rgb, figure_extent, garment_shape, new_canvas, paint_figure, random_person
from shop.street2shop.demo.geometry import WAIST_Y
from shop.street2shop.demo.photos import shop_photo, street_photo
from shop.street2shop.demo.plan import COLOURS, LENGTHS, DemoDatasetError, Dress, Skirt, product_title
from shop.street2shop.demo.skirt import random_top

# sha256 of a dresses-only set (12 products, seed 3, 2 street photos each) as generated before skirts and
# duplicates existed: adding them must not change a byte of it. Pinned Pillow/libjpeg (pyproject) make JPEGs stable.
BASELINE_FILES = {
    "README.txt": "6116675893d0a3085b7e091182c7d664a104f4988e0d60bfa4b0f0593aea4096",
    "photos.txt": "ffc23238a4f504f62d621c527b2fb3506547eafd7ee8e63a210b8d108d8c893a",
    "meta/json/retrieval_dresses.json": "80a3b657f418868ff96b63ae73fa236dd344ee11028c3f5ec34a4d85ad2521cf",
    "meta/json/train_pairs_dresses.json": "63ad4331057df615a06284d9aa0bbffe893e2522cea4b89862771e44dc44393a",
    "meta/json/test_pairs_dresses.json": "cb4c9cc967f66975e2a48bf727960a4989b4572bdd20950b6f6d2b9df5800a0c",
    # Before the "garment" attribute: the file now equals it once that key is taken out again.
    "meta/json/demo_products_dresses.json": "157736c7365648ebad9bc1f61bbfccaaed0046e299097818e8fc325c5315b155",
}
# Over "<name> <sha256>\n" of the 44 photos, sorted by name.
BASELINE_PHOTOS = "f6659d4442d55c34dbc44a6c165d0d5fd0436bdd5362fee4c75415d181a4fecd"

SEED = 5
N_DRESSES, N_SKIRTS = 8, 10
DUPLICATES = 0.3
# Mean absolute difference (0-255) between a copy's photo and its original's, both resized to 64×64. Measured
# over 97 copies of 120 products: median 10, max 40; a 6 % crop shifts a check or stripe print by half a period.
MAX_COPY_DIFFERENCE = 48
CATEGORY_FILES = ("retrieval", "train_pairs", "test_pairs", "demo_products")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def photos_digest(out: Path) -> str:
    lines = "".join(f"{p.name} {sha256(p.read_bytes())}\n" for p in sorted((out / "photos").iterdir()))
    return sha256(lines.encode())


def digest(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): sha256(p.read_bytes()) for p in sorted(out.rglob("*")) if p.is_file()}


def load(out: Path, name: str, category: str) -> list[dict]:
    return json.loads((out / "meta" / "json" / f"{name}_{category}.json").read_text())


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return pixels_of(image)


def pixels_of(image: Image.Image, size: int = 64) -> np.ndarray:
    return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=float)


def generate(out: Path, **options: object) -> Path:
    settings = {"n_products": N_DRESSES, "n_skirts": N_SKIRTS, "seed": SEED, "street_per_product": 2}
    generate_dataset(out, **(settings | options))
    return out


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dresses, skirts and relisted copies of both."""
    return generate(tmp_path_factory.mktemp("demo") / "mixed", duplicates=DUPLICATES)


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same set without copies."""
    return generate(tmp_path_factory.mktemp("demo") / "originals")


def test_it_writes_todays_dresses_byte_for_byte(tmp_path: Path) -> None:
    out = tmp_path / "set"
    generate_dataset(out, n_products=12, n_skirts=0, seed=3, street_per_product=2, duplicates=0.0)
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.parent.name != "photos"}
    assert files == set(BASELINE_FILES)
    products = load(out, "demo_products", "dresses")
    assert all(p["attributes"].pop("garment") == "dress" for p in products)
    for name, expected in BASELINE_FILES.items():
        data = (
            json.dumps(products, ensure_ascii=False).encode() if "demo_products" in name else (out / name).read_bytes()
        )
        assert sha256(data) == expected, name
    assert photos_digest(out) == BASELINE_PHOTOS


def test_it_writes_both_categories_into_one_folder(mixed: Path) -> None:
    names = {str(p.relative_to(mixed)) for p in mixed.rglob("*") if p.is_file() and p.parent.name != "photos"}
    per_category = {f"meta/json/{n}_{c}.json" for n in CATEGORY_FILES for c in ("dresses", "skirts")}
    assert names == {"README.txt", "photos.txt"} | per_category
    readme = (mixed / "README.txt").read_text()
    assert readme.startswith(README_MARKER) and "--skirts 10" in readme and "--duplicates 0.3" in readme
    assert all(name in readme for name in per_category)
    photo_ids = {
        category: {e["photo"] for n in ("retrieval", "train_pairs", "test_pairs") for e in load(mixed, n, category)}
        for category in ("dresses", "skirts")
    }
    assert not photo_ids["dresses"] & photo_ids["skirts"]
    listed = {line.split(",", 1)[0] + ".jpg" for line in (mixed / "photos.txt").read_text().splitlines()}
    assert listed == {p.name for p in (mixed / "photos").iterdir()}
    assert listed == {f"{i:09d}.jpg" for i in photo_ids["dresses"] | photo_ids["skirts"]}


def test_it_loads_skirts_with_the_shops_own_loaders(mixed: Path) -> None:
    dataset = open_dataset(root=mixed, category="skirts")
    originals, copies, _photos = relistings(mixed, "skirts")
    assert set(dataset.demo) == set(originals) | set(copies) and len(originals) == N_SKIRTS
    assert set(dataset.retrieval) == set(dataset.demo)
    assert set(dataset.boxes) == set(originals)
    assert all(p.title.endswith(" skirt") for p in dataset.demo.values())
    assert {p.attributes["garment"] for p in dataset.demo.values()} == {"skirt"}
    assert set(dataset.candidates()) == set(dataset.demo)
    splits = {pair.split for pairs in dataset.boxes.values() for pair in pairs}
    assert splits == {"train", "test"}


def test_it_puts_every_skirt_box_inside_its_photo(mixed: Path) -> None:
    dataset = open_dataset(root=mixed, category="skirts")
    for pairs in dataset.boxes.values():
        for pair in pairs:
            with Image.open(dataset.photos_dir / f"{pair.photo_id:09d}.jpg") as image:
                width, height = image.size
            assert pair.width > 0 and pair.height > 0
            assert pair.left >= 0 and pair.top >= 0
            assert pair.left + pair.width <= width and pair.top + pair.height <= height


def test_it_describes_every_product_by_its_attributes(mixed: Path) -> None:
    common = {"silhouette", "length", "colour", "pattern", "accent_colour", "garment"}
    for category, garment, extra in (("dresses", "dress", {"neckline", "sleeves"}), ("skirts", "skirt", set())):
        for entry in load(mixed, "demo_products", category):
            assert set(entry["attributes"]) == common | extra
            assert entry["attributes"]["garment"] == garment
            assert entry["attributes"]["length"] in LENGTHS


def test_it_titles_skirts_like_a_shop() -> None:
    assert product_title(Skirt("pleated", "midi", "navy", "solid", "navy", motif_seed=1)) == "Navy pleated midi skirt"
    polka = Skirt("a-line", "mini", "red", "polka-dots", "white", motif_seed=1)
    assert product_title(polka) == "Red and white polka-dot A-line mini skirt"


def garment_pixels(image: Image.Image, colour: str) -> np.ndarray:
    """Where the image is (about) the colour."""
    return np.abs(np.asarray(image, dtype=float) - COLOURS[colour]).max(axis=2) < 40


def garment_rows(image: Image.Image, colour: str) -> np.ndarray:
    """How many pixels of each row are (about) the colour."""
    return garment_pixels(image, colour).sum(axis=1)


def test_it_draws_an_a_line_skirt_wider_at_the_hem_than_at_the_waist() -> None:
    skirt = Skirt("a-line", "midi", "navy", "solid", "navy", motif_seed=1)
    widths = garment_rows(shop_photo(skirt, np.random.default_rng(0)), "navy")
    rows = np.flatnonzero(widths > 5)
    top, bottom = rows[: len(rows) // 8], rows[-len(rows) // 8 :]
    assert widths[bottom].mean() > 1.4 * widths[top].mean()


def test_it_does_not_draw_a_skirt_as_a_dress() -> None:
    skirt = Skirt("a-line", "midi", "navy", "solid", "navy", motif_seed=1)
    dress = Dress("a-line", "midi", "round", "short", "navy", "solid", "navy", motif_seed=1)
    shape = garment_shape(skirt)
    assert shape.sleeves == [] and shape.extent()[1] > WAIST_Y - 0.1  # no bodice, no sleeves
    skirt_photo, dress_photo = (shop_photo(g, np.random.default_rng(0)) for g in (skirt, dress))

    def aspect(image: Image.Image) -> float:
        rows, columns = np.nonzero(garment_pixels(image, "navy"))
        return (rows.max() - rows.min()) / (columns.max() - columns.min())

    # The same colour, cut and hem; both fill the frame, but the skirt is as tall as wide, the dress far taller.
    assert aspect(skirt_photo) < 0.75 * aspect(dress_photo)
    assert np.abs(pixels_of(skirt_photo) - pixels_of(dress_photo)).mean() > 20


def test_it_marks_only_the_skirt_of_a_figure_wearing_a_top() -> None:
    rng = np.random.default_rng(2)
    skirt = Skirt("pleated", "knee", "emerald", "checks", "white", motif_seed=4)
    top = random_top(rng, skirt)
    canvas = new_canvas(figure_extent(skirt), u=80)
    paint_figure(canvas, skirt, random_person(rng), top)
    _left, upper, _right, lower = canvas.garment_mask.getbbox() or (0, 0, 0, 0)
    origin_x, origin_y = canvas.origin
    # The box a street photo gets runs from the waistband to the hem: the top above it is not the product.
    assert upper >= origin_y + (WAIST_Y - 0.1) * canvas.u
    assert lower <= origin_y + (LENGTHS["knee"] + 0.2) * canvas.u
    chest = np.asarray(canvas.image, dtype=float)[round(origin_y + 0.7 * canvas.u), round(origin_x)]
    assert top.colour not in (skirt.colour, skirt.accent)
    assert np.abs(chest[:3] - colour_rgb(top.colour)).max() < 30


def test_it_boxes_the_skirt_in_a_street_photo() -> None:
    skirt = Skirt("pencil", "midi", "red", "solid", "red", motif_seed=1)
    image, (box,) = street_photo([skirt], np.random.default_rng(3))
    inside = np.asarray(image, dtype=float)[box.top : box.top + box.height, box.left : box.left + box.width]
    centre = inside[box.height // 4 : 3 * box.height // 4, box.width // 3 : 2 * box.width // 3]
    assert (centre[..., 0] > centre[..., 1] + 30).mean() > 0.9


def relistings(out: Path, category: str) -> tuple[dict[int, dict], dict[int, dict], dict[int, list[int]]]:
    """(originals, copies) by product id, and every product's shop photos."""
    products = {p["product"]: p for p in load(out, "demo_products", category)}
    copies = {pid: p for pid, p in products.items() if "duplicate_of" in p}
    photos: dict[int, list[int]] = {}
    for entry in load(out, "retrieval", category):
        photos.setdefault(entry["product"], []).append(entry["photo"])
    return {pid: p for pid, p in products.items() if pid not in copies}, copies, photos


@pytest.mark.parametrize(("category", "n"), [("dresses", N_DRESSES), ("skirts", N_SKIRTS)])
def test_it_relists_a_share_of_each_category(mixed: Path, category: str, n: int) -> None:
    originals, copies, photos = relistings(mixed, category)
    assert len(originals) == n
    relisted = Counter(p["duplicate_of"] for p in copies.values())
    assert len(relisted) == round(DUPLICATES * n) and max(relisted.values()) == 2
    for pid, copy in copies.items():
        original = originals[copy["duplicate_of"]]
        assert [copy[k] for k in ("title", "attributes", "family")] == [
            original[k] for k in ("title", "attributes", "family")
        ]
        assert len(photos[pid]) == len(photos[original["product"]])
    street = {e["product"] for split in ("train_pairs", "test_pairs") for e in load(mixed, split, category)}
    assert street == set(originals)


@pytest.mark.parametrize("category", ["dresses", "skirts"])
def test_it_saves_copies_as_close_but_different_files(mixed: Path, category: str) -> None:
    originals, copies, photos = relistings(mixed, category)
    own, others = [], []
    for pid, copy in copies.items():
        sources = [mixed / "photos" / f"{i:09d}.jpg" for i in photos[copy["duplicate_of"]]]
        for photo in photos[pid]:
            path = mixed / "photos" / f"{photo:09d}.jpg"
            assert all(path.read_bytes() != source.read_bytes() for source in sources)
            copied = pixels(path)  # decodes
            own.append(min(np.abs(copied - pixels(source)).mean() for source in sources))
            other = next(o for o in originals if o != copy["duplicate_of"])
            others.append(np.abs(copied - pixels(mixed / "photos" / f"{photos[other][0]:09d}.jpg")).mean())
    assert max(own) < MAX_COPY_DIFFERENCE
    assert np.mean(own) < 0.6 * np.mean(others)


def test_it_keeps_the_originals_when_adding_copies(mixed: Path, originals: Path) -> None:
    for path in (originals / "photos").iterdir():
        assert (mixed / "photos" / path.name).read_bytes() == path.read_bytes()
    for category in ("dresses", "skirts"):
        for name in ("train_pairs", "test_pairs"):
            assert load(mixed, name, category) == load(originals, name, category)
        _plain, copies, _photos = relistings(mixed, category)
        for name in ("retrieval", "demo_products"):
            kept = [e for e in load(mixed, name, category) if e["product"] not in copies]
            assert kept == load(originals, name, category)


def test_it_keeps_the_dresses_when_adding_skirts(originals: Path, tmp_path: Path) -> None:
    dresses = generate(tmp_path / "dresses", n_skirts=0)
    for name in CATEGORY_FILES:
        assert load(originals, name, "dresses") == load(dresses, name, "dresses")
    for path in (dresses / "photos").iterdir():
        assert (originals / "photos" / path.name).read_bytes() == path.read_bytes()


def test_it_is_byte_identical_for_the_same_seed_and_any_workers(mixed: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", duplicates=DUPLICATES, workers=2)
    assert digest(again) == digest(mixed)


def test_it_drops_the_files_of_a_category_no_longer_written(tmp_path: Path) -> None:
    generate(tmp_path, n_products=2, n_skirts=2)
    generate(tmp_path, n_products=2, n_skirts=0)
    assert not list((tmp_path / "meta" / "json").glob("*_skirts.json"))


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_it_refuses_a_duplicates_share_outside_zero_to_one(tmp_path: Path, fraction: float) -> None:
    with pytest.raises(DemoDatasetError, match="duplicates"):
        generate(tmp_path, duplicates=fraction)


def test_it_runs_the_command_with_skirts_and_duplicates(tmp_path: Path) -> None:
    out = io.StringIO()
    args = ["--products", "3", "--skirts", "4", "--duplicates", "0.5", "--street-per-product", "2", "--workers", "1"]
    call_command("make_demo_dataset", str(tmp_path / "cmd"), *args, stdout=out)
    assert "Wrote 7 products (3 dresses, 4 skirts" in out.getvalue() and "relisted copies" in out.getvalue()
    assert len(load(tmp_path / "cmd", "demo_products", "skirts")) > 4
