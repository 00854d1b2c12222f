"""Bad input to fit_layer and global_check raises a clear error naming the problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convexrecon as cr

X = torch.randn(2, 2, 6, 5, dtype=torch.float64)
Y = torch.randn(2, 1, 6, 5, dtype=torch.float64)


def _nan(t):
    t = t.clone()
    t[0, 0, 0, 0] = float("nan")
    return t


def _inf(t):
    t = t.clone()
    t[1, 0, 2, 3] = float("inf")
    return t


CASES = [
    # (kwargs overriding the defaults, exception, message fragment)
    (dict(inputs=X[0]), ValueError, r"'inputs' parameter must have shape \(N, C, H, W\). Got ndim 3"),
    (dict(targets=Y[0, 0]), ValueError, r"'targets' parameter must have shape \(N, C, H, W\). Got ndim 2"),
    (dict(targets=Y[:1]), ValueError, "same number of images N. Got 2 and 1"),
    (dict(targets=torch.randn(2, 1, 6, 4)), ValueError, r"same spatial size \(H, W\). Got \(6, 5\) and \(6, 4\)"),
    (dict(kernel_size=4), ValueError, "'kernel_size' parameter must be odd.*Got 4"),
    (dict(kernel_size=0), ValueError, "'kernel_size' parameter must be an int >= 1. Got 0"),
    (dict(kernel_size=-3), ValueError, "'kernel_size' parameter must be an int >= 1. Got -3"),
    (dict(kernel_size=3.0), TypeError, "'kernel_size' parameter must be an int. Got float"),
    (dict(beta=0.0), ValueError, "'beta' parameter must be a finite float > 0. Got 0.0"),
    (dict(beta=-1), ValueError, "'beta' parameter must be a finite float > 0. Got -1"),
    (dict(beta=float("nan")), ValueError, "'beta' parameter must be a finite float > 0. Got nan"),
    (dict(beta=float("inf")), ValueError, "'beta' parameter must be a finite float > 0. Got inf"),
    (dict(beta="0.1"), TypeError, "'beta' parameter must be a float > 0. Got str"),
    (dict(inputs=_nan(X)), ValueError, "'inputs' parameter must be finite. Found 1 NaN/Inf"),
    (dict(targets=_inf(Y)), ValueError, "'targets' parameter must be finite. Found 1 NaN/Inf"),
    (dict(activation="tanh"), ValueError, "'activation' parameter must be one of 'relu', 'gated'. Got 'tanh'"),
    (dict(num_arrangements=0), ValueError, "'num_arrangements' parameter must be an int >= 1. Got 0"),
    (dict(tol=0.0), ValueError, "'tol' parameter must be a finite float > 0. Got 0.0"),
    (dict(tol=-1e-3), ValueError, "'tol' parameter must be a finite float > 0"),
    (dict(max_iter=0), ValueError, "'max_iter' parameter must be an int >= 1. Got 0"),
    (dict(device="gpu7"), ValueError, "'device' parameter must be a torch device.*'gpu7'"),
    (dict(dtype=torch.float16), ValueError, "'dtype' parameter must be torch.float32 or torch.float64"),
    (dict(inputs=[[1.0]]), TypeError, "'inputs' parameter must be a torch.Tensor or numpy.ndarray.*Got list"),
    (dict(inputs=torch.zeros(0, 2, 6, 5)), ValueError, "'inputs' parameter must be non-empty"),
    (dict(inputs=torch.randn(2, 2, 6, 5, dtype=torch.complex64)), TypeError, "'inputs' parameter must be real. Got complex"),
    (dict(inputs=np.array([[["a"]]], dtype=object)), TypeError, "'inputs' parameter must be a real numeric array"),
    (dict(gates=torch.randn(4, 3, 3, 3)), ValueError, r"'gates' parameter must have shape \(P, 2, 3, 3\).*Got \(4, 3, 3, 3\)"),
    (dict(gates=torch.full((2, 2, 3, 3), float("nan"))), ValueError, "'gates' parameter must be finite"),
]


@pytest.mark.parametrize("override,exc,message", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_fit_layer_rejects(override, exc, message):
    kwargs = dict(inputs=X, targets=Y, kernel_size=3, num_arrangements=2, beta=0.1, dtype=torch.float64)
    kwargs.update(override)
    inputs, targets = kwargs.pop("inputs"), kwargs.pop("targets")
    with pytest.raises(exc, match=message):
        cr.fit_layer(inputs, targets, **kwargs)


def test_cuda_device_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        cr.fit_layer(X, Y, kernel_size=3, beta=0.1, device="cuda")


def test_zero_targets_need_explicit_beta():
    with pytest.raises(ValueError, match="pass beta"):
        cr.fit_layer(X, torch.zeros_like(Y), kernel_size=3, num_arrangements=2)


def test_global_check_rejects_mismatched_channels():
    block = cr.fit_layer(X, Y, kernel_size=3, num_arrangements=2, beta=0.1, activation="gated", dtype=torch.float64)
    with pytest.raises(ValueError, match="'inputs' parameter must have 2 channels for this block. Got 3"):
        cr.global_check(block, torch.randn(2, 3, 6, 5), Y)
    with pytest.raises(ValueError, match="'targets' parameter must have 1 channels for this block. Got 2"):
        cr.global_check(block, X, torch.randn(2, 2, 6, 5))
    with pytest.raises(ValueError, match="'num_fresh' parameter must be an int >= 1. Got 0"):
        cr.global_check(block, X, Y, num_fresh=0)
