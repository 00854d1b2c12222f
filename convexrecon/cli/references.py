"""The classical references beside a trained model: zero-filled, SENSE-CG and L1-wavelet CS.

``train`` prints them under its own table on the validation slices, against the same reference (``--reference``:
the files' ``reconstruction_rss`` by default, as ``prepare`` and ``evaluate``, or the fully sampled SENSE target);
``evaluate`` adds them to every file's row, against its reference, with each file's own sampling. A model's score
is never read without the classical methods next to it. The scores are computed once and cached as one JSON file
in the cache directory (keyed by the settings, the files' names and k-space digests, the reference images, the λ
grid and the iterations); a later run on the same data, or on a copy of it in another directory, reads them back.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from convexrecon.cli.common import markdown_table
from convexrecon.data.fastmri import FastMRIVolume
from convexrecon.data.digest import kspace_digest
from convexrecon.data.mapcache import MapCache
from convexrecon.data.problems import slice_problems
from convexrecon.io import write_text
from convexrecon.metrics import evaluate
from convexrecon.mri.classical import LAMBDA_GRID, cross_validated_images, cross_validated_table, problem_from_kspace
from convexrecon.mri.fft import center_crop
from convexrecon.recon import mask_func_of, volume_masks
from convexrecon.stack.modelfiles import read_config

CLASSICAL_ITERATIONS = 100  # L1-wavelet iterations, as `prepare`'s default


def rss_references(dataset: Any, slices: Sequence[tuple[str | Path, int]], crop: int) -> list[np.ndarray]:
    """Each slice's ``reconstruction_rss`` (physical scale), centre-cropped to ``crop × crop``: the reference of
    ``--reference rss``. ``slices``: ``(file, slice index)`` pairs of files of ``dataset`` (by name). ``ValueError``
    naming the flag to change when a file has no ``reconstruction_rss`` or holds a smaller one than ``crop``."""
    by_name = {Path(path).name: volume for path, volume in dataset.volumes.items()}
    images = []
    for path, index in slices:
        name = Path(path).name
        rss = by_name[name].rss(int(index))
        if rss is None:
            raise ValueError(no_rss(name))
        if min(rss.shape[-2:]) < crop:
            raise ValueError(f"argument --crop: the reconstruction_rss of {name} is {rss.shape[-2]}x{rss.shape[-1]}, "
                             f"smaller than --crop {crop}; use --crop {min(rss.shape[-2:])} or --reference sense.")
        images.append(np.asarray(center_crop(rss, (crop, crop))))
    return images


def no_rss(name: str) -> str:
    """The usage error of ``--reference rss`` for a file without ``reconstruction_rss``."""
    return f"argument --reference: rss needs 'reconstruction_rss'; {name} has none (use --reference sense)."


def _images_digest(images: Any) -> str:
    """SHA-256 of a sequence of images as float32 bytes (part of a cache key)."""
    return hashlib.sha256(b"".join(np.ascontiguousarray(r, np.float32).tobytes() for r in images)).hexdigest()


def _key(dataset: Any, pairs: Sequence[tuple[Path, int]], grid: Sequence[float], max_iter: int,
         references: Sequence[np.ndarray] | None) -> str:
    files = sorted({Path(p) for p, _ in pairs})
    ident = {"settings": dataset.settings(), "grid": [float(g) for g in grid], "max_iter": int(max_iter),
             "slices": [[Path(p).name, int(s)] for p, s in pairs],
             "files": [[f.name, kspace_digest(f, getattr(dataset, "cache_root", None))] for f in files]}
    if references is not None:  # scored against given images (RSS): their content is part of the key
        ident["references"] = _images_digest(references)
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def validation_references(dataset: Any, pairs: Sequence[tuple[Path, int]], cache_dir: Path | None,
                          grid: Sequence[float] = LAMBDA_GRID, max_iter: int = CLASSICAL_ITERATIONS,
                          references: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
    """``{"table": {method: {convention: {metric: {"mean", "std", "n"}}}}, "lambdas", "how", "cached"}`` of the
    classical references on ``pairs`` (:func:`~convexrecon.mri.classical.cross_validated_table`: λ chosen without
    the scored volume), against ``references`` (physical ``(crop, crop)`` magnitudes, one per pair, e.g.
    :func:`rss_references`; None: the SENSE targets), read from the cache when an earlier run computed them."""
    directory = getattr(dataset, "cache_dir", None)
    key = _key(dataset, pairs, grid, max_iter, references)
    entry = None if directory is None else Path(directory) / f"classical-{key}.json"
    if entry is not None and entry.is_file():
        try:
            payload = json.loads(entry.read_text())
            if {"table", "lambdas", "how"} <= set(payload):
                return {**payload, "cached": True}
        except (OSError, ValueError):
            pass  # unreadable: computed again and rewritten
    problems = slice_problems(dataset, pairs, cache_dir)
    table, lambdas, how = cross_validated_table(problems, grid, max_iter, references, progress=True)
    payload = {"table": {m: {c: {k: vars(v) for k, v in r.items()} for c, r in res.items()} for m, res in table.items()},
               "lambdas": lambdas, "how": how}
    if entry is not None:
        try:
            write_text(entry, json.dumps(payload))
        except OSError:
            pass  # a read-only cache costs time, not results
    return {**payload, "cached": False}


def references_table(model: dict[str, float], refs: dict[str, Any], reference: str = "sense") -> str:
    """The model's validation scores (``val_psnr``/``val_ssim`` slice-wise, ``val_psnr_volume``/``val_ssim_volume``)
    in one Markdown table with the classical references (all against ``reference``, ``"rss"`` or ``"sense"``), and
    a loud line when a reference beats the model."""
    table = refs["table"]
    rows = [["model", f"{model['val_psnr_volume']:.2f}", f"{model['val_ssim_volume']:.4f}",
             f"{model['val_psnr']:.2f}", f"{model['val_ssim']:.4f}"]]
    labels = {"zero-filled": "zero-filled SENSE", "SENSE-CG": "SENSE-CG (10 CG iterations)",
              "L1-wavelet": "L1-wavelet CS"}
    for method, label in labels.items():
        v, s = table[method]["volume"], table[method]["slice"]
        rows.append([label, f"{v['psnr']['mean']:.2f}", f"{v['ssim']['mean']:.4f}", f"{s['psnr']['mean']:.2f}",
                     f"{s['ssim']['mean']:.4f}"])
    lambdas = ", ".join(f"{name}: {lam:g}" for name, lam in refs["lambdas"].items())
    what = {"rss": "the files' reconstruction_rss", "sense": "the fully sampled SENSE target"}[reference]
    text = [f"The model beside the classical references on the same validation slices and reference ({what}); "
            f"L1-wavelet λ chosen {refs['how']} ({lambdas})"
            f"{'; read from the cache' if refs.get('cached') else ''}:", "",
            markdown_table(["method", "PSNR (dB), volume-wise", "SSIM, volume-wise", "PSNR (dB), slice-wise",
                            "SSIM, slice-wise"], rows)]
    best = max(labels, key=lambda m: table[m]["slice"]["psnr"]["mean"])
    margin = model["val_psnr"] - table[best]["slice"]["psnr"]["mean"]
    if margin < 0:
        text.append(f"NOTE: the model is {-margin:.2f} dB below {labels[best]} (slice-wise PSNR) on the validation "
                    f"slices.")
    return "\n".join(text)


def _read_cached(entry: Path) -> dict[str, Any] | None:
    try:
        payload = json.loads(entry.read_text())
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) and {"files", "lambdas", "how"} <= set(payload) else None


def file_references(references: dict[str, np.ndarray], data_dir: Path, model_dir: Path, cache_dir: Path,
                    reference: str, grid: Sequence[float] = LAMBDA_GRID,
                    max_iter: int = CLASSICAL_ITERATIONS) -> dict[str, Any]:
    """SENSE-CG and L1-wavelet CS scores of every file of ``references`` (name → physical ``(slices, side, side)``
    reference images), each slice undersampled as ``reconstruct`` did (the file's own sampling, else the mask of the
    model in ``model_dir``); λ chosen without the scored file (:func:`cross_validated_images`).

    Returns ``{"files": {name: {method: {convention: {metric: mean}}}}, "lambdas", "how", "cached"}``.

    Raises
    ------
    FileNotFoundError, ValueError
        When the model directory (its ``config.json``) cannot be read.
    """
    _, config = read_config(model_dir)
    mask_func = mask_func_of(config)
    paths = [Path(data_dir) / name for name in references]
    ident = {"reference": reference, "grid": [float(g) for g in grid], "max_iter": int(max_iter),
             "mask": config.get("data", {}), "sides": {n: list(r.shape) for n, r in references.items()},
             "files": [[p.name, kspace_digest(p, cache_dir)] for p in paths],
             "references": _images_digest(references[p.name] for p in paths)}
    entry = Path(cache_dir) / "classical" / f"{hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]}.json"
    cached = _read_cached(entry) if entry.is_file() else None
    if cached is not None:
        return {**cached, "cached": True}
    cache = MapCache(cache_dir)
    problems, targets = [], []
    for path in paths:
        volume = FastMRIVolume(path)
        side = references[path.name].shape[-1]
        for s, mask in enumerate(volume_masks(volume, mask_func, cache_dir)):
            kspace = volume.kspace(s) * mask
            limit = mask_func.calibration_limit(mask.shape)
            maps = cache.maps(path, s, kspace, mask, limit, None)
            problems.append(problem_from_kspace(kspace, mask, limit, side, maps=maps, fname=path.name,
                                                slice_index=s))
            targets.append(references[path.name][s])
    images, lambdas, how = cross_validated_images(problems, grid, max_iter, targets, progress=True)
    names = [p.fname for p in problems]
    files: dict[str, Any] = {}
    for name in references:
        keep = [i for i, n in enumerate(names) if n == name]
        files[name] = {m: {"volume": {k: v.mean for k, v in evaluate([targets[i] for i in keep],
                                                                     [images[m][i] for i in keep],
                                                                     [name] * len(keep), "volume").items()}}
                       for m in ("SENSE-CG", "L1-wavelet")}
    for m in ("SENSE-CG", "L1-wavelet"):
        files.setdefault("__overall__", {})[m] = {c: {k: v.mean for k, v in evaluate(targets, images[m], names,
                                                                                     c).items()}
                                                  for c in ("volume", "slice")}
    payload = {"files": files, "lambdas": lambdas, "how": how}
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        write_text(entry, json.dumps(payload))
    except OSError:
        pass  # a read-only cache costs time, not results
    return {**payload, "cached": False}
