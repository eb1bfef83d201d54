"""What the worker reads off a shop photo besides its features: the garment's colours and signature.

Both come from one small sample of the photo and one garment mask (similarity.colour), so the
extra work per photo stays a few percent of the backbone's forward pass (bench_worker_extras.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from similarity.colour import GarmentColours, colours_of, garment_weights, srgb_to_lab, work_sample

SIGNATURE_SIDE = 8
SIGNATURE_DIM = 3 * SIGNATURE_SIDE * SIGNATURE_SIDE


@dataclass(frozen=True)
class GarmentReading:
    colours: GarmentColours
    # The garment's box shrunk to 8×8 in CIELAB: two listings of one photo (re-encoded, resized,
    # re-cropped) lie a few units apart, other garments further (benchmarks/bench_duplicates.py).
    signature: np.ndarray


def read_garment(photo: Image.Image, model_input: Image.Image | None = None) -> GarmentReading:
    """The garment's colours and signature from one decoded photo.

    The colours are read off the photo itself, point-sampled, because a smoothed copy blends the
    two colours of a stripe or check into a third; the signature is read off ``model_input`` (the
    backbone's small input, made anyway; default: the photo), whose smoothing it wants.
    """
    if photo.width == 0 or photo.height == 0:
        raise ValueError("Cannot read an empty image.")
    lab = srgb_to_lab(work_sample(photo))
    weights = garment_weights(lab)
    small = photo if model_input is None else model_input
    return GarmentReading(colours_of(lab, weights), garment_signature(small, garment_box(weights, small.size)))


def garment_box(weights: np.ndarray, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The garment's box in the photo's pixels (fractional): where its mask's mass starts and ends
    along each axis (TRIM of it cut off each end), interpolated within sample pixels.

    Boxing the garment is what makes the signature indifferent to a re-crop or a border added
    around the same photo. Mass quantiles, unlike the mask's extreme pixels, ignore a stray speck
    or a hanger's hook. Without a garment found (a busy background) the box is the whole photo.
    """
    mask = (weights > 0.5).astype(np.float64)
    total = mask.sum()
    if total == 0 or total == mask.size:
        return (0.0, 0.0, float(size[0]), float(size[1]))
    (x0, x1), (y0, y1) = (_mass_range(mask.sum(axis=axis) / total) for axis in (0, 1))
    return (x0 * size[0], y0 * size[1], max(x1, x0 + 1e-3) * size[0], max(y1, y0 + 1e-3) * size[1])


# The share of the mask cut off each end of an axis: 1 % measured best (bench_duplicates.py; 0 % and 3 % did worse).
TRIM = 0.01


def _mass_range(profile: np.ndarray) -> tuple[float, float]:
    """Where the cumulative mass of a 1-D profile reaches TRIM and 1 - TRIM, as fractions of its length."""
    edges = np.concatenate([[0.0], np.cumsum(profile)])
    positions = np.linspace(0.0, 1.0, len(edges))
    start, end = np.interp([TRIM, 1.0 - TRIM], edges, positions)
    return float(start), float(end)


def garment_signature(image: Image.Image, box: tuple[float, float, float, float]) -> np.ndarray:
    """The box averaged down to 8×8 in CIELAB, as 192 float32 scaled so that the Euclidean distance
    between two signatures is the root-mean-square colour difference (ΔE76) of their cells."""
    # resize's own box: fractional edges, where a crop would round them to whole pixels (1 % of a
    # garment 100 px wide moves every cell's edge, enough to part two copies of one photo).
    small = image.convert("RGB").resize((SIGNATURE_SIDE, SIGNATURE_SIDE), Image.Resampling.BOX, box=box)
    lab = srgb_to_lab(np.asarray(small)).reshape(-1)
    return (lab / SIGNATURE_SIDE).astype(np.float32)


def signature_distances(signature: np.ndarray, signatures: np.ndarray) -> np.ndarray:
    """RMS colour difference between one signature and each row of ``signatures``."""
    if not len(signatures):
        return np.zeros(0)
    difference = np.asarray(signatures, dtype=np.float32) - np.asarray(signature, dtype=np.float32)[None, :]
    distances: np.ndarray = np.sqrt(np.einsum("ij,ij->i", difference, difference))
    return distances
