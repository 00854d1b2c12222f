"""Coronal proton-density knee-like anatomy (the default family of the synthetic data set).

One slice of :func:`knee_slice` is a coronal cut through a knee, the view of
fastMRI's ``CORPD_FBK`` scans: femur above, tibia below (``y`` increases
inferiorly), medial–lateral along ``x``; the slice position ``z`` in
``[-1, 1]`` runs anterior to posterior (about ±40 mm).

Structures, drawn as signed distance functions with partial-volume edges:

* limb outline with skin and a subcutaneous fat layer of varying thickness,
  lobulated by fine fibrous septa;
* muscle bellies (anisotropic fibre texture, a few fatty streaks) separated by
  fat planes and fascia, more muscle away from the joint line;
* femur (shaft, flare, two condyles, intercondylar notch in mid and posterior
  slices), tibia (plateau, spines, shaft) and, posteriorly, the fibular head:
  cortical shell (thin at the epiphyses, thick along the shafts), fatty marrow
  with a trabecular network (dense near the joint, sparse in the shafts),
  red-marrow islands and the physeal scar;
* hyaline cartilage on the articular surfaces, brighter towards the surface;
* joint fluid, the two menisci (dark wedges at the joint margins), cruciate
  and collateral ligaments (dark bands);
* popliteal artery (flow void) and vein posteriorly, small genicular vessels.

Relative intensities are those of a proton-density turbo-spin-echo knee
image without fat saturation (fat brightest; marrow a little darker; fluid and
cartilage intermediate; muscle darker; menisci, ligaments and cortical bone
near zero). They are typical relative values read from clinical images, not a
relaxation simulation. Every tissue carries a ``|k|^-3`` texture field (its
amplitude set per tissue), so the image has texture at every scale.
"""

from __future__ import annotations

import numpy as np

from convexrecon.data.tissue import (
    MM,
    Canvas,
    Painter,
    capsule,
    chord,
    ellipse,
    flare,
    fractal_field,
    gaussian_field,
    inside,
    level_distance,
    slow_field,
    smooth_min,
    smoothstep,
    thin_line,
    triangle,
    wave,
)

# Proton-density TSE, relative to subcutaneous fat.
CONTRAST = {
    "fat": 1.0, "marrow": 0.86, "fluid": 0.72, "cartilage": 0.55, "skin": 0.5, "muscle": 0.36,
    "meniscus": 0.07, "ligament": 0.12, "cortex": 0.04, "artery": 0.05, "vein": 0.6,
}


def _femur(y: np.ndarray, x: np.ndarray, z: float, size: float, width: float) -> np.ndarray:
    """Shaft flaring into two condyles; the shaft leaves the slice posteriorly, a notch opens."""
    shaft = 0.19 * size * max(chord(z, -0.15, 0.5), 0.05)
    condyle = chord(z, 0.05, 1.0)
    cs, rx, ry = 0.27 * width, 0.25 * width * (0.5 + 0.5 * condyle), 0.2 * (0.6 + 0.4 * condyle)
    top = -0.78 + 0.45 * (1 - shaft / (0.19 * size))
    t = (y - top) / (-0.2 - top)
    half = shaft + (cs + rx - shaft) * smoothstep(t)
    slope = (cs + rx - shaft) * 6 * np.clip(t, 0, 1) * (1 - np.clip(t, 0, 1)) / (-0.2 - top)
    metaphysis = np.maximum(flare(y, x - 0.015 * y, half, slope), y + 0.2)
    condyles = smooth_min(ellipse(y, x, -0.2, -cs, ry + 0.01, rx), ellipse(y, x, -0.195, cs, ry, rx * 0.97), 0.1)
    femur = smooth_min(metaphysis, condyles, 0.06)
    notch = float(np.clip((z + 0.35) / 0.4, 0.0, 1.0))
    if notch > 0:
        femur = -smooth_min(-femur, ellipse(y, x, -0.03, 0.01, 0.15, 0.075 * notch + 1e-3), 0.02)
    return femur


