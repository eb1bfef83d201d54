"""Painting garments, alone or worn by a simple figure, on a transparent canvas (Pillow and numpy).

Outlines come from ``geometry`` (dresses) and ``skirt``; a floral print's flowers come from the garment's
own ``motif_seed``, so every photo of a product shows them alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from shop.street2shop.demo.geometry import (
    ANKLE_Y,
    HEAD_CENTRE,
    HIP_Y,
    SOLE_Y,
    WAIST_Y,
    WRIST,
    Point,
    Shape,
    arm_polygon,
    dress_shape,
    half_width_at,
)
from shop.street2shop.demo.plan import COLOURS, RGB, Garment, Skirt
from shop.street2shop.demo.skirt import Top, skirt_shape, top_shape

WHITE: RGB = (246, 245, 240)

SKIN_TONES: tuple[RGB, ...] = ((241, 204, 176), (224, 172, 138), (198, 140, 100), (160, 104, 70), (112, 72, 50))
HAIR_COLOURS: tuple[RGB, ...] = ((30, 24, 20), (70, 45, 28), (120, 80, 40), (200, 160, 90), (150, 60, 35))


class Fabric(Protocol):
    """What printing needs of a garment: a dress, a skirt or a plain top."""

    @property
    def colour(self) -> str: ...
    @property
    def pattern(self) -> str: ...
    @property
    def accent(self) -> str: ...
    @property
    def motif_seed(self) -> int: ...


def garment_shape(garment: Garment) -> Shape:
    return skirt_shape(garment) if isinstance(garment, Skirt) else dress_shape(garment)


@dataclass
class Canvas:
    """A transparent figure layer with its body-unit scale and where the body origin sits."""

    image: Image.Image  # RGBA
    garment_mask: Image.Image  # L, 255 where the product's garment is (not a top worn with it)
    u: float
    origin: Point

    def px(self, points: Sequence[Point]) -> list[Point]:
        ox, oy = self.origin
        return [(ox + x * self.u, oy + y * self.u) for x, y in points]


def colour_rgb(name: str) -> RGB:
    return WHITE if name == "white" else COLOURS[name]


def pattern_pixels(fabric: Fabric, shape: Shape, size: tuple[int, int], u: float, origin: Point) -> np.ndarray:
    """The printed fabric over the whole canvas (float RGB), laid out in body units so it scales."""
    w, h = size
    xs = (np.arange(w, dtype=np.float32) - origin[0]) / u
    ys = (np.arange(h, dtype=np.float32) - origin[1]) / u
    x, y = np.meshgrid(xs, ys)
    base = np.array(colour_rgb(fabric.colour), dtype=np.float32)
    accent = np.array(colour_rgb(fabric.accent), dtype=np.float32)
    weight = np.zeros((h, w), dtype=np.float32)  # 0 = base colour, 1 = accent
    if fabric.pattern == "horizontal-stripes":
        weight = ((y / 0.2) % 1 < 0.45).astype(np.float32)
    elif fabric.pattern == "vertical-stripes":
        weight = (((x + 0.05) / 0.16) % 1 < 0.3).astype(np.float32)
    elif fabric.pattern == "checks":
        a = ((x / 0.2) % 1 < 0.5).astype(np.float32)
        b = ((y / 0.2) % 1 < 0.5).astype(np.float32)
        weight = (a + b) / 2
    elif fabric.pattern == "polka-dots":
        period = 0.22
        row = np.floor(y / period)
        dx = (x / period + 0.5 * (row % 2)) % 1 - 0.5
        dy = (y / period) % 1 - 0.5
        weight = (dx * dx + dy * dy < 0.27**2).astype(np.float32)
    elif fabric.pattern == "colour-block":
        # Below the seam in the accent colour (a dress's skirt, a skirt's lower tier); sleeves stay plain.
        inside = np.abs(x) <= half_width_at(shape.profile, y) + 0.02
        weight = ((y > (shape.seam_y or WAIST_Y)) & inside).astype(np.float32)
    pixels = base + weight[..., None] * (accent - base)
    if fabric.pattern == "floral":
        pixels = _paint_flowers(fabric, pixels, u, origin)
    return pixels


def _paint_flowers(fabric: Fabric, pixels: np.ndarray, u: float, origin: Point) -> np.ndarray:
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    rng = np.random.default_rng(fabric.motif_seed)
    petal = colour_rgb(fabric.accent)
    centre = (250, 226, 120) if fabric.accent != "mustard" else WHITE
    leaf = (60, 110, 60)
    for _ in range(260):
        # Flowers live in body units, so every photo of the product has them in the same places.
        fx, fy = rng.uniform(-1.6, 1.6), rng.uniform(-0.2, 3.9)
        r = rng.uniform(0.05, 0.085)
        turn = rng.uniform(0, math.tau)
        cx, cy = origin[0] + fx * u, origin[1] + fy * u
        rp = max(r * u * 0.55, 0.8)
        lx, ly = cx + math.cos(turn + 0.6) * r * u * 1.5, cy + math.sin(turn + 0.6) * r * u * 1.5
        draw.ellipse((lx - rp * 0.8, ly - rp * 0.5, lx + rp * 0.8, ly + rp * 0.5), fill=leaf)
        for k in range(5):
            a = turn + k * math.tau / 5
            px, py = cx + math.cos(a) * r * u * 0.6, cy + math.sin(a) * r * u * 0.6
            draw.ellipse((px - rp, py - rp, px + rp, py + rp), fill=petal)
        rc = rp * 0.6
        draw.ellipse((cx - rc, cy - rc, cx + rc, cy + rc), fill=centre)
    return np.asarray(image, dtype=np.float32)


def shading(shape: Shape, size: tuple[int, int], u: float, origin: Point) -> np.ndarray:
    """Fabric falls away at the sides and folds below ``shape.folds_y``; a flared cut folds more."""
    w, h = size
    x = (np.arange(w, dtype=np.float32) - origin[0]) / u
    y = (np.arange(h, dtype=np.float32) - origin[1]) / u
    half = half_width_at(shape.profile, y)[:, None]
    t = np.clip(np.abs(x[None, :]) / half, 0, 1.3)
    shade = 1.06 - 0.3 * t**2
    below = np.clip((y - shape.folds_y) / 0.8, 0, 1)[:, None]
    waves = np.sin(x[None, :] / (half * shape.fold_width + 0.05) * math.pi + 0.3)
    shade = shade - 0.09 * shape.flare * below * (waves + 1) / 2
    return np.clip(shade, 0.55, 1.1)


@dataclass
class GarmentLayer:
    """The shaded fabric over a garment's box on a canvas, with its body and sleeve masks."""

    image: Image.Image  # RGB
    body: Image.Image  # L
    sleeves: Image.Image  # L
    offset: tuple[int, int]


