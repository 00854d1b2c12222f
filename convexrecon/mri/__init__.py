"""MRI physics and classical reconstructions: FFTs, ESPIRiT and the SENSE operator, data consistency,
wavelet sparsity and L1-wavelet CS, zero-filled / SENSE-CG / CS references.

Knows nothing of files: ``convexrecon.data`` reads fastMRI volumes and builds datasets on top of it.
"""
