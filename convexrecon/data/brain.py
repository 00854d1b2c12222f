"""Axial T2-weighted brain-like anatomy: the second family of subjects.

A family with different structures and image statistics from the knee
(:mod:`convexrecon.data.knee`), so that a model trained on one can be tested on
the other: a closed, rounded head fully inside the field of view (no anatomy
crossing the readout edges), bright cerebrospinal fluid, a folded grey-matter
ribbon around white matter, no bone marrow network and no muscle fibres.
The head is drawn at a 220 mm field of view (fastMRI brain's order), so one
millimetre is :data:`BRAIN_MM` grid units; ``z`` runs inferior (-1) to superior (1).

Structures: scalp (skin, fat with septa, temporalis muscle at the sides); skull
(outer and inner tables, fatty diploë with texture); subarachnoid fluid;
cortex 2–3 mm thick following a sulcal pattern (meandering sulci of varying
depth, each a thin fluid line lined by grey matter); the interhemispheric
fissure; white matter with perivascular spaces; in middle slices the lateral
ventricles, caudate, putamen and thalamus.

Relative intensities are those of a T2-weighted turbo-spin-echo image
(cerebrospinal fluid brightest, grey matter brighter than white matter,
scalp fat bright, bone dark), typical values rather than a relaxation model.
"""

from __future__ import annotations

import numpy as np

from convexrecon.data.tissue import (
    Canvas,
    Painter,
    chord,
    ellipse,
    fractal_field,
    gaussian_field,
    inside,
    level_distance,
    slow_field,
    thin_line,
    wave,
)

BRAIN_MM = 1 / 110.0  # one millimetre in grid units at a 220 mm field of view

# T2-weighted TSE, relative to cerebrospinal fluid.
CONTRAST = {
    "csf": 1.0, "fat": 0.78, "grey": 0.56, "white": 0.38, "skin": 0.45, "muscle": 0.26, "diploe": 0.5,
    "bone": 0.03, "caudate": 0.52, "putamen": 0.44, "thalamus": 0.47,
}


def _around(rng: np.random.Generator, theta: np.ndarray, modes: int, max_order: int) -> np.ndarray:
    """Smooth random function of the angle ``theta``, periodic (integer orders), unit scale."""
    out = np.zeros_like(theta)
    for _ in range(modes):
        k, p, a = rng.integers(1, max_order + 1), rng.uniform(0, 2 * np.pi), rng.standard_normal() / np.sqrt(modes)
        out += a * np.cos(k * theta + p)
    return out


