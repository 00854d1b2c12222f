"""MRI physics and classical reconstructions, in the manner of ``sigpy.mri``.

* :mod:`~convexrecon.mri.fft`: centred FFTs, centre crops, the 2-channel layout, the compute device;
* :mod:`~convexrecon.mri.espirit`: ESPIRiT coil sensitivities, the calibration square and the coil-map
  health check (coverage, fallback kernel);
* :mod:`~convexrecon.mri.sense`: the batched SENSE operator and the SENSE images of a slice;
* :mod:`~convexrecon.mri.consistency`: the data-consistency step, crops of full-grid images, measured data;
* :mod:`~convexrecon.mri.noise`: the noise level of a scan, estimated from its outer k-space;
* :mod:`~convexrecon.mri.sparsity`: wavelet soft-thresholding and L1-wavelet CS by FISTA, in torch;
* :mod:`~convexrecon.mri.classical`: the references (zero-filled, SENSE-CG, L1-wavelet) and slice problems.

Knows nothing of files: :mod:`convexrecon.data` reads fastMRI volumes and builds datasets, slice
problems and measured data on top of it.
"""

from convexrecon.mri.classical import (
    LAMBDA_GRID,
    SliceProblem,
    choose_lambda,
    cross_validated_table,
    l1_wavelet,
    problem_from_kspace,
    reference_table,
    sense_cg,
    warn_lambda_at_edge,
    zero_filled,
)
from convexrecon.mri.consistency import (
    DC_METHODS,
    MeasuredData,
    MeasuredGroups,
    conjugate_gradient,
    crop_center,
    crop_window,
    data_consistency,
    sense_cg_batch,
    embed_crop,
    exact_dc_applies,
    grouped_from_problems,
    measured_from_problems,
    measured_groups,
)
from convexrecon.mri.espirit import (
    ESPIRIT_CROP, ESPIRIT_KERNEL, ESPIRIT_METHODS, FALLBACK_KERNEL, MIN_COVERAGE, OBJECT_LEVEL, HealthyMaps,
    calibration_width, coil_maps, espirit_maps, estimate_coil_maps, fallback_message, healthy_maps, map_coverage,
    warn_if_fallback, working_width,
)
from convexrecon.mri.fft import (
    center_crop,
    channels_to_complex,
    complex_to_channels,
    data_device,
    fft2c,
    fftnc,
    ifft2c,
    ifftnc,
)
from convexrecon.mri.noise import estimate_noise
from convexrecon.mri.sense import SenseImages, SenseOperator, sense_adjoint, sense_forward, sense_images, sense_normal
from convexrecon.mri.sparsity import DEFAULT_WAVE, l1_wavelet_fista, wavelet_shrink

__all__ = [
    "DC_METHODS", "DEFAULT_WAVE", "ESPIRIT_CROP", "ESPIRIT_KERNEL", "ESPIRIT_METHODS", "FALLBACK_KERNEL",
    "HealthyMaps", "LAMBDA_GRID", "MIN_COVERAGE", "MeasuredData", "MeasuredGroups", "OBJECT_LEVEL", "SenseImages",
    "SenseOperator", "SliceProblem", "calibration_width", "center_crop", "channels_to_complex", "choose_lambda",
    "coil_maps", "complex_to_channels", "conjugate_gradient", "crop_center", "crop_window", "cross_validated_table",
    "data_consistency", "sense_cg_batch", "data_device", "embed_crop", "espirit_maps", "estimate_coil_maps",
    "estimate_noise", "exact_dc_applies", "fallback_message", "fft2c", "fftnc", "grouped_from_problems",
    "healthy_maps", "ifft2c", "ifftnc", "l1_wavelet", "l1_wavelet_fista", "map_coverage", "measured_from_problems",
    "measured_groups", "problem_from_kspace", "reference_table", "sense_adjoint", "sense_cg", "sense_forward",
    "sense_images", "sense_normal", "warn_if_fallback", "warn_lambda_at_edge", "wavelet_shrink", "working_width",
    "zero_filled",
]