def garment_layer(canvas: Canvas, fabric: Fabric, shape: Shape) -> GarmentLayer:
    body = Image.new("L", canvas.image.size, 0)
    sleeves = Image.new("L", canvas.image.size, 0)
    ImageDraw.Draw(body).polygon(canvas.px(shape.body), fill=255)
    for polygon in shape.sleeves:
        ImageDraw.Draw(sleeves).polygon(canvas.px(polygon), fill=255)
    # Print and shade only the garment's box: the rest of a figure canvas is head, legs and air.
    box = ImageChops.lighter(body, sleeves).getbbox() or (0, 0, 1, 1)
    body, sleeves = body.crop(box), sleeves.crop(box)
    local = Canvas(canvas.image, canvas.garment_mask, canvas.u, (canvas.origin[0] - box[0], canvas.origin[1] - box[1]))
    fabric_pixels = pattern_pixels(fabric, shape, body.size, local.u, local.origin)
    shade = shading(shape, body.size, local.u, local.origin)
    sleeve_area = np.asarray(sleeves, dtype=np.float32)[..., None] / 255
    shade = shade[..., None] * (1 - sleeve_area) + 0.86 * sleeve_area
    image = Image.fromarray(np.clip(fabric_pixels * shade, 0, 255).astype(np.uint8))
    _draw_details(image, local, fabric, shape)
    return GarmentLayer(image=image, body=body, sleeves=sleeves, offset=(box[0], box[1]))


def paint_layer(canvas: Canvas, layer: GarmentLayer, *, sleeves_only: bool = False, worn: bool = True) -> None:
    """Paint a garment onto the canvas; with ``sleeves_only`` just its sleeves (over the arms).

    ``worn`` marks it in the garment mask: the product's garment, not a top worn with a skirt.
    """
    mask = layer.sleeves if sleeves_only else ImageChops.lighter(layer.body, layer.sleeves)
    canvas.image.paste(layer.image, layer.offset, mask)
    if worn:
        canvas.garment_mask.paste(255, layer.offset, mask)


def _draw_details(image: Image.Image, canvas: Canvas, fabric: Fabric, shape: Shape) -> None:
    """Outline and seams in a darker shade, so light garments stand off a light background."""
    draw = ImageDraw.Draw(image)
    dark = tuple(int(c * 0.55) for c in colour_rgb(fabric.colour))
    width = max(1, round(canvas.u / 45))
    draw.line(canvas.px(shape.body + shape.body[:1]), fill=dark, width=width)
    for polygon in shape.sleeves:
        # Only the sleeve's own edges: its closing edges lie inside the bodice.
        draw.line(canvas.px(polygon[1:-1]), fill=dark, width=width)
    if shape.seam_y is not None:
        half = float(half_width_at(shape.profile, np.array([shape.seam_y]))[0])
        draw.line(canvas.px([(-half, shape.seam_y), (half, shape.seam_y)]), fill=dark, width=width)
    for line in shape.lines:
        draw.line(canvas.px(line), fill=dark, width=width)


@dataclass(frozen=True)
class Person:
    skin: RGB
    hair: RGB
    long_hair: bool
    legs: RGB  # bare skin or tights
    shoes: RGB
    bag: RGB | None


