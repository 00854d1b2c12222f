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

Errors and fallbacks (README "Errors and guarantees"): a file that is not
HDF5, is truncated, lacks ``kspace``, has a ``kspace`` that is not a 4-D
complex array, or holds no slices raises ``ValueError`` naming the file; NaN
or Inf k-space raises when the slice is read. A missing, malformed or
contradicting ``ismrmrd_header`` is not needed by the pipeline (it uses the
array shape): :class:`FastMRIVolume` warns with :class:`DataWarning` and sets
``header`` to None. In a directory, files that are not ``.h5``, and ``.h5``
files that are not readable fastMRI files, are skipped with a
:class:`DataWarning` (hidden files, such as ``.cache`` or an interrupted
write's ``*.tmp``, silently).
"""

from __future__ import annotations

import functools
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

from convexrecon.errors import DataWarning

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
    if isinstance(xml, np.ndarray) and xml.shape == () and isinstance(xml.item(), (bytes, str)):
        xml = xml.item()  # a scalar string dataset read as a 0-d array
    if not isinstance(xml, (bytes, str)):
        raise ValueError(f"The 'ismrmrd_header' must be XML text (bytes or str). Got {type(xml).__name__} instead.")
    try:
        root = ET.fromstring(xml)
    except (ET.ParseError, ValueError, UnicodeError, LookupError) as error:
        # ValueError: str with an encoding declaration; LookupError: an encoding Python does not know
        raise ValueError(f"The 'ismrmrd_header' is not valid XML: {error}.") from None
    ns = {"m": ISMRMRD_NAMESPACE}

    def find(path: str) -> str:
        node = root.find("m:" + path.replace("/", "/m:"), ns)
        if node is None or node.text is None:
            raise ValueError(f"The 'ismrmrd_header' lacks the field '{path}'.")
        return node.text

    def number(path: str, kind: type) -> int | float:
        text = find(path)
        try:
            value = kind(text.strip())
        except (ValueError, OverflowError):
            raise ValueError(f"The 'ismrmrd_header' field '{path}' must be a{'n int' if kind is int else ' float'}. "
                             f"Got {text[:40]!r} instead.") from None
        if kind is float and not np.isfinite(value):
            raise ValueError(f"The 'ismrmrd_header' field '{path}' must be finite. Got {text[:40]!r} instead.")
        return value

    def size(space: str) -> MatrixSize:
        values = [int(number(f"encoding/{space}/matrixSize/{a}", int)) for a in "xyz"]
        if min(values) < 1:
            raise ValueError(f"The 'ismrmrd_header' {space} matrixSize must be positive. Got {tuple(values)} instead.")
        return MatrixSize(*values)

    def fov(space: str) -> tuple[float, float, float]:
        x, y, z = (float(number(f"encoding/{space}/fieldOfView_mm/{a}", float)) for a in "xyz")
        return x, y, z

    limits = "encoding/encodingLimits/kspace_encoding_step_1"
    return Header(
        encoded_size=size("encodedSpace"),
        recon_size=size("reconSpace"),
        encoded_fov_mm=fov("encodedSpace"),
        recon_fov_mm=fov("reconSpace"),
        kspace_center=int(number(f"{limits}/center", int)),
        kspace_min=int(number(f"{limits}/minimum", int)),
        kspace_max=int(number(f"{limits}/maximum", int)),
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
        Parsed ``ismrmrd_header``; None (with a :class:`DataWarning`) when the
        file has none, when it is malformed, or when its encoded matrix size
        contradicts the k-space array (the array shape is used).
    attrs : dict
        File attributes.

    Raises
    ------
    ValueError
        If the file is missing, is not a readable HDF5 file (e.g. truncated),
        lacks ``kspace``, or ``kspace`` is not a 4-D complex array with at
        least one slice, coil and sample.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"The fastMRI file '{self.path}' does not exist.")
        try:
            handle = h5py.File(self.path, "r")
        except (OSError, ValueError) as error:
            raise ValueError(f"The file '{self.path}' is not a readable HDF5 file ({error}).") from None
        try:
            with handle:
                header = self._read_metadata(handle)
        except (OSError, KeyError, RuntimeError, TypeError) as error:  # damaged metadata inside a valid container
            raise ValueError(f"The file '{self.path}' is corrupt or truncated: {type(error).__name__}: {error}.") from None
        self.header: Header | None = self._check_header(header)

    def _read_metadata(self, handle: h5py.File) -> object:
        if "kspace" not in handle or not isinstance(handle["kspace"], h5py.Dataset):
            raise ValueError(f"The file '{self.path}' has no 'kspace' dataset; found {sorted(handle.keys())}.")
        kspace = handle["kspace"]
        self._layout = complex_layout(kspace.dtype, kspace.shape)
        if self._layout is None:
            raise ValueError(f"The 'kspace' of '{self.path}' must be complex: a complex dtype, a compound of two "
                             f"float fields (r, i) or (real, imag), or floats with a last axis of 2 (real, imag). "
                             f"Got dtype {kspace.dtype} with shape {kspace.shape} instead.")
        shape = kspace.shape[:-1] if self._layout == "pairs" else kspace.shape
        if len(shape) != 4:
            single = (" (rank 3 is fastMRI's single-coil layout; the package reconstructs multi-coil data with "
                      "coil maps)") if len(shape) == 3 else ""
            raise ValueError(
                f"The 'kspace' of '{self.path}' must have rank 4 (slices, coils, H, W). "
                f"Got shape {kspace.shape} instead{single}."
            )
        if min(shape) == 0:
            what = "no slices" if shape[0] == 0 else "an empty coil or image axis"
            raise ValueError(f"The 'kspace' of '{self.path}' holds {what}: shape {kspace.shape}.")
        self.shape: tuple[int, int, int, int] = tuple(int(n) for n in shape)  # type: ignore[assignment]
        self.attrs: dict[str, object] = dict(handle.attrs)
        self.has_rss = "reconstruction_rss" in handle
        if "ismrmrd_header" not in handle or not isinstance(handle["ismrmrd_header"], h5py.Dataset):
            return None
        return handle["ismrmrd_header"][()]

    def _check_header(self, raw: object) -> Header | None:
        """Parse the header; on any problem warn and fall back to the array shape."""
        shape = self.shape[-2:]
        if raw is None:
            problem = "has no 'ismrmrd_header'"
        else:
            try:
                header = parse_header(raw)  # type: ignore[arg-type]
            except ValueError as error:
                problem = f"has a malformed 'ismrmrd_header' ({error})"
            else:
                encoded = (header.encoded_size.x, header.encoded_size.y)
                if encoded == shape:
                    return header
                problem = f"has an 'ismrmrd_header' whose encoded matrix size {encoded} contradicts the k-space"
        warnings.warn(f"The file '{self.path}' {problem}; using the k-space array shape {shape} instead.",
                      DataWarning, stacklevel=3)
        return None

    @property
    def num_slices(self) -> int:
        """Number of slices."""
        return self.shape[0]

    def kspace(self, slice_index: int) -> np.ndarray:
        """Read the k-space of one slice, ``(coils, H, W)`` complex64.

        Raises
        ------
        ValueError
            If the slice index is out of range, the data cannot be read
            (truncated file) or the k-space holds NaN or Inf or is all zero.
        """
        data = as_complex64(self._read("kspace", slice_index), self._layout)
        if not np.isfinite(data).all():
            raise ValueError(
                f"The 'kspace' of '{self.path.name}' slice {slice_index} contains NaN or Inf values."
            )
        if not data.any():
            raise ValueError(f"The 'kspace' of '{self.path.name}' slice {slice_index} is all zero: nothing was "
                             f"measured there. Remove the slice or the file.")
        return data

    def rss(self, slice_index: int) -> np.ndarray | None:
        """Read ``reconstruction_rss`` of one slice, or None if absent."""
        if not self.has_rss:
            return None
        return np.asarray(self._read("reconstruction_rss", slice_index), dtype=np.float32)

    def _read(self, name: str, slice_index: int) -> np.ndarray:
        if isinstance(slice_index, bool) or not isinstance(slice_index, (int, np.integer)) \
                or not 0 <= slice_index < self.num_slices:
            raise ValueError(
                f"The 'slice_index' must be an int in [0, {self.num_slices}) for '{self.path.name}'. "
                f"Got {slice_index!r} instead."
            )
        try:
            with h5py.File(self.path, "r") as handle:
                return handle[name][int(slice_index)]
        except (OSError, KeyError, RuntimeError, TypeError, ValueError) as error:
            raise ValueError(
                f"Slice {slice_index} of '{name}' in '{self.path}' cannot be read (truncated or corrupt file?): "
                f"{type(error).__name__}: {error}."
            ) from None


PAIR_FIELDS: tuple[tuple[str, str], ...] = (("r", "i"), ("real", "imag"), ("re", "im"))
"""Field names of a compound complex dtype, in (real, imaginary) order (h5py writes ``r``, ``i``; other tools
write ``real``, ``imag``)."""


def complex_layout(dtype: np.dtype, shape: tuple[int, ...]) -> str | None:
    """How an HDF5 dataset holds complex numbers: ``"complex"`` (a complex dtype, which h5py makes of an ``(r, i)``
    compound), ``"fields"`` (a compound of two float fields named as in :data:`PAIR_FIELDS`, e.g. ``real``/``imag``),
    ``"pairs"`` (floats whose last axis of 2 holds real and imaginary parts, as PyTorch-style tools store them);
    None for anything else."""
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        return "complex"
    if dtype.names is not None and len(dtype.names) == 2 \
            and tuple(n.lower() for n in dtype.names) in PAIR_FIELDS \
            and all(dtype.fields[n][0].kind == "f" for n in dtype.names):
        return "fields"
    if dtype.kind == "f" and len(shape) >= 1 and shape[-1] == 2:
        return "pairs"
    return None


def as_complex64(array: np.ndarray, layout: str) -> np.ndarray:
    """``array`` read from a dataset of :func:`complex_layout` ``layout`` as complex64."""
    array = np.asarray(array)
    if layout == "fields":
        real, imag = array.dtype.names
        return (array[real].astype(np.float32) + 1j * array[imag].astype(np.float32)).astype(np.complex64)
    if layout == "pairs":
        return (array[..., 0].astype(np.float32) + 1j * array[..., 1].astype(np.float32)).astype(np.complex64)
    return array.astype(np.complex64)


def list_volumes(root: str | Path) -> list[Path]:
    """Sorted ``*.h5`` files of a data directory.

    Visible files with another suffix are skipped with a :class:`DataWarning`;
    hidden files (``.cache``, temporaries of interrupted writes) silently.

    Raises
    ------
    ValueError
        If ``root`` is missing, not a directory, or holds no ``.h5`` file.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"The data directory '{root}' does not exist or is not a directory.")
    entries = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    files = [p for p in entries if p.suffix == ".h5"]
    others = [p.name for p in entries if p.suffix != ".h5"]
    if others:
        warnings.warn(f"The data directory '{root}' holds {len(others)} file(s) that are not '.h5', skipped: "
                      f"{', '.join(others[:5])}{' ...' if len(others) > 5 else ''}.", DataWarning, stacklevel=2)
    if not files:
        raise ValueError(f"The data directory '{root}' is empty: it holds no '.h5' file.")
    return files


