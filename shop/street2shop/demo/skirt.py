"""A skirt's outline (waist to hem, no bodice) and the plain top a figure wears with it, in body units."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shop.street2shop.demo.geometry import (
    BUST_Y,
    HIP_Y,
    WAIST_Y,
    Point,
    Shape,
    bodice_top,
    hem_curve,
    mirrored,
    sleeve_polygons,
)
from shop.street2shop.demo.plan import COLOURS, LENGTHS, Skirt

WAISTBAND_TOP, WAISTBAND_BOTTOM = WAIST_Y - 0.06, WAIST_Y + 0.06
# (waist, hip, hem growth per unit below the hip) half-widths, how much it folds and how finely.
SKIRT_CUTS: dict[str, tuple[float, float, float, float, float]] = {
    "pencil": (0.36, 0.5, -0.05, 0.0, 0.28),
    "a-line": (0.36, 0.52, 0.24, 0.6, 0.28),
    "pleated": (0.36, 0.56, 0.18, 0.9, 0.1),
    "circle": (0.35, 0.64, 0.4, 1.2, 0.3),
    "wrap": (0.37, 0.53, 0.14, 0.3, 0.28),
}
WRAP_TILT = 0.06  # a wrap skirt's hem drops towards the side its front panel ends
TOP_NECKLINES = ("round", "v-neck", "boat", "square")
TOP_SLEEVES = ("sleeveless", "cap", "short", "long")


def skirt_profile(skirt: Skirt) -> list[Point]:
    """Half-widths down the right side, from the top of the waistband to the hem."""
    hem = LENGTHS[skirt.length]
    waist, hip, growth, _flare, _fold = SKIRT_CUTS[skirt.silhouette]
    mid = ((waist + hip) / 2 + 0.02, (WAISTBAND_BOTTOM + HIP_Y) / 2)
    return [(waist, WAISTBAND_TOP), (waist, WAISTBAND_BOTTOM), mid, (hip, HIP_Y), (hip + growth * (hem - HIP_Y), hem)]


def skirt_shape(skirt: Skirt) -> Shape:
    profile = skirt_profile(skirt)
    hem, hem_half = LENGTHS[skirt.length], profile[-1][0]
    _waist, _hip, _growth, flare, fold = SKIRT_CUTS[skirt.silhouette]
    body = mirrored([(0.0, WAISTBAND_TOP), *profile, *hem_curve(hem_half, hem)])
    if skirt.silhouette == "wrap":
        # Drop the hem steadily from right to left, so the front panel's edge hangs lower.
        body = [(x, y + WRAP_TILT * (1 - x / hem_half) if y > HIP_Y else y) for x, y in body]
    seam = (WAISTBAND_BOTTOM + hem) / 2 if skirt.pattern == "colour-block" else None
    return Shape(
        body=body,
        sleeves=[],
        seam_y=seam,
        profile=profile,
        flare=flare,
        folds_y=WAISTBAND_BOTTOM if skirt.silhouette == "pleated" else HIP_Y - 0.2,
        fold_width=fold,
        lines=(_waistband(profile[0][0]), *_cut_lines(skirt, profile)),
    )


def _waistband(waist: float) -> list[Point]:
    return [(-waist, WAISTBAND_BOTTOM), (waist, WAISTBAND_BOTTOM)]


def _cut_lines(skirt: Skirt, profile: list[Point]) -> list[list[Point]]:
    """Pleats from waistband to hem, or a wrap skirt's overlapping front edge and its tie."""
    waist, hem_half, hem = profile[0][0], profile[-1][0], LENGTHS[skirt.length]
    if skirt.silhouette == "pleated":
        ts = np.linspace(-1, 1, 11)[1:-1]
        return [[(waist * t, WAISTBAND_BOTTOM), (hem_half * t, hem + 0.07 * (1 - t * t))] for t in ts]
    if skirt.silhouette == "wrap":
        knot = (waist * 0.55, WAISTBAND_BOTTOM)
        end = (-hem_half * 0.3, hem + 0.07 * 0.91 + WRAP_TILT * 1.3 - 0.02)
        ties = [[knot, (knot[0] + dx, WAISTBAND_BOTTOM + 0.32)] for dx in (-0.05, 0.06)]
        return [[knot, ((knot[0] + end[0]) / 2 + 0.05, (knot[1] + end[1]) / 2), end], *ties]
    return []


@dataclass(frozen=True)
class Top:
    """The plain top a figure wears over a skirt; printed like a solid garment."""

    colour: str
    neckline: str
    sleeves: str

    @property
    def pattern(self) -> str:
        return "solid"

    @property
    def accent(self) -> str:
        return self.colour

    @property
    def motif_seed(self) -> int:
        return 0


def random_top(rng: np.random.Generator, skirt: Skirt) -> Top:
    """A top in a colour the skirt does not have, so the outfit never reads as one dress."""
    colours = [c for c in [*COLOURS, "white"] if c not in (skirt.colour, skirt.accent)]
    return Top(
        colour=colours[int(rng.integers(len(colours)))],
        neckline=TOP_NECKLINES[int(rng.integers(len(TOP_NECKLINES)))],
        sleeves=TOP_SLEEVES[int(rng.integers(len(TOP_SLEEVES)))],
    )


def top_shape(top: Top) -> Shape:
    """Neckline to just below the waistband, where the skirt covers it."""
    profile = [(0.46, 0.42), (0.46, BUST_Y), (0.36, WAIST_Y - 0.1), (0.34, WAIST_Y + 0.02)]
    body = mirrored(bodice_top(top.neckline, top.sleeves) + profile + [(0.0, WAIST_Y + 0.02)])
    sleeves = [] if top.sleeves == "sleeveless" else sleeve_polygons(top.sleeves)
    return Shape(body=body, sleeves=sleeves, seam_y=None, profile=profile, flare=0.0, folds_y=WAIST_Y)