def random_rgb(rng: np.random.Generator, low: int, high: int) -> RGB:
    r, g, b = (int(v) for v in rng.integers(low, high, size=3))
    return (r, g, b)


def random_person(rng: np.random.Generator) -> Person:
    skin = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
    tights = rng.random() < 0.25
    return Person(
        skin=skin,
        hair=HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))],
        long_hair=bool(rng.random() < 0.6),
        legs=(40, 36, 40) if tights else skin,
        shoes=random_rgb(rng, 10, 160),
        bag=random_rgb(rng, 20, 200) if rng.random() < 0.3 else None,
    )


def paint_figure(canvas: Canvas, garment: Garment, person: Person, top: Top | None = None) -> None:
    """A simple person wearing the garment (a skirt with ``top``): hair, legs, clothes, arms, sleeves, head."""
    draw = ImageDraw.Draw(canvas.image)
    _paint_body(canvas, draw, person)
    layers = [(garment_layer(canvas, garment, garment_shape(garment)), True)]
    if top is not None:
        # Under the skirt, which covers its hem.
        layers.insert(0, (garment_layer(canvas, top, top_shape(top)), False))
    for layer, worn in layers:
        paint_layer(canvas, layer, worn=worn)
    for side in (-1, 1):
        arm = arm_polygon(2.0, 0.085)
        draw.polygon(canvas.px([(side * x, y) for x, y in arm]), fill=person.skin)
        (hx_, hy_) = canvas.px([(side * (WRIST[0] + 0.01), WRIST[1] + 0.1)])[0]
        r = 0.1 * canvas.u
        draw.ellipse((hx_ - r * 0.8, hy_ - r, hx_ + r * 0.8, hy_ + r), fill=person.skin)
    for layer, worn in layers:
        paint_layer(canvas, layer, sleeves_only=True, worn=worn)
    _paint_head(canvas, draw, person)


def _paint_body(canvas: Canvas, draw: ImageDraw.ImageDraw, person: Person) -> None:
    """What the clothes cover or frame: long hair behind, legs and shoes, neck and shoulders."""
    if person.long_hair:
        draw.polygon(canvas.px([(-0.3, -0.75), (0.3, -0.75), (0.36, 0.35), (-0.36, 0.35)]), fill=person.hair)
    for side in (-1, 1):
        leg = [(0.08, HIP_Y), (0.42, HIP_Y), (0.27, ANKLE_Y), (0.13, ANKLE_Y)]
        draw.polygon(canvas.px([(side * x, y) for x, y in leg]), fill=person.legs)
        foot = [(0.1, ANKLE_Y - 0.04), (0.3, ANKLE_Y - 0.04), (0.34, SOLE_Y), (0.06, SOLE_Y)]
        draw.polygon(canvas.px([(side * x, y) for x, y in foot]), fill=person.shoes)
    draw.polygon(canvas.px([(-0.12, -0.4), (0.12, -0.4), (0.14, 0.12), (-0.14, 0.12)]), fill=person.skin)
    draw.polygon(canvas.px([(-0.42, 0.06), (0.42, 0.06), (0.47, 0.45), (-0.47, 0.45)]), fill=person.skin)


def _paint_head(canvas: Canvas, draw: ImageDraw.ImageDraw, person: Person) -> None:
    hx, hy = HEAD_CENTRE
    (cx, cy), r = canvas.px([(hx, hy)])[0], canvas.u
    draw.ellipse((cx - 0.26 * r, cy - 0.33 * r, cx + 0.26 * r, cy + 0.33 * r), fill=person.skin)
    draw.chord((cx - 0.3 * r, cy - 0.42 * r, cx + 0.3 * r, cy + 0.2 * r), 180, 360, fill=person.hair)
    if person.bag is not None:
        bx, by = canvas.px([(WRIST[0] + 0.02, WRIST[1] - 0.05)])[0]
        draw.line((bx, by - 0.45 * r, bx, by), fill=person.bag, width=max(1, round(r / 25)))
        draw.rounded_rectangle((bx - 0.3 * r, by, bx + 0.3 * r, by + 0.42 * r), radius=0.06 * r, fill=person.bag)


def new_canvas(extent: tuple[float, float, float, float], u: float, pad: float = 0.1) -> Canvas:
    x0, y0, x1, y1 = extent
    w = math.ceil((x1 - x0 + 2 * pad) * u)
    h = math.ceil((y1 - y0 + 2 * pad) * u)
    origin = ((pad - x0) * u, (pad - y0) * u)
    return Canvas(Image.new("RGBA", (w, h), (0, 0, 0, 0)), Image.new("L", (w, h), 0), u, origin)


FIGURE_EXTENT = (-1.25, -1.1, 1.25, SOLE_Y)


def figure_extent(garment: Garment) -> tuple[float, float, float, float]:
    x0, _y0, x1, y1 = garment_shape(garment).extent()
    return (min(x0, FIGURE_EXTENT[0]), FIGURE_EXTENT[1], max(x1, FIGURE_EXTENT[2]), max(y1, FIGURE_EXTENT[3]))
