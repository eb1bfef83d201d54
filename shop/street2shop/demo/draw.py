"""Drawing a dress, alone or worn by a simple figure, on a transparent canvas (Pillow and numpy).

Shapes are laid out in "body units" so a dress looks the same at any photo size; a floral print's
flowers come from the dress's own ``motif_seed``, so every photo of a product shows them alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from shop.street2shop.demo.plan import COLOURS, LENGTHS, RGB, Dress

Point = tuple[float, float]

WHITE: RGB = (246, 245, 240)

SKIN_TONES: tuple[RGB, ...] = ((241, 204, 176), (224, 172, 138), (198, 140, 100), (160, 104, 70), (112, 72, 50))
HAIR_COLOURS: tuple[RGB, ...] = ((30, 24, 20), (70, 45, 28), (120, 80, 40), (200, 160, 90), (150, 60, 35))

# Body landmarks in "body units" (u): origin at the base of the neck, y down, the figure is ~5u tall.
HEAD_CENTRE: Point = (0.0, -0.68)
BUST_Y, WAIST_Y, HIP_Y = 0.5, 1.05, 1.5
ANKLE_Y, SOLE_Y = 3.72, 3.86
SHOULDER_JOINT: Point = (0.6, 0.2)
ELBOW: Point = (0.76, 1.05)
WRIST: Point = (0.8, 1.82)


# --------------------------------------------------------------------------- dress geometry (body units)


@dataclass(frozen=True)
class Shape:
    body: list[Point]
    sleeves: list[list[Point]]
    seam_y: float | None  # a visible waist seam, if the cut has one

    def extent(self) -> tuple[float, float, float, float]:
        points = self.body + [p for s in self.sleeves for p in s]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        return min(xs), min(ys), max(xs), max(ys)


def side_profile(dress: Dress) -> list[Point]:
    """Half-widths down the right side of the dress, from the underarm to the hem."""
    hem = LENGTHS[dress.length]
    drop = hem - HIP_Y
    waist, hip, hem_half = {
        "sheath": (0.37, 0.5, 0.5 - 0.04 * drop),
        "a-line": (0.37, 0.55, 0.55 + 0.22 * drop),
        "fit-and-flare": (0.34, 0.66, 0.66 + 0.3 * drop),
        "shift": (0.47, 0.5, 0.5 + 0.05 * drop),
        "empire": (0.44, 0.56, 0.56 + 0.17 * drop),
    }[dress.silhouette]
    points = [(0.46, 0.42), (0.46, BUST_Y)]
    if dress.silhouette == "empire":
        points.append((0.42, 0.68))
    points += [(waist, WAIST_Y), ((waist + hip) / 2 + 0.02, (WAIST_Y + HIP_Y) / 2), (hip, HIP_Y), (hem_half, hem)]
    return points


def half_width_at(profile: list[Point], y: np.ndarray) -> np.ndarray:
    ys = [p[1] for p in profile]
    xs = [p[0] for p in profile]
    return np.interp(y, ys, xs)


def neckline_points(dress: Dress) -> list[Point]:
    """The right half of the neckline from the centre front up to the neck edge."""
    if dress.neckline == "v-neck":
        return [(0.0, 0.56), (0.2, 0.02)]
    if dress.neckline == "square":
        return [(0.0, 0.32), (0.21, 0.32), (0.21, 0.02)]
    depth, edge = (0.22, 0.19) if dress.neckline == "round" else (0.09, 0.34)
    return [(edge * math.sin(a), depth * math.cos(a)) for a in np.linspace(0, math.pi / 2, 7)]


def dress_shape(dress: Dress) -> Shape:
    profile = side_profile(dress)
    hem, hem_half = LENGTHS[dress.length], profile[-1][0]
    if dress.neckline == "strapless":
        top = [(0.0, 0.32), (0.25, 0.3), (0.46, 0.34)]
    else:
        shoulder_x = 0.5 if dress.sleeves == "sleeveless" else 0.6
        top = [*neckline_points(dress), (shoulder_x, 0.1), (0.49, 0.26)]
    right = top + profile
    # The hem bows down a little at the centre, as fabric hangs.
    right += [(hem_half * t, hem + 0.07 * (1 - t * t)) for t in np.linspace(1, 0, 8)[1:]]
    body = right + [(-x, y) for x, y in reversed(right)]
    sleeves = [] if dress.sleeves == "sleeveless" or dress.neckline == "strapless" else _sleeves(dress.sleeves)
    seam = {"fit-and-flare": WAIST_Y, "empire": 0.68}.get(dress.silhouette)
    if dress.pattern == "colour-block":
        seam = seam or WAIST_Y
    return Shape(body=body, sleeves=sleeves, seam_y=seam)


def arm_polygon(end: float, thickness: float) -> list[Point]:
    """The right arm (shoulder to ``end`` along it, 0..2 = shoulder, elbow, wrist) as a polygon."""
    path = [SHOULDER_JOINT, ELBOW, WRIST]
    centre = [_along(path, t) for t in np.linspace(0, end, 2 + int(end * 3))]
    outer, inner = [], []
    for i, (x, y) in enumerate(centre):
        nx, ny = _normal(centre, i)
        half = thickness * (1 - 0.12 * min(end, i / max(len(centre) - 1, 1) * end))
        outer.append((x + nx * half, y + ny * half))
        inner.append((x - nx * half, y - ny * half))
    return outer + inner[::-1]


def _sleeves(kind: str) -> list[list[Point]]:
    end = {"cap": 0.22, "short": 0.5, "long": 2.0}[kind]
    arm = arm_polygon(end, 0.12)
    right = [(0.42, 0.06), (0.62, 0.07), *arm, (0.47, 0.42)]
    return [right, [(-x, y) for x, y in right]]


def _along(path: list[Point], t: float) -> Point:
    i = min(int(t), len(path) - 2)
    f = t - i
    (x0, y0), (x1, y1) = path[i], path[i + 1]
    return (x0 + (x1 - x0) * f, y0 + (y1 - y0) * f)


def _normal(points: list[Point], i: int) -> Point:
    a, b = points[max(i - 1, 0)], points[min(i + 1, len(points) - 1)]
    dx, dy = b[0] - a[0], b[1] - a[1]
    norm = math.hypot(dx, dy) or 1.0
    return (dy / norm, -dx / norm)


# --------------------------------------------------------------------------- painting


@dataclass
class Canvas:
    """A transparent figure layer with its body-unit scale and where the body origin sits."""

    image: Image.Image  # RGBA
    dress_mask: Image.Image  # L, 255 where the dress is
    u: float
    origin: Point

    def px(self, points: Sequence[Point]) -> list[Point]:
        ox, oy = self.origin
        return [(ox + x * self.u, oy + y * self.u) for x, y in points]


def colour_rgb(name: str) -> RGB:
    return WHITE if name == "white" else COLOURS[name]


def pattern_pixels(dress: Dress, shape: Shape, size: tuple[int, int], u: float, origin: Point) -> np.ndarray:
    """The printed fabric over the whole canvas (float RGB), laid out in body units so it scales."""
    w, h = size
    xs = (np.arange(w, dtype=np.float32) - origin[0]) / u
    ys = (np.arange(h, dtype=np.float32) - origin[1]) / u
    x, y = np.meshgrid(xs, ys)
    base = np.array(colour_rgb(dress.colour), dtype=np.float32)
    accent = np.array(colour_rgb(dress.accent), dtype=np.float32)
    weight = np.zeros((h, w), dtype=np.float32)  # 0 = base colour, 1 = accent
    if dress.pattern == "horizontal-stripes":
        weight = ((y / 0.2) % 1 < 0.45).astype(np.float32)
    elif dress.pattern == "vertical-stripes":
        weight = (((x + 0.05) / 0.16) % 1 < 0.3).astype(np.float32)
    elif dress.pattern == "checks":
        a = ((x / 0.2) % 1 < 0.5).astype(np.float32)
        b = ((y / 0.2) % 1 < 0.5).astype(np.float32)
        weight = (a + b) / 2
    elif dress.pattern == "polka-dots":
        period = 0.22
        row = np.floor(y / period)
        dx = (x / period + 0.5 * (row % 2)) % 1 - 0.5
        dy = (y / period) % 1 - 0.5
        weight = (dx * dx + dy * dy < 0.27**2).astype(np.float32)
    elif dress.pattern == "colour-block":
        # The skirt in the accent colour; sleeves stay in the bodice colour.
        inside = np.abs(x) <= half_width_at(side_profile(dress), y) + 0.02
        weight = ((y > (shape.seam_y or WAIST_Y)) & inside).astype(np.float32)
    pixels = base + weight[..., None] * (accent - base)
    if dress.pattern == "floral":
        pixels = _paint_flowers(dress, pixels, u, origin)
    return pixels


def _paint_flowers(dress: Dress, pixels: np.ndarray, u: float, origin: Point) -> np.ndarray:
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    rng = np.random.default_rng(dress.motif_seed)
    petal = colour_rgb(dress.accent)
    centre = (250, 226, 120) if dress.accent != "mustard" else WHITE
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


def shading(dress: Dress, shape: Shape, size: tuple[int, int], u: float, origin: Point) -> np.ndarray:
    """Fabric falls away at the sides and folds below the hip; a flared cut folds more."""
    w, h = size
    x = (np.arange(w, dtype=np.float32) - origin[0]) / u
    y = (np.arange(h, dtype=np.float32) - origin[1]) / u
    half = half_width_at(side_profile(dress), y)[:, None]
    t = np.clip(np.abs(x[None, :]) / half, 0, 1.3)
    shade = 1.06 - 0.3 * t**2
    flare = {"sheath": 0.0, "shift": 0.2, "empire": 0.6, "a-line": 0.6, "fit-and-flare": 1.0}[dress.silhouette]
    below_hip = np.clip((y - (shape.seam_y or HIP_Y)) / 0.8, 0, 1)[:, None]
    waves = np.sin(x[None, :] / (half * 0.28 + 0.05) * math.pi + 0.3)
    shade = shade - 0.09 * flare * below_hip * (waves + 1) / 2
    return np.clip(shade, 0.55, 1.1)


@dataclass
class DressLayer:
    """The shaded fabric over the dress's box on a canvas, with its body and sleeve masks."""

    image: Image.Image  # RGB
    body: Image.Image  # L
    sleeves: Image.Image  # L
    offset: tuple[int, int]