@functools.lru_cache(maxsize=64)
def _index(files: tuple[tuple[str, int, int], ...]) -> tuple[tuple[tuple[str, int], ...], tuple[str, ...]]:
    """``(file, slice)`` pairs of the readable files, and one message per skipped file."""
    pairs: list[tuple[str, int]] = []
    skipped: list[str] = []
    for name, _, _ in files:
        try:
            with warnings.catch_warnings():  # header fallbacks are reported when the volume is opened for use
                warnings.simplefilter("ignore", DataWarning)
                volume = FastMRIVolume(name)
        except ValueError as error:
            skipped.append(str(error))
            continue
        pairs.extend((name, s) for s in range(volume.num_slices))
    return tuple(pairs), tuple(skipped)


def build_index(root: str | Path) -> list[tuple[Path, int]]:
    """All ``(file, slice)`` pairs of a data directory, in file then slice order.

    Every file is opened and validated once; the result is cached for as long
    as the directory's files keep their names, sizes and modification times.
    ``.h5`` files that are not readable fastMRI files are skipped with a
    :class:`DataWarning` naming each file and its problem.

    Raises
    ------
    ValueError
        If no file of the directory is readable (the message lists why).
    """
    files = list_volumes(root)
    key = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    pairs, skipped = _index(key)
    for message in skipped:
        warnings.warn(f"Skipping a file of '{root}': {message}", DataWarning, stacklevel=2)
    if not pairs:
        raise ValueError(f"The data directory '{root}' holds no readable fastMRI file: {' '.join(skipped)}")
    return [(Path(name), s) for name, s in pairs]
