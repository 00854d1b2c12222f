"""Bad-input corpus for the fastMRI reader and data directories, and fuzzing of the reader.

Every case asserts the exception (or warning) type and that its message names
the problem. The reader's documented outcomes: ``ValueError`` for a file it
cannot use, :class:`DataWarning` (with ``header = None``) for a missing,
malformed or contradicting ``ismrmrd_header``, and a :class:`DataWarning`
for files skipped in a directory.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convexrecon.data import DataWarning, FastMRIVolume, build_index, list_volumes, parse_header
from convexrecon.data.synthetic import ismrmrd_header

SHAPE = (8, 7)
HEADER = ismrmrd_header(SHAPE, (6, 6))
GOOD = (np.arange(2 * 3 * 8 * 7).reshape(2, 3, 8, 7) * (1 + 1j)).astype(np.complex64)


def write(path: Path, header: object = HEADER, **datasets: object) -> Path:
    """An HDF5 file with ``datasets`` (``kspace`` defaults to a good array) and a header unless None."""
    datasets = {"kspace": GOOD, **datasets}
    with h5py.File(path, "w") as handle:
        for name, data in datasets.items():
            if data is None:
                continue
            if isinstance(data, str) and data == "group":
                handle.create_group(name)
            else:
                handle.create_dataset(name, data=data)
        if header is not None:
            handle.create_dataset("ismrmrd_header", data=header if not isinstance(header, bytes) else np.bytes_(header))
    return path


def _with(value: complex) -> np.ndarray:
    bad = GOOD.copy()
    bad[1, 2, 3, 4] = value
    return bad


def _truncated(path: Path) -> Path:
    write(path, kspace=np.ones((4, 3, 64, 45), np.complex64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _tail_damaged(path: Path) -> Path:
    """Metadata intact, the k-space bytes cut off (the file is shortened past its superblock)."""
    write(path, kspace=np.ones((4, 3, 64, 45), np.complex64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 30_000])
    return path


# (id, how to build the file, message fragment); opening or reading slice 0 must raise ValueError
FILE_CASES = [
    ("missing-kspace", lambda p: write(p, kspace=None, other=np.ones(3)), "no 'kspace' dataset"),
    ("kspace-is-a-group", lambda p: write(p, kspace="group"), "no 'kspace' dataset"),
    ("kspace-rank-3", lambda p: write(p, kspace=GOOD[0]),
     r"must have rank 4 \(slices, coils, H, W\). Got shape \(3, 8, 7\) instead \(rank 3 is fastMRI's single-coil"),
    ("kspace-rank-5", lambda p: write(p, kspace=GOOD[None]), "must have rank 4"),
    ("kspace-real-float", lambda p: write(p, kspace=GOOD.real.astype(np.float32)),
     r"must be complex: .*Got dtype float32 with shape \(2, 3, 8, 7\)"),
    ("kspace-int", lambda p: write(p, kspace=np.ones((1, 1, 4, 4), np.int16)), "must be complex: .*Got dtype int16"),
    ("kspace-pairs-rank-3", lambda p: write(p, kspace=np.ones((3, 8, 7, 2), np.float32)),
     r"must have rank 4 \(slices, coils, H, W\). Got shape \(3, 8, 7, 2\)"),
    ("kspace-other-fields", lambda p: write(p, kspace=np.zeros((2, 3, 8, 7), [("mag", "<f4"), ("phase", "<f4")])),
     "must be complex: .*compound of two float fields"),
    ("zero-slices", lambda p: write(p, kspace=np.zeros((0, 3, 8, 7), np.complex64)), "holds no slices"),
    ("zero-coils", lambda p: write(p, kspace=np.zeros((2, 0, 8, 7), np.complex64)), "empty coil or image axis"),
    ("nan", lambda p: write(p, kspace=_with(np.nan)), "slice 1 contains NaN or Inf"),
    ("inf", lambda p: write(p, kspace=_with(complex(0, np.inf))), "slice 1 contains NaN or Inf"),
    ("all-zero-slice", lambda p: write(p, kspace=GOOD * np.array([1, 0])[:, None, None, None]),
     "slice 1 is all zero: nothing was measured"),
    ("truncated", _truncated, "not a readable HDF5 file|corrupt or truncated|cannot be read"),
    ("tail-cut", _tail_damaged, "not a readable HDF5 file|corrupt or truncated|cannot be read"),
    ("garbage", lambda p: (p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4), p)[1],
     "not a readable HDF5 file"),
    ("empty-file", lambda p: (p.write_bytes(b""), p)[1], "not a readable HDF5 file"),
    ("missing-file", lambda p: p.with_name("absent.h5"), "does not exist"),
]


@pytest.mark.parametrize("build, message", [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_bad_file_raises_value_error(tmp_path: Path, build, message) -> None:
    path = build(tmp_path / "bad.h5")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(ValueError, match=message):
            volume = FastMRIVolume(path)
            for s in range(volume.num_slices):
                volume.kspace(s)


def _fields(names: tuple[str, str]) -> np.ndarray:
    out = np.empty(GOOD.shape, [(names[0], "<f4"), (names[1], "<f8")])
    out[names[0]], out[names[1]] = GOOD.real, GOOD.imag
    return out


@pytest.mark.parametrize("stored", [
    np.stack([GOOD.real, GOOD.imag], -1).astype(np.float32),  # PyTorch-style (..., 2) real/imag pairs
    np.stack([GOOD.real, GOOD.imag], -1).astype(np.float64),
    _fields(("real", "imag")),  # compound fields as MATLAB or ISMRMRD tools name them
    _fields(("Re", "Im")),
    GOOD.astype(np.complex128),
], ids=["pairs-f4", "pairs-f8", "fields-real-imag", "fields-re-im", "complex128"])
def test_complex_layouts_of_other_tools_read_as_the_same_kspace(tmp_path: Path, stored: np.ndarray) -> None:
    volume = FastMRIVolume(write(tmp_path / "v.h5", kspace=stored))
    assert volume.shape == GOOD.shape
    for s in range(2):
        got = volume.kspace(s)
        assert got.dtype == np.complex64 and np.array_equal(got, GOOD[s])


def test_slice_index_out_of_range_or_not_int(tmp_path: Path) -> None:
    volume = FastMRIVolume(write(tmp_path / "v.h5"))
    for index in (2, -1, 1.0, True):
        with pytest.raises(ValueError, match=r"'slice_index' must be an int in \[0, 2\)"):
            volume.kspace(index)


_NS = 'xmlns="http://www.ismrm.org/ISMRMRD"'
# (id, header dataset content or None, message fragment of the DataWarning)
HEADER_CASES = [
    ("missing", None, "has no 'ismrmrd_header'"),
    ("not-xml", b"<ismrmrdHeader><encoding>", "malformed 'ismrmrd_header'.*not valid XML"),
    ("no-fields", f"<ismrmrdHeader {_NS}></ismrmrdHeader>".encode(), "lacks the field 'encoding/encodedSpace"),
    ("non-int-size", HEADER.replace(b"<x>8</x>", b"<x>eight</x>", 1), "matrixSize/x' must be an int"),
    ("negative-size", HEADER.replace(b"<x>8</x>", b"<x>-8</x>", 1), "matrixSize must be positive"),
    ("nan-fov", HEADER.replace(b"<x>280.0</x>", b"<x>nan</x>"), "fieldOfView_mm/x' must be finite"),
    ("contradicts-array", ismrmrd_header((640, 368), (320, 320)), r"encoded matrix size \(640, 368\) contradicts"),
    ("numeric-array", np.arange(5), "must be XML text"),
]


@pytest.mark.parametrize("header, message", [c[1:] for c in HEADER_CASES], ids=[c[0] for c in HEADER_CASES])
def test_bad_header_falls_back_to_array_shape_with_a_warning(tmp_path: Path, header, message) -> None:
    path = write(tmp_path / "h.h5", header=header)
    with pytest.warns(DataWarning, match=message) as record:
        volume = FastMRIVolume(path)
    assert "using the k-space array shape (8, 7)" in str(record[0].message)
    assert volume.header is None and volume.shape == (2, 3) + SHAPE
    assert np.array_equal(volume.kspace(1), GOOD[1])  # the data stay usable


def test_good_header_is_parsed_without_warning(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        volume = FastMRIVolume(write(tmp_path / "g.h5"))
    assert volume.header is not None and tuple(volume.header.encoded_size[:2]) == SHAPE


def test_directory_cases(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist or is not a directory"):
        list_volumes(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="does not exist or is not a directory"):
        list_volumes(write(tmp_path / "file.h5"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is empty: it holds no '.h5' file"):
        list_volumes(tmp_path / "empty")


def test_mixed_directory_skips_non_hdf5_files_with_a_warning(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    root.mkdir()
    write(root / "b_good.h5")
    (root / "notes.txt").write_text("acquisition notes")
    (root / "a_junk.h5").write_bytes(b"not HDF5 at all")
    write(root / "c_nokspace.h5", kspace=None, other=np.ones(2))
    (root / ".b_good.h5.x1y2.tmp").write_bytes(b"half-written")  # an interrupted write: hidden, ignored silently
    (root / ".cache").mkdir()
    with pytest.warns(DataWarning) as record:
        index = build_index(root)
    assert index == [(root / "b_good.h5", 0), (root / "b_good.h5", 1)]
    messages = [str(r.message) for r in record]
    assert any("not '.h5', skipped: notes.txt" in m for m in messages)
    assert any("a_junk.h5" in m and "not a readable HDF5 file" in m for m in messages)
    assert any("c_nokspace.h5" in m and "no 'kspace'" in m for m in messages)
    assert not any(".tmp" in m for m in messages)


def test_directory_without_readable_files_raises(tmp_path: Path) -> None:
    (tmp_path / "x.h5").write_bytes(b"garbage")
    with pytest.warns(DataWarning, match="x.h5"), pytest.raises(ValueError, match="holds no readable fastMRI file"):
        build_index(tmp_path)


# --- fuzzing -----------------------------------------------------------------------------------

_TAGS = ["ismrmrdHeader", "encoding", "encodedSpace", "reconSpace", "matrixSize", "fieldOfView_mm", "x", "y", "z",
         "encodingLimits", "kspace_encoding_step_1", "center", "minimum", "maximum"]
_TEXT = st.one_of(st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True).map(str),
                  st.sampled_from(["", " ", "1e999", "0x10", "٣", "\x00", "&amp;", "<"]), st.text(max_size=8))


def _element(depth: int) -> st.SearchStrategy[str]:
    leaf = st.builds(lambda t, x: f"<{t}>{x}</{t}>", st.sampled_from(_TAGS),
                     _TEXT.map(lambda s: s.replace("<", "&lt;").replace("&", "&amp;")))
    if depth == 0:
        return leaf
    return st.one_of(leaf, st.builds(lambda t, kids: f"<{t}>{''.join(kids)}</{t}>", st.sampled_from(_TAGS),
                                     st.lists(_element(depth - 1), max_size=4)))


def _mutate(data: bytes, cuts: list[tuple[int, int, bytes]]) -> bytes:
    for position, length, insert in cuts:
        position %= max(len(data), 1)
        data = data[:position] + insert + data[position + length:]
    return data


_MUTATIONS = st.lists(st.tuples(st.integers(0, 10**4), st.integers(0, 20), st.binary(max_size=6)), max_size=4)


def test_parse_header_with_an_unknown_encoding_raises_value_error() -> None:
    # found by the fuzz test below: an XML declaration naming an unknown codec raised LookupError
    with pytest.raises(ValueError, match="ismrmrd_header.*not valid XML"):
        parse_header(b'<?xml version="1.0" encoding="tf-8"?><ismrmrdHeader/>')


@settings(max_examples=150, deadline=None)
@given(st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200),
    st.builds(lambda body: f"<ismrmrdHeader {_NS}>{body}</ismrmrdHeader>", _element(4)),
    st.builds(_mutate, st.just(HEADER), _MUTATIONS),
    st.builds(lambda s: HEADER.decode().replace("UTF-8", s), st.text(max_size=10)),
))
def test_fuzz_parse_header_raises_only_value_error(xml) -> None:
    try:
        header = parse_header(xml)
    except ValueError as error:
        assert "ismrmrd_header" in str(error)
    else:
        assert min(header.encoded_size) >= 1 and min(header.recon_size) >= 1


@st.composite
def _hdf5_layouts(draw: st.DrawFn) -> dict[str, object]:
    """Random fastMRI-like structures: right or wrong names, ranks, dtypes, sizes, headers."""
    layout: dict[str, object] = {}
    names = draw(st.lists(st.sampled_from(["kspace", "ismrmrd_header", "reconstruction_rss", "mask", "other"]),
                          unique=True, max_size=4))
    for name in names:
        kind = draw(st.sampled_from(["array", "group", "bytes", "scalar"]))
        if kind == "group":
            layout[name] = "group"
        elif kind == "bytes":
            layout[name] = np.bytes_(draw(st.one_of(st.binary(max_size=40), st.just(HEADER),
                                                    st.builds(_mutate, st.just(HEADER), _MUTATIONS))))
        elif kind == "scalar":
            layout[name] = np.float64(draw(st.floats(allow_nan=True)))
        else:
            shape = tuple(draw(st.lists(st.integers(0, 4), max_size=5)))
            dtype = draw(st.sampled_from([np.complex64, np.complex128, np.float32, np.int8, np.bool_]))
            values = draw(st.sampled_from([0.0, 1.0, np.nan, np.inf]))
            layout[name] = np.full(shape, values, dtype=dtype) if dtype != np.int8 or np.isfinite(values) \
                else np.zeros(shape, dtype)
    return layout


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_hdf5_layouts())
def test_fuzz_reader_on_random_structures(tmp_path: Path, layout: dict[str, object]) -> None:
    path = tmp_path / "fuzz.h5"
    with h5py.File(path, "w") as handle:
        for name, data in layout.items():
            if isinstance(data, str):
                handle.create_group(name)
            else:
                handle.create_dataset(name, data=data)
    _read_everything(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 2**31), _MUTATIONS, st.floats(0.0, 1.0))
def test_fuzz_reader_on_damaged_bytes(tmp_path: Path, seed: int, mutations, keep: float) -> None:
    good = tmp_path / "good.h5"
    if not good.exists():
        write(good, reconstruction_rss=np.ones((2, 6, 6), np.float32))
    data = good.read_bytes()
    rng = np.random.default_rng(seed)
    damaged = bytearray(_mutate(data, mutations)[: max(1, int(keep * len(data)))] if keep < 1 else data)
    for position in rng.integers(0, len(damaged), size=int(rng.integers(0, 8))):
        damaged[position] = int(rng.integers(0, 256))  # flip bytes anywhere, superblock and B-trees included
    path = tmp_path / "damaged.h5"
    path.write_bytes(bytes(damaged))
    _read_everything(path)


def _read_everything(path: Path) -> None:
    """Open and read every slice; only ValueError (and DataWarning) may escape."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        try:
            volume = FastMRIVolume(path)
            for s in range(volume.num_slices):
                assert np.isfinite(volume.kspace(s)).all()
                volume.rss(s)
        except ValueError as error:
            assert str(path.name) in str(error) or "ismrmrd_header" in str(error) or "slice_index" in str(error)