def dress_layer(canvas: Canvas, dress: Dress) -> DressLayer:
    shape = dress_shape(dress)
    body = Image.new("L", canvas.image.size, 0)
    sleeves = Image.new("L", canvas.image.size, 0)
    ImageDraw.Draw(body).polygon(canvas.px(shape.body), fill=255)
    for polygon in shape.sleeves:
        ImageDraw.Draw(sleeves).polygon(canvas.px(polygon), fill=255)
    # Print and shade only the dress's box: the rest of a figure canvas is head, legs and air.
    box = ImageChops.lighter(body, sleeves).getbbox() or (0, 0, 1, 1)
    body, sleeves = body.crop(box), sleeves.crop(box)
    local = Canvas(canvas.image, canvas.dress_mask, canvas.u, (canvas.origin[0] - box[0], canvas.origin[1] - box[1]))
    fabric = pattern_pixels(dress, shape, body.size, local.u, local.origin)
    shade = shading(dress, shape, body.size, local.u, local.origin)
    sleeve_area = np.asarray(sleeves, dtype=np.float32)[..., None] / 255
    shade = shade[..., None] * (1 - sleeve_area) + 0.86 * sleeve_area
    image = Image.fromarray(np.clip(fabric * shade, 0, 255).astype(np.uint8))
    _draw_details(image, local, dress, shape)
    return DressLayer(image=image, body=body, sleeves=sleeves, offset=(box[0], box[1]))


