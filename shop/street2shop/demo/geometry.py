"""Garment outlines in "body units": a dress's, and the body landmarks and arms every garment is cut to.

Origin at the base of the neck, y down, the figure ~5u tall; a shape looks the same at any photo size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from shop.street2shop.demo.plan import LENGTHS, Dress

Point = tuple[float, float]

HEAD_CENTRE: Point = (0.0, -0.68)
BUST_Y, WAIST_Y, HIP_Y = 0.5, 1.05, 1.5
ANKLE_Y, SOLE_Y = 3.72, 3.86
SHOULDER_JOINT: Point = (0.6, 0.2)
ELBOW: Point = (0.76, 1.05)
WRIST: Point = (0.8, 1.82)

# How much a dress's skirt folds below the hip: a flared cut folds more.
DRESS_FLARE = {"sheath": 0.0, "shift": 0.2, "empire": 0.6, "a-line": 0.6, "fit-and-flare": 1.0}


@dataclass(frozen=True)
class Shape:
    """A garment's outline and what shading and details need to know about its cut."""

    body: list[Point]
    sleeves: list[list[Point]]
    seam_y: float | None  # a visible seam across the garment, if the cut has one
    profile: list[Point]  # half-widths down the right side, y increasing
    flare: float  # 0 (hangs straight) .. 1+ (deep folds)
    folds_y: float  # where the folds start
    fold_width: float = 0.28  # a fold's width as a share of the half-width
    lines: tuple[list[Point], ...] = ()  # further details: waistband, pleats, a wrap's overlap

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


def neckline_points(neckline: str) -> list[Point]:
    """The right half of the neckline from the centre front up to the neck edge."""
    if neckline == "v-neck":
        return [(0.0, 0.56), (0.2, 0.02)]
    if neckline == "square":
        return [(0.0, 0.32), (0.21, 0.32), (0.21, 0.02)]
    depth, edge = (0.22, 0.19) if neckline == "round" else (0.09, 0.34)
    return [(edge * math.sin(a), depth * math.cos(a)) for a in np.linspace(0, math.pi / 2, 7)]


def bodice_top(neckline: str, sleeves: str) -> list[Point]:
    """The right half of a bodice's top edge, centre front to underarm."""
    if neckline == "strapless":
        return [(0.0, 0.32), (0.25, 0.3), (0.46, 0.34)]
    shoulder_x = 0.5 if sleeves == "sleeveless" else 0.6
    return [*neckline_points(neckline), (shoulder_x, 0.1), (0.49, 0.26)]


def mirrored(right: list[Point]) -> list[Point]:
    """A symmetric outline from its right half (centre top to centre bottom)."""
    return right + [(-x, y) for x, y in reversed(right)]


def hem_curve(hem_half: float, hem: float) -> list[Point]:
    # The hem bows down a little at the centre, as fabric hangs.
    return [(hem_half * t, hem + 0.07 * (1 - t * t)) for t in np.linspace(1, 0, 8)[1:]]


def dress_shape(dress: Dress) -> Shape:
    profile = side_profile(dress)
    hem, hem_half = LENGTHS[dress.length], profile[-1][0]
    body = mirrored(bodice_top(dress.neckline, dress.sleeves) + profile + hem_curve(hem_half, hem))
    sleeves = [] if dress.sleeves == "sleeveless" or dress.neckline == "strapless" else sleeve_polygons(dress.sleeves)
    seam = {"fit-and-flare": WAIST_Y, "empire": 0.68}.get(dress.silhouette)
    if dress.pattern == "colour-block":
        seam = seam or WAIST_Y
    return Shape(
        body=body,
        sleeves=sleeves,
        seam_y=seam,
        profile=profile,
        flare=DRESS_FLARE[dress.silhouette],
        folds_y=seam or HIP_Y,
    )


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


def sleeve_polygons(kind: str) -> list[list[Point]]:
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