def _tibia(y: np.ndarray, x: np.ndarray, z: float, size: float, half: float) -> np.ndarray:
    """Plateau (slightly dished under the condyles) narrowing into the shaft, spines in mid slices."""
    shaft = 0.18 * size * max(chord(z, -0.1, 0.55), 0.3)
    t = (y - 0.12) / 0.45
    width = shaft + (half - shaft) * (1 - smoothstep(t))
    slope = (half - shaft) * 6 * np.clip(t, 0, 1) * (1 - np.clip(t, 0, 1)) / 0.45
    top = 0.065 + 0.012 * np.exp(-(((np.abs(x) - 0.27) / 0.12) ** 2))
    tibia = -smooth_min(-flare(y, x - 0.02 * y, width, slope), -(top - y), 0.035)
    if z > -0.25:
        spines = np.minimum(ellipse(y, x, 0.075, -0.05, 0.04, 0.03), ellipse(y, x, 0.075, 0.055, 0.035, 0.03))
        tibia = smooth_min(tibia, spines, 0.03)
    return tibia


def knee_slice(canvas: Canvas, subject: int, z: float, texture: np.random.Generator) -> np.ndarray:
    """Magnitude of one coronal knee-like slice on ``canvas`` (fat = 1).

    Parameters
    ----------
    canvas : Canvas
        Fine grid to draw on.
    subject : int
        Subject seed: anatomy (sizes, shapes, muscle layout, vessels) is a function of it.
    z : float
        Slice position, anterior (-1) to posterior (1); anatomy changes continuously with it.
    texture : numpy.random.Generator
        Source of this slice's fine texture (fibres, trabeculae, septa).

    Returns
    -------
    numpy.ndarray
        ``canvas.shape`` float32, non-negative.
    """
    rng = np.random.default_rng([subject, 17])
    px = canvas.px
    size, width = rng.uniform(0.9, 1.06), rng.uniform(0.95, 1.05)
    tilt, y0, x0 = rng.normal(0, 0.04), rng.normal(0, 0.05), rng.normal(0, 0.04)
    c, s = np.cos(tilt), np.sin(tilt)
    y = c * (canvas.y - y0) - s * (canvas.x - x0)  # joint-centred, tilted coordinates
    x = s * (canvas.y - y0) + c * (canvas.x - x0)
    paint = Painter(canvas.shape)

    # Limb outline, skin and subcutaneous fat lobulated by fibrous septa.
    body = size * (0.8 + 0.05 * np.exp(-((y / 0.35) ** 2)) + 0.05 * wave(rng, y, 4, 0.6)) * (1 - 0.12 * z * z)
    side = np.where(x < 0, wave(rng, y + 3 * z, 4, 0.8), wave(rng, y - 3 * z, 4, 0.8))
    d_body = np.abs(x - 0.03 * wave(rng, y, 3, 0.4)) - body - 0.025 * side
    fat_depth = rng.uniform(4, 11) * MM * (1 + 0.35 * wave(rng, y + x, 4, 0.7)) * (1 + 0.3 * z)
    paint.paint(inside(d_body, px), CONTRAST["skin"], 0.05)
    septa_field = gaussian_field(texture, canvas.shape, px, 1.8 * MM, 3.0, np.pi / 2 + rng.normal(0, 0.2))
    septa = thin_line(level_distance(septa_field, px), 0.1 * MM, px)
    paint.paint(inside(d_body + 1.6 * MM, px), CONTRAST["fat"] * (1 - 0.4 * septa), 0.04)

    # Deep compartment: muscle bellies among fat planes; fewer near the joint line.
    deep = inside(d_body + 1.6 * MM + fat_depth, px)
    belly = slow_field(rng, canvas, z, 9 * MM, 3.0)
    threshold = -0.7 + 1.3 * np.exp(-((y / 0.24) ** 2)) - 0.4 * max(z, 0.0)
    muscle = inside(-level_distance(belly - threshold, px), px)
    fascia = thin_line(level_distance(slow_field(rng, canvas, z, 14 * MM, 4.0), px), 0.4 * MM, px)
    muscle = muscle * (1 - fascia)
    fibres = gaussian_field(texture, canvas.shape, px, 0.4 * MM, 8.0, rng.normal(0, 0.15))
    streaks = inside(-level_distance(gaussian_field(texture, canvas.shape, px, 0.6 * MM, 10.0) - 2.6, px), px)
    muscle_value = CONTRAST["muscle"] * (1 + 0.1 * fibres) * (1 - streaks) + 0.8 * CONTRAST["fat"] * streaks
    paint.paint(deep * (1 - muscle), CONTRAST["fat"], 0.04)
    paint.paint(deep * muscle, muscle_value, 0.06)

    # Bones.
    half = 0.57 * width * (0.45 + 0.55 * chord(z, 0.0, 0.95))  # tibial plateau half-width
    femur, tibia = _femur(y, x, z, size, width), _tibia(y, x, z, size, half)
    notch = float(np.clip((z + 0.35) / 0.4, 0.0, 1.0))

    # Joint: fluid, menisci, cruciate and collateral ligaments (bones and cartilage are drawn over them).
    joint = inside(np.maximum(np.abs(y - 0.02) - 0.1, np.abs(x) - half), px)
    paint.paint(joint * inside(-femur, px) * inside(-tibia, px), CONTRAST["fluid"], 0.03)
    if notch > 0:
        paint.paint(inside(ellipse(y, x, -0.03, 0.01, 0.16, 0.085 * notch + 1e-3), px), CONTRAST["fat"], 0.04)
    inner = 0.16 + 0.04 * z
    for sign in (-1.0, 1.0):
        outer = sign * (half - 0.01)
        wedge = triangle(y, x, [(-0.06, outer), (0.045, outer), (0.035, outer - sign * inner)])
        paint.paint(inside(wedge, px), CONTRAST["meniscus"] * (1 + 0.4 * np.abs(fibres)), 0.15)
    striation = 1 + 0.5 * np.clip(fibres, -1, 1)
    for weight, a, b, r in ((chord(z, 0.05, 0.3), (-0.1, 0.05), (0.07, -0.04), 0.028),
                            (chord(z, 0.35, 0.3), (-0.13, -0.05), (0.11, 0.03), 0.03)):
        if weight > 0:
            paint.paint(weight * inside(capsule(y, x, a, b, r), px), CONTRAST["ligament"] * striation, 0.1)
    mcl = capsule(y, x, (-0.28, -(half + 0.035)), (0.4, -(half - 0.03)), 0.011)
    paint.paint(inside(mcl, px) * deep, CONTRAST["ligament"], 0.1)
    if z > -0.3:
        lcl = capsule(y, x, (-0.16, half + 0.03), (0.38, 0.58 * size), 0.013)
        paint.paint(inside(lcl, px) * deep, CONTRAST["ligament"], 0.1)

    # Vessels: popliteal pair posteriorly, small genicular branches in the soft tissue.
    if z > 0.3:
        w = float(np.clip((z - 0.3) / 0.1, 0, 1))
        meander = 0.02 * wave(rng, y, 3, 1.0)
        paint.paint(w * inside(np.abs(x - 0.06 - meander) - 0.032, px), CONTRAST["artery"], 0.0)
        paint.paint(w * inside(np.abs(x - 0.15 - meander) - 0.038, px), CONTRAST["vein"], 0.05)
    for _ in range(int(rng.integers(6, 11))):
        ay, ax = rng.uniform(-0.8, 0.8), rng.choice([-1, 1]) * rng.uniform(0.35, 0.8)
        length, angle, drift = rng.uniform(0.04, 0.2), rng.uniform(0, np.pi), rng.normal(0, 0.15)
        radius, value = rng.uniform(0.35, 1.0) * MM, CONTRAST["artery"] if rng.uniform() < 0.5 else CONTRAST["vein"]
        weight = chord(z, rng.uniform(-0.6, 0.6), 0.5)
        by, bx = ay + length * np.cos(angle), ax + length * np.sin(angle)
        margin = radius + 0.06
        region = canvas.window((min(ay, by) + y0 - margin, max(ay, by) + y0 + margin),
                               (min(ax, bx) + x0 - drift * z - margin, max(ax, bx) + x0 - drift * z + margin))
        if weight > 0:
            vessel = capsule(y[region], x[region] + drift * z, (ay, ax), (by, bx), radius)
            paint.paint(weight * inside(vessel, px) * deep[region], value, 0.0, region)

    # Cartilage on the condyles and the plateau, brighter towards the articular surface.
    depth_f, depth_t = rng.uniform(1.8, 2.6) * MM, rng.uniform(1.6, 2.4) * MM
    articular_f = np.clip((y + 0.14) / 0.04, 0, 1)
    if notch > 0:
        articular_f = articular_f * (1 - inside(ellipse(y, x, -0.03, 0.01, 0.17, 0.09 * notch + 1e-3), px))
    articular_t = np.clip((0.14 - y) / 0.03, 0, 1) * inside(np.abs(x) - half + 0.03, px)
    for bone, depth, region in ((femur, depth_f, articular_f), (tibia, depth_t, articular_t)):
        layer = inside(bone - depth, px) * inside(-bone, px) * region
        zone = np.clip(bone / depth, 0, 1)  # 0 at the bone, 1 at the articular surface
        paint.paint(layer, CONTRAST["cartilage"] * (0.8 + 0.35 * zone), 0.06)

    # Cortex and marrow: trabecular network (dense near the joint), red-marrow islands, physeal scar.
    trabeculae = thin_line(level_distance(gaussian_field(texture, canvas.shape, px, 0.3 * MM, 2.0), px), 0.08 * MM, px)
    rods = thin_line(level_distance(gaussian_field(texture, canvas.shape, px, 0.8 * MM, 3.0), px), 0.08 * MM, px)
    islands = inside(-level_distance(slow_field(rng, canvas, z, 3 * MM) - 1.3, px), px)
    bones = [(femur, -1.0, -0.32), (tibia, 1.0, 0.3)]
    fibula = chord(z, 0.5, 0.45)
    if fibula > 0.1:
        head = ellipse(y, x, 0.42, 0.56 * size, 0.085 * fibula, 0.075 * fibula)
        bones.append((smooth_min(head, capsule(y, x, (0.45, 0.57 * size), (4.0, 0.5 * size), 0.05 * fibula), 0.08), 1.0, 0.36))
    for bone, direction, physis in bones:
        shaftness = 1 / (1 + np.exp(-(direction * y - 0.6) / 0.08))
        cortex = (0.6 + 2.6 * shaftness) * MM
        density = 0.8 - 0.6 * shaftness
        scar = thin_line(y - physis - 0.015 * np.sin(9 * x + 3 * direction), 0.3 * MM, px)
        marrow = CONTRAST["marrow"] * (1 - density * (0.8 * trabeculae + 0.4 * rods)) * (1 - 0.3 * islands * (1 - shaftness))
        paint.paint(inside(bone, px), CONTRAST["cortex"], 0.1)
        paint.paint(inside(bone + cortex, px), marrow * (1 - 0.4 * scar), 0.05)

    # Intensity falls off beyond the coils' reach along the limb.
    fall = np.exp(-0.5 * (np.maximum(np.abs(canvas.y) - 1.15, 0) / 0.4) ** 2)
    return paint.render(fractal_field(texture, canvas.shape, px, exponent=3.0, largest=0.5)) * fall
