"""The colours of a garment in a shop photo: named from a small fashion palette, with a comparable descriptor.

Cheap by design (1-2 ms, whatever the photo size): the photo is point-sampled down to
WORK_SIZE pixels, the plain studio background is removed by its connection to the border, and the
garment's pixels are clustered in CIELAB. Pure numpy/scipy/Pillow, so a worker can run it next to
the backbone on the image it has already decoded.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

# The order is the bit order of the colour mask stored in the database: never reorder, only append.
PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (25, 25, 25),
    "white": (250, 250, 250),
    "grey": (128, 128, 128),
    "beige": (228, 212, 180),  # cream, ivory, sand and nude: ivory is not "white" in a shop
    "brown": (115, 75, 45),
    "navy": (30, 40, 85),
    "blue": (40, 90, 190),
    "light blue": (145, 190, 230),
    "green": (30, 130, 70),
    "olive": (110, 110, 50),
    "yellow": (240, 200, 50),
    "orange": (235, 110, 60),  # towards coral: coral is sold as orange more than as red or pink
    "red": (170, 20, 40),
    "burgundy": (110, 25, 45),
    "pink": (240, 160, 185),
    "purple": (150, 110, 195),  # towards lilac and lavender, the purples dresses often come in
}
PALETTE_NAMES: tuple[str, ...] = tuple(PALETTE)

MIN_SHARE = 0.12  # of garment pixels, for a colour to be named
MAX_NAMES = 3
WORK_SIZE = 64  # long side, in pixels, of the sample the colours are read from
# Colours are named by CIEDE2000 with the textile weighting kL = 2 (as CMC 2:1): lightness differences
# count half, so a fabric's folds keep its name while hue and chroma still separate. Mustard at 80 %
# light stays "yellow" (ΔE76 and plain ΔE2000 call it "olive"), blush pink at 75 % stays "pink" (ΔE76:
# "grey"). Its cost does not matter: only the handful of cluster centres of a photo are named.
LIGHTNESS_WEIGHT = 2.0

# Segmentation, in CIELAB units (ΔE76) and pixels of the work sample.
BACKGROUND_DELTA_E = 7.0  # ivory fabric sits about 10 from a white background
SHADOW_DARKER = 40.0  # drop shadows and a grey hanger: neutral, up to this much darker than the background
SHADOW_CHROMA = 5.0
SHADOW_REACH = 3  # ...and only this close to the background, so a grey garment keeps its middle
PLAIN_BORDER_SHARE = 0.75  # of frame pixels close to the background model, for a studio photo
MIN_GARMENT_SHARE = 0.03  # of the sample; less than this and the centre is used instead

# Clustering.
CLUSTERS = 6
KMEANS_ITERATIONS = 4
KMEANS_POINTS = 800
# Shading darkens every linear-RGB channel alike, so a fold keeps its chromaticity: clusters whose
# linear-RGB directions are this close, and whose luminances are within this ratio, are one fabric.
# Red and burgundy are 7° apart, ivory and white 7°, navy and black 36°.
SHADE_ANGLE_DEGREES = 4.0
SHADE_LUMINANCE_RATIO = 0.25
# Clusters smaller than this share (JPEG ringing, blended edges, a clip) count towards their nearest
# larger cluster instead: a speck named on its own would come and go between two saves of one photo,
# and the descriptor's square root would make each such speck a large step.
SPECK_SHARE = 0.05

_XYZ_FROM_LINEAR = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])
_LINEAR_FROM_XYZ = np.linalg.inv(_XYZ_FROM_LINEAR)
_LUMINANCE = _XYZ_FROM_LINEAR[1]
_SQUARE = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class GarmentColours:
    """The named colours of one garment (dominant first) and a descriptor of its whole colour distribution.

    ``descriptor`` holds, in PALETTE order, the square root of each name's share of garment pixels:
    unit norm, so the Euclidean distance of two descriptors is the Hellinger distance of the two colour
    distributions in its unhalved form √Σ(√p − √q)², from 0 (same shares) to √2 (no colour shared).
    """

    names: tuple[str, ...]
    shares: tuple[float, ...]
    descriptor: np.ndarray

    @property
    def main(self) -> str:
        return self.names[0]

    def to_json(self) -> dict[str, list[str] | list[float]]:
        """For a JSONField; Python floats repr exactly, so from_json gives back the same values."""
        return {
            "names": list(self.names),
            "shares": [float(s) for s in self.shares],
            "descriptor": [float(v) for v in self.descriptor],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GarmentColours:
        descriptor = np.asarray(data["descriptor"], dtype=np.float32)
        if descriptor.shape != (len(PALETTE_NAMES),):
            raise ValueError(f"A colour descriptor has {len(PALETTE_NAMES)} values, got shape {descriptor.shape}.")
        names = tuple(str(n) for n in data["names"])
        unknown = [n for n in names if n not in PALETTE]
        if unknown or not names:
            raise ValueError(f"Not palette colour names: {unknown or names}.")
        return cls(names=names, shares=tuple(float(s) for s in data["shares"]), descriptor=descriptor)


def name_colour(rgb: tuple[int, int, int]) -> str:
    """The palette name of one sRGB colour: the nearest by CIEDE2000 with textile weighting (kL = 2)."""
    lab = srgb_to_lab(np.asarray(rgb, dtype=np.uint8).reshape(1, 3))
    return PALETTE_NAMES[int(np.argmin(delta_e2000(lab, _palette_lab())))]


def colour_mask(names: Iterable[str]) -> int:
    """The database bit mask of colour names: bit i for PALETTE_NAMES[i]."""
    mask = 0
    for name in names:
        if name not in PALETTE:
            raise ValueError(f"{name!r} is not a palette colour; use one of: {', '.join(PALETTE_NAMES)}.")
        mask |= 1 << PALETTE_NAMES.index(name)
    return mask


def names_from_mask(mask: int) -> tuple[str, ...]:
    """The colour names of a bit mask, in palette order."""
    if mask < 0 or mask >> len(PALETTE_NAMES):
        raise ValueError(f"{mask} is not a mask of {len(PALETTE_NAMES)} palette colours.")
    return tuple(name for i, name in enumerate(PALETTE_NAMES) if mask >> i & 1)


def garment_colours(image: Image.Image) -> GarmentColours:
    """The garment's colours in a shop photo (a garment on a plain background, or any photo's centre)."""
    if image.width == 0 or image.height == 0:
        raise ValueError("Cannot read the colours of an empty image.")
    lab = srgb_to_lab(work_sample(image))
    return colours_of(lab, garment_weights(lab))


def colours_of(lab: np.ndarray, weights: np.ndarray) -> GarmentColours:
    """The colours of a work sample's garment pixels (garment_weights), for callers that need the mask too."""
    pixels, pixel_weights = lab[weights > 0], weights[weights > 0]
    centres, cluster_weights = absorb_specks(*merge_shades(*kmeans(pixels, pixel_weights)))
    shares = np.zeros(len(PALETTE_NAMES))
    np.add.at(shares, np.argmin(delta_e2000(centres[:, None], _palette_lab()), axis=1), cluster_weights)
    shares /= shares.sum()
    order = [int(i) for i in np.argsort(-shares, kind="stable")]
    # The dominant colour is always named, even on a print where no colour reaches MIN_SHARE.
    kept = [order[0], *(i for i in order[1:MAX_NAMES] if shares[i] >= MIN_SHARE)]
    return GarmentColours(
        names=tuple(PALETTE_NAMES[i] for i in kept),
        shares=tuple(float(shares[i]) for i in kept),
        descriptor=np.sqrt(shares).astype(np.float32),
    )


