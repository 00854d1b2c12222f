"""Real-layout round trip and the reader's errors on bad files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from convexrecon.data import FastMRIVolume, build_index, list_volumes, make_synthetic, parse_header, synthesize_volume
from convexrecon.data.synthetic import write_fastmri
from tests.conftest import COILS, RECON, SHAPE, SLICES, VOLUMES


def test_layout_matches_fastmri(synthetic_dir: Path) -> None:
    files = sorted(synthetic_dir.glob("*.h5"))
    assert len(files) == VOLUMES
    with h5py.File(files[0], "r") as handle:
        assert set(handle.keys()) == {"kspace", "reconstruction_rss", "ismrmrd_header"}
        assert handle["kspace"].dtype == np.complex64
        assert handle["kspace"].shape == (SLICES, COILS) + SHAPE
        assert handle["reconstruction_rss"].dtype == np.float32
        assert handle["reconstruction_rss"].shape == (SLICES,) + RECON
        assert isinstance(handle["ismrmrd_header"][()], bytes)
        assert {"acquisition", "max", "norm", "patient_id"} <= set(handle.attrs)
        assert np.isclose(handle.attrs["max"], handle["reconstruction_rss"][()].max())
        header = parse_header(handle["ismrmrd_header"][()])
    assert header.encoded_size == (SHAPE[0], SHAPE[1], 1)
    assert header.recon_size == (RECON[0], RECON[1], 1)
    assert header.kspace_center == SHAPE[1] // 2
    assert (header.kspace_min, header.kspace_max) == (0, SHAPE[1] - 1)


def test_loader_reads_back_what_was_written(tmp_path: Path) -> None:
    volume = synthesize_volume((40, 33), slices=2, coils=3, seed=5, snr=None)
    path = write_fastmri(tmp_path / "v.h5", volume.kspace, (20, 20), "p")
    reader = FastMRIVolume(path)
    assert reader.shape == (2, 3, 40, 33)
    assert reader.header is not None and reader.header.encoded_size.y == 33
    for s in range(2):
        assert np.array_equal(reader.kspace(s), volume.kspace[s])
    assert reader.rss(1).shape == (20, 20)
    assert reader.attrs["patient_id"] == "p"
    assert [p.name for p in list_volumes(tmp_path)] == ["v.h5"]
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temporary


def test_index_is_volume_then_slice(synthetic_dir: Path) -> None:
    index = build_index(synthetic_dir)
    assert len(index) == VOLUMES * SLICES
    assert index[:SLICES] == [(index[0][0], s) for s in range(SLICES)]
    assert build_index(synthetic_dir) == index


def test_synthetic_is_deterministic_and_subjects_differ(tmp_path: Path) -> None:
    a = make_synthetic(tmp_path / "a", volumes=2, slices=1, coils=2, shape=(32, 27), seed=1)
    b = make_synthetic(tmp_path / "b", volumes=1, slices=1, coils=2, shape=(32, 27), seed=1)
    ka, kb = FastMRIVolume(a[0]).kspace(0), FastMRIVolume(b[0]).kspace(0)
    assert np.array_equal(ka, kb)
    assert not np.allclose(np.abs(ka), np.abs(FastMRIVolume(a[1]).kspace(0)))


def test_synthetic_noise_level() -> None:
    clean = synthesize_volume((64, 45), 1, 4, seed=2, snr=None)
    noisy = synthesize_volume((64, 45), 1, 4, seed=2, snr=20.0)
    magnitude = np.abs(clean.images)
    sigma = magnitude[magnitude > 0.05 * magnitude.max()].mean() / 20.0
    measured = np.std(noisy.kspace - clean.kspace)  # complex std: sqrt(E|n|^2)
    assert abs(measured / sigma - 1) < 0.05
    rss = np.sqrt((np.abs(clean.maps) ** 2).sum(axis=0))
    assert np.allclose(rss, 1, atol=1e-5)


def _write(path: Path, **datasets: np.ndarray) -> Path:
    with h5py.File(path, "w") as handle:
        for name, data in datasets.items():
            handle.create_dataset(name, data=data)
    return path


def test_bad_files_give_clear_errors(tmp_path: Path) -> None:
    good = np.ones((1, 2, 8, 8), np.complex64)
    with pytest.raises(ValueError, match="no 'kspace'"):
        FastMRIVolume(_write(tmp_path / "a.h5", other=np.ones(3)))
    with pytest.raises(ValueError, match="rank 4"):
        FastMRIVolume(_write(tmp_path / "b.h5", kspace=np.ones((2, 8, 8), np.complex64)))
    with pytest.raises(ValueError, match="complex"):
        FastMRIVolume(_write(tmp_path / "c.h5", kspace=good.real.astype(np.float32)))
    bad = good.copy()
    bad[0, 1, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        FastMRIVolume(_write(tmp_path / "d.h5", kspace=bad)).kspace(0)
    bad[0, 1, 3, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        FastMRIVolume(_write(tmp_path / "e.h5", kspace=bad)).kspace(0)
    (tmp_path / "f.h5").write_bytes(b"this is not HDF5")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        FastMRIVolume(tmp_path / "f.h5")
    with pytest.raises(ValueError, match="does not exist"):
        FastMRIVolume(tmp_path / "missing.h5")
    with pytest.raises(ValueError, match="slice_index"):
        FastMRIVolume(tmp_path / "d.h5").kspace(5)


def test_bad_directories(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        list_volumes(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        list_volumes(tmp_path / "empty")


def test_bad_header() -> None:
    with pytest.raises(ValueError, match="not valid XML"):
        parse_header(b"<unclosed")
    with pytest.raises(ValueError, match="lacks the field"):
        parse_header(b'<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"></ismrmrdHeader>')
