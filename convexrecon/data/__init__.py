"""MRI data: fastMRI reader, masks, SENSE images, synthetic data, classical references.

See ``docs/data.md`` for the layout and conventions (``docs/design.md`` §8).
"""

from convexrecon.data.dataset import Batch, Sample, SliceDataset, collate, preprocess_slice
from convexrecon.data.fastmri import (
    DataWarning,
    FastMRIVolume,
    Header,
    MatrixSize,
    build_index,
    list_volumes,
    parse_header,
)
from convexrecon.data.masks import MaskFunc, equispaced_lines, poisson_disc, random_lines, slice_seed
from convexrecon.mri.sense import (
    SenseOperator,
    calibration_width,
    center_crop,
    channels_to_complex,
    complex_to_channels,
    espirit_maps,
    fft2c,
    ifft2c,
    sense_images,
)
from convexrecon.data.synthetic import ANATOMIES, make_synthetic, synthesize_volume

__all__ = [
    "ANATOMIES", "Batch", "collate", "DataWarning", "FastMRIVolume", "Header", "MaskFunc", "MatrixSize", "Sample", "SenseOperator", "SliceDataset",
    "build_index", "calibration_width", "center_crop", "channels_to_complex", "complex_to_channels",
    "equispaced_lines", "espirit_maps", "fft2c", "ifft2c", "list_volumes", "make_synthetic",
    "parse_header", "poisson_disc", "preprocess_slice", "random_lines", "sense_images", "slice_seed",
    "synthesize_volume",
]
