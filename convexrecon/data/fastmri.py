"""Lazy reader for fastMRI multi-coil HDF5 files.

A fastMRI multi-coil file holds

* ``kspace``: ``(slices, coils, H, W)`` complex64, readout ``H`` (2× oversampled)
  by phase encode ``W``;
* ``reconstruction_rss``: ``(slices, 320, 320)`` float32 root-sum-of-squares
  images (absent from the test split);
* ``ismrmrd_header``: the ISMRMRD XML header as bytes, with the encoded and
  reconstruction matrix sizes and the phase-encode encoding limits;
* file attributes (``acquisition``, ``max``, ``norm``, ``patient_id``).

:class:`FastMRIVolume` validates a file once when opened and reads single
slices on demand; :func:`build_index` lists ``(file, slice)`` pairs of a
directory once and caches the list per directory state.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

ISMRMRD_NAMESPACE = "http://www.ismrm.org/ISMRMRD"


class MatrixSize(NamedTuple):
    """An ISMRMRD ``matrixSize`` (x: readout, y: phase encode, z: partitions)."""

    x: int
    y: int
    z: int


@dataclass(frozen=True)
class Header:
    """The fields of the ISMRMRD header the pipeline uses.

    Attributes
    ----------
    encoded_size, recon_size : MatrixSize
        Encoded (k-space) and reconstruction matrix sizes.
    encoded_fov_mm, recon_fov_mm : tuple of float
        Fields of view in millimetres (x, y, z).
    kspace_center : int
        Centre of ``kspace_encoding_step_1`` (phase-encode centre line).
    kspace_min, kspace_max : int
        Encoding limits of ``kspace_encoding_step_1``.
    """

    encoded_size: MatrixSize
    recon_size: MatrixSize
    encoded_fov_mm: tuple[float, float, float]
    recon_fov_mm: tuple[float, float, float]
    kspace_center: int
    kspace_min: int
    kspace_max: int


def parse_header(xml: bytes | str) -> Header:
    """Parse the ISMRMRD XML header of a fastMRI file.

    Parameters
    ----------
    xml : bytes or str
        The content of the ``ismrmrd_header`` dataset.

    Returns
    -------
    Header
        Matrix sizes, fields of view and phase-encode limits.

    Raises
    ------
    ValueError
        If the XML is malformed or a required field is missing.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as error:
        raise ValueError(f"The 'ismrmrd_header' is not valid XML: {error}.") from None
    ns = {"m": ISMRMRD_NAMESPACE}

    def find(path: str) -> str:
        node = root.find("m:" + path.replace("/", "/m:"), ns)
        if node is None or node.text is None:
            raise ValueError(f"The 'ismrmrd_header' lacks the field '{path}'.")
        return node.text

    def size(space: str) -> MatrixSize:
        return MatrixSize(*(int(find(f"encoding/{space}/matrixSize/{a}")) for a in "xyz"))

    def fov(space: str) -> tuple[float, float, float]:
        x, y, z = (float(find(f"encoding/{space}/fieldOfView_mm/{a}")) for a in "xyz")
        return x, y, z

    limits = "encoding/encodingLimits/kspace_encoding_step_1"
    return Header(
        encoded_size=size("encodedSpace"),
        recon_size=size("reconSpace"),
        encoded_fov_mm=fov("encodedSpace"),
        recon_fov_mm=fov("reconSpace"),
        kspace_center=int(find(f"{limits}/center")),
        kspace_min=int(find(f"{limits}/minimum")),
        kspace_max=int(find(f"{limits}/maximum")),
    )


class FastMRIVolume:
    """One fastMRI multi-coil file, validated on opening and read lazily.

    Parameters
    ----------
    path : str or Path
        The HDF5 file.

    Attributes
    ----------
    path : Path
    shape : tuple of int
        ``(slices, coils, H, W)`` of ``kspace``.
    header : Header or None
        Parsed ``ismrmrd_header`` (None if the file has none).
    attrs : dict
        File attributes.

    Raises
    ------
    ValueError
        If the file is not HDF5, lacks ``kspace``, or ``kspace`` is not a
        4-D complex array.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"The fastMRI file '{self.path}' does not exist.")
        try:
            handle = h5py.File(self.path, "r")
        except OSError as error:
            raise ValueError(
                f"The file '{self.path}' is not a readable HDF5 file ({error})."
            ) from None
        with handle:
            if "kspace" not in handle:
                raise ValueError(
                    f"The file '{self.path}' has no 'kspace' dataset; found {sorted(handle.keys())}."
                )
            kspace = handle["kspace"]
            if kspace.ndim != 4:
                raise ValueError(
                    f"The 'kspace' of '{self.path}' must have rank 4 (slices, coils, H, W). "
                    f"Got shape {kspace.shape} instead."
                )
            if kspace.dtype.kind != "c":
                raise ValueError(
                    f"The 'kspace' of '{self.path}' must be complex. Got dtype {kspace.dtype} instead."
                )
            self.shape: tuple[int, int, int, int] = tuple(int(n) for n in kspace.shape)  # type: ignore[assignment]
            self.attrs: dict[str, object] = dict(handle.attrs)
            self.has_rss = "reconstruction_rss" in handle
            header = handle["ismrmrd_header"][()] if "ismrmrd_header" in handle else None
        self.header: Header | None = parse_header(header) if header is not None else None

    @property
    def num_slices(self) -> int:
        """Number of slices."""
        return self.shape[0]

    def kspace(self, slice_index: int) -> np.ndarray:
        """Read the k-space of one slice, ``(coils, H, W)`` complex64.

        Raises
        ------
        ValueError
            If the slice index is out of range or the k-space holds NaN or Inf.
        """
        if not 0 <= slice_index < self.num_slices:
            raise ValueError(
                f"The 'slice_index' must be in [0, {self.num_slices}) for '{self.path.name}'. "
                f"Got {slice_index} instead."
            )
        with h5py.File(self.path, "r") as handle:
            data = np.asarray(handle["kspace"][slice_index], dtype=np.complex64)
        if not np.isfinite(data).all():
            raise ValueError(
                f"The 'kspace' of '{self.path.name}' slice {slice_index} contains NaN or Inf values."
            )
        return data

    def rss(self, slice_index: int) -> np.ndarray | None:
        """Read ``reconstruction_rss`` of one slice, or None if absent."""
        if not self.has_rss:
            return None
        with h5py.File(self.path, "r") as handle:
            return np.asarray(handle["reconstruction_rss"][slice_index], dtype=np.float32)


def list_volumes(root: str | Path) -> list[Path]:
    """Sorted ``*.h5`` files of a data directory.

    Raises
    ------
    ValueError
        If ``root`` is missing, not a directory, or holds no ``.h5`` file.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"The data directory '{root}' does not exist or is not a directory.")
    files = sorted(p for p in root.glob("*.h5") if p.is_file())
    if not files:
        raise ValueError(f"The data directory '{root}' is empty: it holds no '.h5' file.")
    return files


@functools.lru_cache(maxsize=64)
def _index(files: tuple[tuple[str, int, int], ...]) -> tuple[tuple[str, int], ...]:
    pairs: list[tuple[str, int]] = []
    for name, _, _ in files:
        pairs.extend((name, s) for s in range(FastMRIVolume(name).num_slices))
    return tuple(pairs)


def build_index(root: str | Path) -> list[tuple[Path, int]]:
    """All ``(file, slice)`` pairs of a data directory, in file then slice order.

    Every file is opened and validated once; the result is cached for as long
    as the directory's files keep their names, sizes and modification times.
    """
    files = list_volumes(root)
    key = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return [(Path(name), s) for name, s in _index(key)]