def paint_dress(canvas: Canvas, layer: DressLayer, *, sleeves_only: bool = False) -> None:
    """Paint the dress onto the canvas; with ``sleeves_only`` just the sleeves (over the arms)."""
    mask = layer.sleeves if sleeves_only else ImageChops.lighter(layer.body, layer.sleeves)
    canvas.image.paste(layer.image, layer.offset, mask)
    canvas.dress_mask.paste(255, layer.offset, mask)


def _draw_details(image: Image.Image, canvas: Canvas, dress: Dress, shape: Shape) -> None:
    """Outline and seams in a darker shade, so light dresses stand off a light background."""
    draw = ImageDraw.Draw(image)
    dark = tuple(int(c * 0.55) for c in colour_rgb(dress.colour))
    width = max(1, round(canvas.u / 45))
    draw.line(canvas.px(shape.body + shape.body[:1]), fill=dark, width=width)
    for polygon in shape.sleeves:
        # Only the sleeve's own edges: its closing edges lie inside the bodice.
        draw.line(canvas.px(polygon[1:-1]), fill=dark, width=width)
    if shape.seam_y is not None:
        half = float(half_width_at(side_profile(dress), np.array([shape.seam_y]))[0])
        draw.line(canvas.px([(-half, shape.seam_y), (half, shape.seam_y)]), fill=dark, width=width)


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