def work_sample(image: Image.Image) -> np.ndarray:
    """The photo point-sampled to WORK_SIZE on its long side, as (h, w, 3) uint8 sRGB.

    Point sampling, not averaging: an averaged pixel on the edge of a dot or stripe is a colour the
    fabric does not have, and small prints would turn into their mixture.
    """
    scale = min(1.0, WORK_SIZE / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    small = image.resize(size, Image.Resampling.NEAREST)
    if small.mode in ("RGBA", "LA", "PA", "P") or "transparency" in small.info:
        # Transparent parts are shown on white, as a shop page would.
        rgba = small.convert("RGBA")
        small = Image.alpha_composite(Image.new("RGBA", size, (255, 255, 255, 255)), rgba)
    return np.asarray(small.convert("RGB"))


def garment_weights(lab: np.ndarray) -> np.ndarray:
    """Per-pixel weights of the garment: its mask on a plain background, else the centre of the photo."""
    frame = _frame(lab.shape[:2])
    background = _background_model(lab, frame)
    like = _squared_norm(lab - background) < BACKGROUND_DELTA_E**2
    if like[frame].mean() < PLAIN_BORDER_SHARE:
        return _centre_weights(lab.shape[:2])  # a street crop or a busy background: no border to peel off
    garment = ~_studio_background(lab, background, like)
    # Points on the garment's outline mix it with the background; 1-pixel threads are hanger wire.
    garment = np.asarray(ndimage.binary_erosion(garment, structure=_SQUARE))
    if garment.mean() < MIN_GARMENT_SHARE:
        return _centre_weights(lab.shape[:2])
    return garment.astype(np.float32)


def _frame(shape: tuple[int, ...]) -> np.ndarray:
    """The outer ring of the sample, about 3 % of its short side thick."""
    h, w = shape[0], shape[1]
    ring = max(1, round(0.03 * min(h, w)))
    frame = np.ones((h, w), dtype=bool)
    frame[ring : h - ring, ring : w - ring] = False
    return frame


def _background_model(lab: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """The background colour at every pixel: a plane in x and y fitted to the frame (studio light falls off)."""
    h, w = lab.shape[:2]
    ys, xs = np.nonzero(frame)
    pixels = lab[ys, xs]
    # Fit to the frame pixels near its median only, so a garment that touches the border does not tilt it.
    median = np.median(pixels, axis=0)
    near = _squared_norm(pixels - median) < (3 * BACKGROUND_DELTA_E) ** 2
    if near.sum() < 3:
        return np.broadcast_to(median, lab.shape)
    design = np.stack([np.ones(int(near.sum())), xs[near] / w, ys[near] / h], axis=1)
    (offset, slope_x, slope_y), *_ = np.linalg.lstsq(design, pixels[near], rcond=None)
    column = (np.arange(w) / w)[None, :, None] * slope_x
    row = (np.arange(h) / h)[:, None, None] * slope_y
    return np.asarray(offset + column + row, dtype=np.float32)


def _studio_background(lab: np.ndarray, background: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Background-like pixels connected to the border, with the shadows and hanger that touch them.

    Connection is what keeps white dots and stripes inside a garment: they look like the background
    but are surrounded by fabric.
    """
    darker = background[..., 0] - lab[..., 0]
    chroma_change = _squared_norm(lab[..., 1:] - background[..., 1:])
    shadow = (darker > 0) & (darker < SHADOW_DARKER) & (chroma_change < SHADOW_CHROMA**2)
    near = ndimage.binary_dilation(_touching_border(like), iterations=SHADOW_REACH)
    # Background seen through a hanger (inside its hook, under its bar) joins the rest across the wire.
    return _touching_border(like | (shadow & near))


def _touching_border(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    keep = np.zeros(count + 1, dtype=bool)
    keep[labels[0]] = keep[labels[-1]] = keep[labels[:, 0]] = keep[labels[:, -1]] = True
    keep[0] = False
    return np.asarray(keep[labels])


def _squared_norm(vectors: np.ndarray) -> np.ndarray:
    return np.asarray(np.einsum("...i,...i->...", vectors, vectors))


def _centre_weights(shape: tuple[int, ...]) -> np.ndarray:
    """A Gaussian on the middle of the photo, where a cropped garment is: σ = a quarter of each side."""
    h, w = shape[0], shape[1]
    y = (np.arange(h) + 0.5) / h - 0.5
    x = (np.arange(w) + 0.5) / w - 0.5
    return np.asarray(np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * 0.25**2)))


def kmeans(pixels: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted k-means in CIELAB with lightness at 1/LIGHTNESS_WEIGHT: (centres in Lab, their weights).

    Deliberately more clusters than a garment has colours: a shaded fabric splits into light bands
    that merge_shades joins again, while a small grey clip or a thin print keeps a cluster of its own
    instead of dragging a fabric's centre off its hue.
    """
    scale = np.array([1.0 / LIGHTNESS_WEIGHT, 1.0, 1.0])
    # An even subsample is as good for a handful of centres, and keeps the cost flat.
    step = max(1, len(pixels) // KMEANS_POINTS)
    points, weights = pixels[::step] * scale, weights[::step].astype(np.float64)
    centres = _kmeans_plus_plus(points, weights, CLUSTERS)
    weighted = np.column_stack([points * weights[:, None], weights])
    totals = weighted[:0]
    for _ in range(KMEANS_ITERATIONS):
        members = np.equal.outer(_nearest(points, centres), np.arange(len(centres)))
        totals = members.T.astype(np.float64) @ weighted  # per centre: weighted sums of L, a, b, and the weight
        totals = totals[totals[:, 3] > 0]
        centres = totals[:, :3] / totals[:, 3:]
    return centres / scale, totals[:, 3]


def _kmeans_plus_plus(points: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """k-means++ seeds, from a fixed generator so that one photo always gives the same colours."""
    draws = np.random.default_rng(0).random(k)
    odds = weights.copy()  # the first seed by weight alone, then by weight × squared distance to the seeds
    chosen: list[int] = []
    for draw in draws[: len(points)]:
        cumulative = np.cumsum(odds)
        if cumulative[-1] <= 0:
            break  # every point already sits on a seed: fewer colours than k
        chosen.append(min(int(np.searchsorted(cumulative, draw * cumulative[-1], side="right")), len(points) - 1))
        offset = points - points[chosen[-1]]
        distance = np.einsum("ij,ij->i", offset, offset)
        odds = weights * distance if len(chosen) == 1 else np.minimum(odds, weights * distance)
    return points[chosen]


def merge_shades(centres: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Join clusters that are one fabric in more or less light (see SHADE_ANGLE_DEGREES), chains included:
    a fold, the fabric and its highlight are linked through the middle band."""
    group = list(range(len(centres)))
    for i, j in zip(*np.nonzero(np.triu(_same_fabric(_lab_to_linear(centres)), k=1))):
        joined, into = group[j], group[i]
        group = [into if g == joined else g for g in group]
    _labels, index = np.unique(group, return_inverse=True)
    totals = np.bincount(index, weights=weights)
    sums = np.stack([np.bincount(index, weights=weights * centres[:, c]) for c in range(3)], axis=1)
    return sums / totals[:, None], totals


def _same_fabric(linear: np.ndarray) -> np.ndarray:
    """Which pairs of linear-RGB colours differ as shading does: in intensity, hardly in direction."""
    directions = linear / np.maximum(np.linalg.norm(linear, axis=1, keepdims=True), 1e-9)
    cosines = directions @ directions.T
    luminance = np.maximum(linear @ _LUMINANCE, 1e-9)
    ratio = np.minimum.outer(luminance, luminance) / np.maximum.outer(luminance, luminance)
    return np.asarray((cosines > np.cos(np.radians(SHADE_ANGLE_DEGREES))) & (ratio >= SHADE_LUMINANCE_RATIO))


def absorb_specks(centres: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Add each cluster under SPECK_SHARE to its nearest larger cluster, whose centre stays where it is."""
    speck = weights < SPECK_SHARE * weights.sum()
    if speck.all() or not speck.any():
        return centres, weights
    scale = np.array([1.0 / LIGHTNESS_WEIGHT, 1.0, 1.0])
    kept = np.flatnonzero(~speck)
    nearest = kept[_nearest(centres[speck] * scale, centres[kept] * scale)]
    totals = weights * ~speck
    np.add.at(totals, nearest, weights[speck])
    return centres[kept], totals[kept]


def _nearest(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of each point's nearest centre; |p - c|² less the |p|² every centre shares, by one matmul."""
    return np.asarray(np.argmin((centres**2).sum(axis=1) - 2 * points @ centres.T, axis=1))


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of uint8 sRGB values, any leading shape."""
    linear = _linear_lut()[np.asarray(rgb, dtype=np.uint8)]
    xyz = linear @ (_XYZ_FROM_LINEAR.T / _D65_WHITE).astype(np.float32)
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def _lab_to_linear(lab: np.ndarray) -> np.ndarray:
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _D65_WHITE
    return np.asarray(np.clip(xyz @ _LINEAR_FROM_XYZ.T, 0.0, None))


@functools.cache
def _linear_lut() -> np.ndarray:
    c = np.arange(256) / 255
    # float32: a photo's pixels need no more, and the cube roots after this run twice as fast.
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


@functools.cache
def _palette_lab() -> np.ndarray:
    return srgb_to_lab(np.array(list(PALETTE.values()), dtype=np.uint8))


def delta_e2000(lab1: np.ndarray, lab2: np.ndarray, lightness_weight: float = LIGHTNESS_WEIGHT) -> np.ndarray:
    """CIEDE2000 colour difference (Sharma, Wu & Dalal 2005), broadcasting over leading axes."""
    l1, a1, b1 = np.moveaxis(np.asarray(lab1, dtype=np.float64), -1, 0)
    l2, a2, b2 = np.moveaxis(np.asarray(lab2, dtype=np.float64), -1, 0)
    c_mean = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_mean**7 / (c_mean**7 + 25.0**7)))
    a1, a2 = (1 + g) * a1, (1 + g) * a2
    c1, c2 = np.hypot(a1, b1), np.hypot(a2, b2)
    h1, h2 = np.degrees(np.arctan2(b1, a1)) % 360, np.degrees(np.arctan2(b2, a2)) % 360
    chromatic = c1 * c2 != 0
    dh = (h2 - h1 + 180) % 360 - 180
    d_hue = np.where(chromatic, 2 * np.sqrt(c1 * c2) * np.sin(np.radians(dh) / 2), 0.0)
    h_sum = h1 + h2
    h_mean = np.where(np.abs(h1 - h2) > 180, (h_sum + 360 * np.where(h_sum < 360, 1, -1)) / 2, h_sum / 2)
    h_mean = np.where(chromatic, h_mean, h_sum)
    t = (
        1
        - 0.17 * np.cos(np.radians(h_mean - 30))
        + 0.24 * np.cos(np.radians(2 * h_mean))
        + 0.32 * np.cos(np.radians(3 * h_mean + 6))
        - 0.20 * np.cos(np.radians(4 * h_mean - 63))
    )
    l_mean, c_mean = (l1 + l2) / 2, (c1 + c2) / 2
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / np.sqrt(20 + (l_mean - 50) ** 2)
    s_c, s_h = 1 + 0.045 * c_mean, 1 + 0.015 * c_mean * t
    rotation = (
        -np.sin(np.radians(60 * np.exp(-(((h_mean - 275) / 25) ** 2)))) * 2 * np.sqrt(c_mean**7 / (c_mean**7 + 25.0**7))
    )
    dl, dc, dh_ = (l2 - l1) / (lightness_weight * s_l), (c2 - c1) / s_c, d_hue / s_h
    return np.asarray(np.sqrt(dl**2 + dc**2 + dh_**2 + rotation * dc * dh_))
