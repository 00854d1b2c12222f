"""MRI data: the fastMRI reader, masks, datasets and splits, synthetic families, caches, slice problems.

The physics these build on (FFTs, ESPIRiT, SENSE, data consistency, classical reconstructions) is
:mod:`convexrecon.mri`, which reads no files. See ``docs/data.md`` for the layout and conventions
(``docs/design.md`` §8).
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
from convexrecon.data.problems import measured_data, slice_problem, slice_problems
from convexrecon.data.synthetic import ANATOMIES, make_synthetic, synthesize_volume

__all__ = [
    "ANATOMIES", "Batch", "DataWarning", "FastMRIVolume", "Header", "MaskFunc", "MatrixSize", "Sample", "SliceDataset",
    "build_index", "collate", "equispaced_lines", "list_volumes", "make_synthetic", "measured_data", "parse_header",
    "poisson_disc", "preprocess_slice", "random_lines", "slice_problem", "slice_problems", "slice_seed",
    "synthesize_volume",
]
