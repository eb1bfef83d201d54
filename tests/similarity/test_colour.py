"""A garment's colours from its shop photo, measured on the demo's rendered studio photos."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from shop.street2shop.demo.photos import shop_photo
from shop.street2shop.demo.plan import COLOURS, Dress, Garment, photo_rng, random_dress, random_skirt
from similarity.colour import (
    PALETTE,
    PALETTE_NAMES,
    GarmentColours,
    colour_mask,
    garment_colours,
    garment_weights,
    name_colour,
    names_from_mask,
    srgb_to_lab,
    work_sample,
)

DEMO_RGB = {**COLOURS, "white": (255, 255, 255)}  # the demo prints "white" as an accent only


def expected_name(demo_colour: str) -> str:
    return name_colour(DEMO_RGB[demo_colour])


def jpeg_copy(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def a_dress(seed: int, **look: str) -> Dress:
    return replace(random_dress(np.random.default_rng(seed)), **look)


def test_it_names_every_demo_colour_distinctly():
    # black→black, ivory→beige, navy→navy, red→red, burgundy→burgundy, emerald→green, olive→olive,
    # mustard→yellow, blush pink→pink, sky blue→light blue, lavender→purple, coral→orange, white→white.
    names = {demo: expected_name(demo) for demo in DEMO_RGB}
    assert names["ivory"] == "beige"
    assert names["white"] == "white"
    assert len(set(names.values())) == len(names), names


@pytest.mark.parametrize("make", [random_dress, random_skirt], ids=["dresses", "skirts"])
def test_it_finds_the_demo_garments_colours(make: Callable[[np.random.Generator], Garment]):
    rng = np.random.default_rng(2024)
    solid = {"photos": 0, "main": 0, "one name": 0}
    patterned = {"photos": 0, "colour or accent": 0, "both": 0}
    for photo in range(200):
        garment = make(rng)
        if photo % 2 == 0:
            # random_* draws one garment in seven solid: make half of them solid so both rates rest on ~100 photos.
            garment = replace(garment, pattern="solid", accent=garment.colour)
        found = garment_colours(shop_photo(garment, photo_rng(2024, photo)))
        colour, accent = expected_name(garment.colour), expected_name(garment.accent)
        if garment.pattern == "solid":
            solid["photos"] += 1
            solid["main"] += found.main == colour
            solid["one name"] += found.names == (colour,)
        else:
            patterned["photos"] += 1
            patterned["colour or accent"] += colour in found.names or accent in found.names
            patterned["both"] += colour in found.names and accent in found.names
    rates = {
        "solid main": solid["main"] / solid["photos"],
        "solid one name": solid["one name"] / solid["photos"],
        "patterned colour or accent": patterned["colour or accent"] / patterned["photos"],
        "patterned both": patterned["both"] / patterned["photos"],
    }
    print(make.__name__, solid, patterned, {k: round(v, 3) for k, v in rates.items()})
    assert rates["solid main"] >= 0.95
    assert rates["solid one name"] >= 0.9  # shading must not split one fabric into several names
    assert rates["patterned colour or accent"] >= 0.9


def test_it_finds_the_same_colours_in_a_large_jpeg_copy():
    rng = np.random.default_rng(7)
    for photo in range(12):
        image = shop_photo(random_dress(rng), photo_rng(7, photo))
        large = jpeg_copy(image.resize((800, 1000), Image.Resampling.BICUBIC), 80)
        assert garment_colours(large).main == garment_colours(image).main


@pytest.mark.parametrize("seed", range(5))
def test_it_keeps_white_dots_inside_a_navy_dress(seed: int):
    dress = a_dress(seed, colour="navy", pattern="polka-dots", accent="white")
    found = garment_colours(shop_photo(dress, photo_rng(5, seed)))
    print(dress.cut, found.names, found.shares)
    # The dots look like the background but are surrounded by fabric, so they are garment.
    assert found.main == "navy"
    assert "white" in found.names


def test_it_keeps_dots_of_the_background_colour_inside_a_garment():
    background = (240, 240, 238)
    image = Image.new("RGB", (240, 320), background)
    draw = ImageDraw.Draw(image)
    draw.polygon([(80, 40), (160, 40), (200, 290), (40, 290)], fill=(31, 46, 92))
    for y in range(60, 280, 24):
        for x in range(70, 180, 24):
            if image.getpixel((x - 7, y)) == image.getpixel((x + 7, y)) == (31, 46, 92):
                draw.ellipse((x - 6, y - 6, x + 6, y + 6), fill=background)
    found = garment_colours(image)
    print(found.names, found.shares)
    # The very colour of the background, but surrounded by fabric: garment, not background.
    assert found.names == ("navy", "white")
    assert 0.12 < found.shares[1] < 0.35


def test_it_leaves_out_the_hanger_and_the_drop_shadow():
    image = Image.new("RGB", (240, 320), (242, 242, 240))
    shadow = Image.new("L", image.size, 0)
    ImageDraw.Draw(shadow).rectangle((84, 74, 204, 312), fill=80)
    image.paste((90, 90, 95), (0, 0), shadow.filter(ImageFilter.GaussianBlur(4)))
    draw = ImageDraw.Draw(image)
    draw.line([(40, 60), (120, 20), (200, 60)], fill=(150, 150, 155), width=4)
    draw.rectangle((60, 50, 180, 288), fill=(31, 46, 92))
    garment = garment_weights(srgb_to_lab(work_sample(image))) > 0
    h, w = garment.shape
    ys, xs = np.nonzero(garment)
    # Within the dress's own box (in sample pixels, one of slack): no hanger above, no shadow beside or below.
    assert ys.min() >= 50 / 320 * h - 1 and ys.max() <= 288 / 320 * h + 1
    assert xs.min() >= 60 / 240 * w - 1 and xs.max() <= 180 / 240 * w + 1
    assert garment_colours(image).names == ("navy",)


@pytest.mark.parametrize("seed", range(5))
def test_it_finds_an_ivory_dress_on_a_light_background(seed: int):
    dress = a_dress(seed, colour="ivory", pattern="solid", accent="ivory")
    image = shop_photo(dress, photo_rng(6, seed))
    weights = garment_weights(srgb_to_lab(work_sample(image)))
    found = garment_colours(image)
    print(dress.cut, found.names, f"garment share {weights.mean():.2f}")
    assert set(np.unique(weights)) == {0.0, 1.0}  # a studio mask, not the centre fallback
    assert 0.1 < weights.mean() < 0.7
    assert found.names == ("beige",)


def test_it_falls_back_to_the_centre_on_a_busy_background():
    noise = np.random.default_rng(0).integers(0, 256, size=(300, 240, 3), dtype=np.uint8)
    noise[90:210, 70:170] = (31, 46, 92)
    found = garment_colours(Image.fromarray(noise))
    assert found.main == "navy"


def test_it_falls_back_to_the_centre_when_nothing_stands_out():
    found = garment_colours(Image.new("RGB", (400, 500), (128, 128, 128)))
    assert found.names == ("grey",)
    assert found.shares == (1.0,)


def test_it_makes_a_unit_descriptor_that_tells_copies_from_other_garments():
    rng = np.random.default_rng(11)
    # At a shop photo's size: a quality-70 JPEG of the demo's 256×320 photos blurs small dots into new colours.
    photos = [shop_photo(random_dress(rng), photo_rng(11, i)).resize((800, 1000)) for i in range(16)]
    looks = [garment_colours(p) for p in photos]
    for look in looks:
        assert look.descriptor.dtype == np.float32
        assert look.descriptor.shape == (len(PALETTE_NAMES),)
        assert (look.descriptor >= 0).all()
        assert np.linalg.norm(look.descriptor) == pytest.approx(1.0, abs=1e-6)
        assert sum(look.shares) <= 1.0 + 1e-9
    same = [np.linalg.norm(garment_colours(p).descriptor - look.descriptor) for p, look in zip(photos, looks)]
    copies = [
        np.linalg.norm(garment_colours(jpeg_copy(p, 70)).descriptor - look.descriptor) for p, look in zip(photos, looks)
    ]
    others = [np.linalg.norm(a.descriptor - b.descriptor) for i, a in enumerate(looks) for b in looks[i + 1 :]]
    print(f"JPEG copies: mean {np.mean(copies):.3f}, max {max(copies):.3f}; other dresses: mean {np.mean(others):.3f}")
    assert max(same) == 0.0
    # Measured 0.015 and 0.079; each speck named on its own would make them about 0.05 and 0.25.
    assert np.mean(copies) < 0.04
    assert max(copies) < 0.2
    assert np.mean(others) > 0.8


def test_it_round_trips_json():
    look = garment_colours(shop_photo(a_dress(3, pattern="vertical-stripes"), photo_rng(3, 0)))
    again = GarmentColours.from_json(look.to_json())
    assert (again.names, again.shares) == (look.names, look.shares)
    assert np.array_equal(again.descriptor, look.descriptor)
    assert again.main == look.names[0]


def test_it_rejects_json_that_is_not_a_colour_look():
    with pytest.raises(ValueError, match="descriptor"):
        GarmentColours.from_json({"names": ["navy"], "shares": [1.0], "descriptor": [1.0]})
    with pytest.raises(ValueError, match="palette"):
        GarmentColours.from_json({"names": ["teal"], "shares": [1.0], "descriptor": [0.25] * 16})


def test_it_pins_the_palette_order():
    # The database stores colours as a bit mask in this order: changing it silently relabels every product.
    assert PALETTE_NAMES == (
        "black", "white", "grey", "beige", "brown", "navy", "blue", "light blue",
        "green", "olive", "yellow", "orange", "red", "burgundy", "pink", "purple",
    )  # fmt: skip
    assert tuple(PALETTE) == PALETTE_NAMES


def test_it_round_trips_colour_masks():
    assert colour_mask([]) == 0
    assert colour_mask(["black"]) == 1
    assert colour_mask(["purple", "navy", "navy"]) == 1 << 15 | 1 << 5
    assert names_from_mask(colour_mask(["purple", "black", "light blue"])) == ("black", "light blue", "purple")
    assert names_from_mask(2**16 - 1) == PALETTE_NAMES
    with pytest.raises(ValueError):
        colour_mask(["teal"])
    with pytest.raises(ValueError):
        names_from_mask(1 << 16)


def test_it_rejects_an_empty_image():
    with pytest.raises(ValueError, match="empty"):
        garment_colours(Image.new("RGB", (0, 10)))


@pytest.mark.parametrize(
    ("mode", "rgb", "name"),
    [
        ("L", (150, 150, 150), "grey"),
        ("P", (188, 32, 45), "red"),
        ("RGBA", (31, 46, 92), "navy"),
        ("CMYK", (22, 122, 82), "green"),
    ],
)
def test_it_reads_any_image_mode(mode: str, rgb: tuple[int, int, int], name: str):
    assert garment_colours(Image.new("RGB", (60, 80), rgb).convert(mode)).main == name
