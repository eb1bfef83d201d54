"""The demo photos: studio shop photos, street photos with their boxes, and JPEG encoding."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from shop.street2shop.demo.draw import (
    Canvas,
    figure_extent,
    garment_layer,
    garment_shape,
    new_canvas,
    paint_figure,
    paint_layer,
    random_person,
    random_rgb,
)
from shop.street2shop.demo.geometry import Point
from shop.street2shop.demo.plan import DemoDatasetError, Garment, PhotoTask, Skirt, photo_rng, plan_catalogue
from shop.street2shop.demo.skirt import WAISTBAND_BOTTOM, WAISTBAND_TOP, Top, random_top

SHOP_SIZE = (256, 320)
STREET_SIZE = (480, 640)
GROUP_SIZE = (640, 480)
SHOP_QUALITY = 85


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    width: int
    height: int

    def as_json(self) -> dict[str, int]:
        # Street2Shop's key order.
        return {"width": self.width, "top": self.top, "left": self.left, "height": self.height}


@dataclass
class RenderedPhoto:
    photo: int
    jpeg: bytes
    boxes: list[tuple[int, Box]] = field(default_factory=list)  # (product, box) for street photos


def shop_photo(garment: Garment, rng: np.random.Generator) -> Image.Image:
    """The garment alone on a hanger (a clip hanger for a skirt) against a plain studio background, centred."""
    w, h = SHOP_SIZE
    shape = garment_shape(garment)
    x0, _y0, x1, y1 = shape.extent()
    skirt = isinstance(garment, Skirt)
    # The hook's top, and how far the hanger reaches to each side.
    hanger_top, reach = (CLIP_BAR_Y - 0.35, shape.profile[0][0] + 0.12) if skirt else (-0.45, 0.7)
    u = min(0.88 * h / (y1 - hanger_top), 0.86 * w / (x1 - x0))
    image = studio_background(rng, SHOP_SIZE)
    canvas = new_canvas((min(x0, -reach), hanger_top, max(x1, reach), y1), u)
    if not skirt:
        _dress_hanger(canvas)
    paint_layer(canvas, garment_layer(canvas, garment, shape))
    if skirt:
        _clip_hanger(canvas, reach)  # after the skirt: its clips bite over the waistband
    left = round((w - canvas.image.width) / 2)
    top = round((h - canvas.image.height) / 2)
    _drop_shadow(image, canvas, (left + round(u * 0.06), top + round(u * 0.08)))
    image.paste(canvas.image, (left, top), canvas.image)
    return image


HANGER_GREY = (150, 150, 155, 255)
CLIP_BAR_Y = WAISTBAND_TOP - 0.1


def _dress_hanger(canvas: Canvas) -> None:
    draw = ImageDraw.Draw(canvas.image)
    line = max(1, round(canvas.u / 30))
    draw.line(canvas.px([(0.0, -0.1), (0.0, -0.32)]), fill=HANGER_GREY, width=line)
    draw.arc(_box(canvas.px([(-0.08, -0.45), (0.08, -0.29)])), 180, 90, fill=HANGER_GREY, width=line)
    draw.line(canvas.px([(-0.62, 0.14), (0.0, -0.1), (0.62, 0.14)]), fill=HANGER_GREY, width=line + 1)


def _clip_hanger(canvas: Canvas, reach: float) -> None:
    """A straight bar with a hook and two clips biting the waistband."""
    draw = ImageDraw.Draw(canvas.image)
    line = max(1, round(canvas.u / 30))
    bar = CLIP_BAR_Y
    draw.line(canvas.px([(0.0, bar), (0.0, bar - 0.22)]), fill=HANGER_GREY, width=line)
    draw.arc(_box(canvas.px([(-0.08, bar - 0.35), (0.08, bar - 0.19)])), 180, 90, fill=HANGER_GREY, width=line)
    draw.line(canvas.px([(-reach, bar), (reach, bar)]), fill=HANGER_GREY, width=line + 1)
    for side in (-1, 1):
        x = side * (reach - 0.2)
        clip = canvas.px([(x - 0.05, bar), (x + 0.05, WAISTBAND_BOTTOM)])
        draw.rectangle(_box(clip), fill=(95, 95, 100, 255))


def _top_for(garment: Garment, rng: np.random.Generator) -> Top | None:
    """The top worn with a skirt; a dress needs none (and draws nothing from ``rng``)."""
    return random_top(rng, garment) if isinstance(garment, Skirt) else None


def model_photo(garment: Garment, rng: np.random.Generator) -> Image.Image:
    """A second shop photo: the garment on a figure in the studio (a skirt with a plain top)."""
    w, h = SHOP_SIZE
    x0, y0, x1, y1 = figure_extent(garment)
    u = min(0.94 * h / (y1 - y0), 0.92 * w / (x1 - x0))
    canvas = new_canvas((x0, y0, x1, y1), u)
    paint_figure(canvas, garment, replace(random_person(rng), bag=None), _top_for(garment, rng))
    image = studio_background(rng, SHOP_SIZE)
    image.paste(canvas.image, (round((w - canvas.image.width) / 2), round((h - canvas.image.height) / 2)), canvas.image)
    return image


def studio_background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    w, h = size
    tone = np.array([rng.integers(236, 250)] * 3, dtype=np.float32) + rng.integers(-4, 5, size=3)
    ramp = np.linspace(1.0, 0.95, h, dtype=np.float32)[:, None, None]
    pixels = np.broadcast_to(tone * ramp, (h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _drop_shadow(image: Image.Image, canvas: Canvas, offset: tuple[int, int]) -> None:
    shadow = Image.new("L", image.size, 0)
    shadow.paste(canvas.garment_mask.point(lambda v: v * 50 // 255), offset)
    shadow = shadow.filter(ImageFilter.GaussianBlur(3))
    image.paste((90, 90, 95), (0, 0), shadow)


def _box(points: list[Point]) -> tuple[float, float, float, float]:
    (x0, y0), (x1, y1) = points
    return (x0, y0, x1, y1)


def street_photo(garments: Sequence[Garment], rng: np.random.Generator) -> tuple[Image.Image, list[Box]]:
    """People wearing the garments in a cluttered, badly lit scene; one box per garment (never its top), in order."""
    size = STREET_SIZE if len(garments) == 1 else GROUP_SIZE
    w, h = size
    image = scene(rng, size)
    boxes = []
    slot_w = w / len(garments)
    for i, garment in enumerate(garments):
        layer, mask = _posed_figure(garment, rng, height=rng.uniform(0.6, 0.95) * h)
        dx0, dy0, dx1, dy1 = _solid_bbox(mask)
        # Keep the whole garment inside the photo (and inside this person's slot); feet may be cut off.
        lo_x, hi_x = i * slot_w - dx0, (i + 1) * slot_w - dx1
        lo_y, hi_y = -dy0, h - dy1
        left = round(rng.uniform(lo_x, max(lo_x, hi_x)))
        top = round(rng.uniform(max(lo_y, hi_y - 0.12 * h), max(lo_y, hi_y)))
        image.paste(layer, (left, top), layer)
        boxes.append(_clamped_box(dx0 + left, dy0 + top, dx1 + left, dy1 + top, size))
    return degrade(image, rng), boxes


def _posed_figure(garment: Garment, rng: np.random.Generator, *, height: float) -> tuple[Image.Image, Image.Image]:
    x0, y0, x1, y1 = figure_extent(garment)
    u = height / (y1 - y0)
    canvas = new_canvas((x0, y0, x1, y1), u)
    paint_figure(canvas, garment, random_person(rng), _top_for(garment, rng))
    angle = float(rng.uniform(-8, 8))
    layer = canvas.image.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    mask = canvas.garment_mask.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    return layer, mask


def _solid_bbox(mask: Image.Image) -> tuple[int, int, int, int]:
    """Bounding box of the at-least-half-covered pixels (rotation blurs the mask edge)."""
    box = mask.point(lambda v: 255 if v >= 128 else 0).getbbox()
    if box is None:
        raise DemoDatasetError("the garment vanished while posing the figure")
    return box


def _clamped_box(x0: float, y0: float, x1: float, y1: float, size: tuple[int, int]) -> Box:
    w, h = size
    left, top = max(0, int(x0)), max(0, int(y0))
    right, bottom = min(w, int(x1)), min(h, int(y1))
    return Box(left=left, top=top, width=max(1, right - left), height=max(1, bottom - top))


def scene(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A cluttered background: a street with buildings and pavement, or a room."""
    image = street_scene(rng, size) if rng.random() < 0.65 else room_scene(rng, size)
    return _add_texture(image, rng)