def paint_figure(canvas: Canvas, dress: Dress, person: Person) -> None:
    """A simple person wearing the dress: hair, legs, dress, arms, sleeves, head."""
    draw = ImageDraw.Draw(canvas.image)
    hx, hy = HEAD_CENTRE
    if person.long_hair:
        draw.polygon(canvas.px([(-0.3, -0.75), (0.3, -0.75), (0.36, 0.35), (-0.36, 0.35)]), fill=person.hair)
    for side in (-1, 1):
        leg = [(0.08, HIP_Y), (0.42, HIP_Y), (0.27, ANKLE_Y), (0.13, ANKLE_Y)]
        draw.polygon(canvas.px([(side * x, y) for x, y in leg]), fill=person.legs)
        foot = [(0.1, ANKLE_Y - 0.04), (0.3, ANKLE_Y - 0.04), (0.34, SOLE_Y), (0.06, SOLE_Y)]
        draw.polygon(canvas.px([(side * x, y) for x, y in foot]), fill=person.shoes)
    draw.polygon(canvas.px([(-0.12, -0.4), (0.12, -0.4), (0.14, 0.12), (-0.14, 0.12)]), fill=person.skin)
    draw.polygon(canvas.px([(-0.42, 0.06), (0.42, 0.06), (0.47, 0.45), (-0.47, 0.45)]), fill=person.skin)
    layer = dress_layer(canvas, dress)
    paint_dress(canvas, layer)
    for side in (-1, 1):
        arm = arm_polygon(2.0, 0.085)
        draw.polygon(canvas.px([(side * x, y) for x, y in arm]), fill=person.skin)
        (hx_, hy_) = canvas.px([(side * (WRIST[0] + 0.01), WRIST[1] + 0.1)])[0]
        r = 0.1 * canvas.u
        draw.ellipse((hx_ - r * 0.8, hy_ - r, hx_ + r * 0.8, hy_ + r), fill=person.skin)
    paint_dress(canvas, layer, sleeves_only=True)
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


def figure_extent(dress: Dress) -> tuple[float, float, float, float]:
    x0, _y0, x1, y1 = dress_shape(dress).extent()
    return (min(x0, FIGURE_EXTENT[0]), FIGURE_EXTENT[1], max(x1, FIGURE_EXTENT[2]), max(y1, FIGURE_EXTENT[3]))