def brain_slice(canvas: Canvas, subject: int, z: float, texture: np.random.Generator) -> np.ndarray:
    """Magnitude of one axial brain-like slice on ``canvas`` (cerebrospinal fluid = 1).

    Parameters
    ----------
    canvas : Canvas
        Fine grid to draw on.
    subject : int
        Subject seed: head shape, skull, sulcal pattern and nuclei are functions of it.
    z : float
        Slice position, inferior (-1) to superior (1); anatomy changes continuously with it.
    texture : numpy.random.Generator
        Source of this slice's fine texture.

    Returns
    -------
    numpy.ndarray
        ``canvas.shape`` float32, non-negative.
    """
    mm, px = BRAIN_MM, canvas.px
    rng = np.random.default_rng([subject, 23])
    size = rng.uniform(0.9, 1.02) * np.sqrt(max(1 - (z / 1.35) ** 2, 0.2))
    y, x = canvas.y - rng.normal(0, 0.03), canvas.x - rng.normal(0, 0.03)
    theta = np.arctan2(y, x)
    paint = Painter(canvas.shape)

    # Scalp and skull: layers inwards from the head outline, thicknesses varying around the head.
    lobes = 0.025 * _around(rng, theta, 4, 5) + 0.03 * np.cos(2 * theta) * rng.uniform(-1, 1)
    d_head = ellipse(y, x, 0.0, 0.0, 0.84 * size, 0.68 * size) - lobes
    temporal = np.exp(-((np.abs(y) / 0.35) ** 2)) * (np.abs(x) > 0.3)
    layers = [("skin", 1.5 * mm), ("fat", (3.5 + 1.5 * _around(rng, theta, 3, 4)) * mm),
              ("muscle", 0.3 * mm + 6 * mm * temporal), ("bone", 1.6 * mm),
              ("diploe", (2.5 + 1.2 * _around(rng, theta, 3, 4)) * mm), ("bone", 1.4 * mm),
              ("csf", (1.8 + 0.8 * _around(rng, theta, 3, 6)) * mm)]
    septa = thin_line(level_distance(gaussian_field(texture, canvas.shape, px, 1.5 * mm, 2.0), px), 0.1 * mm, px)
    speckle = gaussian_field(texture, canvas.shape, px, 0.5 * mm)
    depth = 0.0
    for name, thickness in layers:
        value = CONTRAST[name] * (1 - 0.4 * septa if name == "fat" else 1 + (0.15 * speckle if name == "diploe" else 0))
        paint.paint(inside(d_head + depth, px), value, 0.05)
        depth = depth + thickness
    d_brain = d_head + depth  # negative inside the brain

    # Cortex and sulci: meandering radial sulci of varying depth, each lined with grey matter.
    inward = -d_brain
    warp = theta + 0.2 * slow_field(rng, canvas, z, 20 * mm)
    phase = rng.integers(13, 18) * warp + 3.0 * slow_field(rng, canvas, z, 9 * mm)
    sulcus = np.abs(level_distance(np.sin(phase), px))
    reach = np.clip(11 + 6 * slow_field(rng, canvas, z, 6 * mm), 2, 20) * mm
    ribbon = rng.uniform(2.2, 2.9) * mm
    paint.paint(inside(d_brain, px), CONTRAST["white"], 0.04)
    grey = np.minimum(inward - ribbon, np.maximum(sulcus - ribbon - 0.4 * mm, inward - reach - ribbon))
    paint.paint(inside(grey, px) * inside(d_brain, px), CONTRAST["grey"], 0.06)
    fluid = np.maximum(sulcus - 0.45 * mm, inward - reach)
    paint.paint(inside(fluid, px) * inside(d_brain, px), CONTRAST["csf"], 0.02)

    # Interhemispheric fissure, front and back, lined with grey matter.
    midline = np.abs(x - 0.02 * wave(rng, y, 3, 1.0))
    fissure_reach = np.where(y < 0, 0.42, 0.38) * size
    front_back = 0.84 * size - fissure_reach * (1 + 0.4 * abs(z)) - np.abs(y)  # < 0 where the fissure runs
    cut = np.maximum(midline - 0.6 * mm, front_back)
    lining = np.maximum(midline - 0.6 * mm - ribbon, front_back - ribbon)
    paint.paint(inside(lining, px) * inside(d_brain, px), CONTRAST["grey"], 0.06)
    paint.paint(inside(cut, px) * inside(d_brain, px), CONTRAST["csf"], 0.02)

    # Perivascular spaces: sparse bright dots in the white matter.
    spaces = inside(-level_distance(gaussian_field(texture, canvas.shape, px, 0.6 * mm) - 2.9, px), px)
    paint.paint(spaces * inside(d_brain + 8 * mm, px), CONTRAST["csf"] * 0.8, 0.0)

    # Deep grey nuclei and lateral ventricles in middle slices.
    nuclei, ventricles = chord(z, -0.15, 0.35), chord(z, 0.05, 0.35)
    shift = rng.normal(0, 0.01, size=4)
    for sign in (-1.0, 1.0):
        if nuclei > 0:
            for name, cy, cx, ry, rx in (("caudate", -0.22, 0.15, 0.09, 0.05), ("putamen", -0.04, 0.27, 0.15, 0.05),
                                         ("thalamus", 0.14, 0.1, 0.12, 0.085)):
                shape = ellipse(y, x, cy + shift[0], sign * (cx + shift[1]), ry * nuclei + 1e-3, rx * nuclei + 1e-3)
                paint.paint(inside(shape, px), CONTRAST[name], 0.04)
        if ventricles > 0:
            bend = sign * (0.085 + shift[2] + 0.25 * (y + 0.05) ** 2)
            horn = ellipse(y, x - bend, -0.06 + shift[3], 0.0, 0.3 * ventricles + 1e-3, 0.045 * ventricles + 1e-3)
            paint.paint(inside(horn, px), CONTRAST["csf"], 0.02)

    return paint.render(fractal_field(texture, canvas.shape, px, exponent=3.0, largest=0.5))