def street_scene(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    w, h = size
    horizon = int(h * rng.uniform(0.5, 0.68))
    sky_top, sky_bottom = rng.integers(120, 200, size=3), rng.integers(190, 245, size=3)
    image = _vertical_gradient(size, sky_top, sky_bottom)
    draw = ImageDraw.Draw(image)
    x = int(rng.integers(-60, 0))
    while x < w:
        bw, bh = int(rng.integers(60, 180)), int(rng.integers(int(h * 0.2), horizon))
        facade = random_rgb(rng, 70, 210)
        draw.rectangle((x, horizon - bh, x + bw, horizon), fill=facade)
        window = tuple(int(v * 0.55) for v in facade) if rng.random() < 0.7 else (200, 215, 230)
        for wy in range(horizon - bh + 10, horizon - 30, 34):
            for wx in range(x + 8, x + bw - 16, 26):
                draw.rectangle((wx, wy, wx + 14, wy + 20), fill=window)
        x += bw + int(rng.integers(0, 20))
    pavement = _vertical_gradient((w, h - horizon), rng.integers(90, 130, size=3), rng.integers(140, 190, size=3))
    image.paste(pavement, (0, horizon))
    for k in range(1, 8):
        # Paving joints converging on a vanishing point, for a sense of ground.
        draw.line((w / 2 + (k - 4) * 30, horizon, w / 2 + (k - 4) * w * 0.45, h), fill=(95, 95, 98), width=1)
    for _ in range(int(rng.integers(2, 6))):
        _clutter(draw, rng, size, horizon)
    return image


def room_scene(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    w, h = size
    floor = int(h * rng.uniform(0.6, 0.78))
    wall = rng.integers(150, 235, size=3)
    image = _vertical_gradient(size, wall, wall * 0.85)
    draw = ImageDraw.Draw(image)
    stripe = tuple(int(v * 0.93) for v in wall)
    for sx in range(0, w, int(rng.integers(18, 40))):
        draw.rectangle((sx, 0, sx + 6, floor), fill=stripe)
    wood = rng.integers(90, 170, size=3) * np.array([1.0, 0.75, 0.5])
    image.paste(_vertical_gradient((w, h - floor), wood * 0.8, wood), (0, floor))
    for py in range(floor, h, 22):
        draw.line((0, py, w, py), fill=tuple(int(v * 0.6) for v in wood), width=1)
    for _ in range(int(rng.integers(2, 5))):
        fx, fy = int(rng.integers(0, w - 60)), int(rng.integers(10, max(11, floor - 120)))
        fw, fh = int(rng.integers(40, 120)), int(rng.integers(40, 110))
        draw.rectangle((fx, fy, fx + fw, fy + fh), fill=(60, 45, 30))
        draw.rectangle((fx + 5, fy + 5, fx + fw - 5, fy + fh - 5), fill=random_rgb(rng, 30, 230))
    if rng.random() < 0.6:
        px = int(rng.integers(0, w - 60))
        draw.rectangle((px + 15, floor - 40, px + 45, floor + 10), fill=(150, 80, 50))
        draw.ellipse((px, floor - 130, px + 60, floor - 30), fill=(40, 110, 50))
    return image


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: tuple[int, int], horizon: int) -> None:
    w, h = size
    kind = int(rng.integers(3))
    x = int(rng.integers(0, w))
    if kind == 0:  # lamp post with a sign
        draw.rectangle((x, int(h * 0.1), x + 6, horizon + 40), fill=(50, 55, 60))
        draw.rectangle((x - 20, int(h * 0.25), x + 26, int(h * 0.25) + 30), fill=random_rgb(rng, 0, 255))
    elif kind == 1:  # tree
        draw.rectangle((x, horizon - 80, x + 12, horizon + 20), fill=(80, 60, 40))
        r = int(rng.integers(35, 70))
        leaves = (50, int(rng.integers(90, 150)), 55)
        draw.ellipse((x + 6 - r, horizon - 80 - r * 2, x + 6 + r, horizon - 60), fill=leaves)
    else:  # parked car
        cw = int(rng.integers(120, 200))
        body = random_rgb(rng, 20, 230)
        draw.rounded_rectangle((x, horizon - 10, x + cw, horizon + 45), radius=12, fill=body)
        draw.rounded_rectangle((x + cw * 0.2, horizon - 40, x + cw * 0.75, horizon - 8), radius=10, fill=body)
        for wx in (x + cw * 0.2, x + cw * 0.8):
            draw.ellipse((wx - 14, horizon + 30, wx + 14, horizon + 58), fill=(20, 20, 20))


def _vertical_gradient(size: tuple[int, int], top: np.ndarray, bottom: np.ndarray) -> Image.Image:
    w, h = size
    t = np.linspace(0, 1, max(h, 1), dtype=np.float32)[:, None, None]
    top_ = np.asarray(top, dtype=np.float32)
    bottom_ = np.asarray(bottom, dtype=np.float32)
    pixels = np.broadcast_to(top_ + t * (bottom_ - top_), (h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _add_texture(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Blotchy low-frequency dirt over the background so it is not flat."""
    w, h = image.size
    blotches = rng.normal(128, 10, size=(h // 16 + 1, w // 16 + 1)).clip(0, 255).astype(np.uint8)
    dirt = Image.fromarray(blotches).resize((w, h), Image.Resampling.BILINEAR).convert("RGB")
    return ImageChops.add(image, dirt, offset=-128)


def degrade(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A phone camera: softness, other lighting, a colour cast and sensor noise."""
    # Pillow's C paths, not float numpy: this runs on every street photo and dominated the run time.
    w, h = image.size
    soft = float(rng.uniform(0.5, 0.8))
    image = image.resize((round(w * soft), round(h * soft)), Image.Resampling.BILINEAR)
    image = image.resize((w, h), Image.Resampling.BILINEAR)
    mean = float(np.asarray(image.reduce(8)).mean())
    contrast, brightness = rng.uniform(0.75, 1.15), rng.uniform(0.75, 1.2)
    cast = rng.uniform(0.88, 1.12, size=3)
    levels = np.arange(256, dtype=np.float64)
    lut = np.concatenate([((levels - mean) * contrast + mean * brightness) * c for c in cast])
    image = image.point(np.clip(lut, 0, 255).astype(np.uint8).tolist())
    spread = int(rng.integers(6, 16))
    noise = rng.integers(0, 2 * spread + 1, size=(h, w, 3), dtype=np.uint8)
    return ImageChops.add(image, Image.fromarray(noise), offset=-spread)


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """JPEG bytes with no metadata, so equal pixels give equal files."""
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=quality, optimize=False, progressive=False)
    return out.getvalue()


def render_photo(task: PhotoTask, garments: Sequence[Garment], seed: int) -> RenderedPhoto:
    """Draw one planned photo from its own generator (copies are made from their source's file instead)."""
    rng = photo_rng(seed, task.photo)
    if task.kind == "shop":
        return RenderedPhoto(task.photo, encode_jpeg(shop_photo(garments[0], rng), SHOP_QUALITY))
    if task.kind == "model":
        return RenderedPhoto(task.photo, encode_jpeg(model_photo(garments[0], rng), SHOP_QUALITY))
    image, boxes = street_photo(garments, rng)
    quality = int(rng.integers(55, 71))  # heavy compression, like phone uploads
    return RenderedPhoto(task.photo, encode_jpeg(image, quality), list(zip(task.products, boxes)))


def labelled_photos(*, seed: int, n_products: int) -> tuple[list[Image.Image], list[int], list[Image.Image], list[int]]:
    """(shop photos, their products, boxed street crops, their products) of single-product photos of a plan."""
    plan = plan_catalogue(seed=seed, n_products=n_products, street_per_product=1)
    shop: list[Image.Image] = []
    street: list[Image.Image] = []
    shop_labels: list[int] = []
    street_labels: list[int] = []
    for task in plan.photos:
        if task.kind not in ("shop", "street") or len(task.products) != 1:
            continue
        dress = plan.product(task.products[0]).garment
        rng = photo_rng(plan.seed, task.photo)
        if task.kind == "shop":
            shop.append(shop_photo(dress, rng))
            shop_labels.append(task.products[0])
        else:
            image, (box,) = street_photo([dress], rng)
            street.append(image.crop((box.left, box.top, box.left + box.width, box.top + box.height)))
            street_labels.append(task.products[0])
    return shop, shop_labels, street, street_labels
