r"""What an unrolled stage's block sees besides the estimate: :class:`StageInputs`, parsed in one place.

``bias`` adds a constant channel :math:`\rho = \max|P^T x_1|` of the slice; ``shrink`` the estimate
wavelet-shrunk at each relative threshold; ``cs_iterations`` > 0 starts the chain from that many
FISTA steps of L1-wavelet CS with weight ``cs_lambda`` :math:`\cdot\rho`, and ``cs_inputs`` adds the
CS images at further (weight, wavelet) pairs (``docs/design.md`` §9.1). The trainers, the network,
the command line (:meth:`StageInputs.parse_cs_input`) and the benchmarks
(:meth:`StageInputs.from_options`) all build this one object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pywt

from convexrecon.checks import bool_flag
from convexrecon.mri import DEFAULT_WAVE

CsInput = tuple[float, str]


@dataclass(frozen=True)
class StageInputs:
    """The further block inputs and the CS start of an unrolled network (checked and normalised on creation).

    Attributes
    ----------
    bias
        A constant input channel (the first layer's bias, scaled with the slice).
    shrink
        Relative thresholds > 0 of the wavelet-shrunk estimates.
    cs_iterations, cs_lambda
        FISTA steps of the CS start (0: the zero-filled image) and its relative L1 weight (> 0 with a CS start).
    cs_inputs
        ``((weight, wavelet), ...)``: further CS images (need ``cs_iterations`` > 0); a bare number means
        Daubechies-4.
    """

    bias: bool = False
    shrink: tuple[float, ...] = ()
    cs_iterations: int = 0
    cs_lambda: float = 0.0
    cs_inputs: tuple[CsInput, ...] = ()

    def __post_init__(self) -> None:
        iterations, lam = self.cs_iterations, self.cs_lambda
        if not (isinstance(iterations, int) and not isinstance(iterations, bool) and iterations >= 0):
            raise ValueError(f"The 'cs_iterations' parameter must be an int >= 0 (0: start from the zero-filled "
                             f"image). Got {iterations!r} instead.")
        if not (isinstance(lam, (int, float)) and not isinstance(lam, bool) and math.isfinite(lam)
                and lam >= 0 and (lam > 0 or iterations == 0)):
            raise ValueError(f"The 'cs_lambda' parameter must be a finite number > 0 when 'cs_iterations' > 0 "
                             f"(relative L1-wavelet weight). Got {lam!r} instead.")
        inputs = _cs_inputs(self.cs_inputs)
        if inputs and not iterations:
            raise ValueError(f"The 'cs_inputs' parameter needs 'cs_iterations' > 0 (the FISTA steps of every CS "
                             f"image). Got cs_inputs={inputs!r} with cs_iterations=0.")
        object.__setattr__(self, "bias", bool_flag("bias", self.bias))
        object.__setattr__(self, "shrink", _thresholds(self.shrink))
        object.__setattr__(self, "cs_lambda", float(lam))
        object.__setattr__(self, "cs_inputs", inputs)

    @classmethod
    def from_options(cls, *, bias: Any = False, shrink: Any = (), cs_iterations: Any = 0, cs_lambda: Any = 0.0,
                     cs_inputs: Any = (), relative: bool = False) -> "StageInputs":
        """The inputs as a command line or a benchmark configuration states them.

        ``cs_lambda`` and ``cs_inputs`` apply to a CS start only: without one (``cs_iterations`` 0) they
        are dropped. ``cs_inputs`` items may also be text ``"L"`` or ``"L:WAVELET"``
        (:meth:`parse_cs_input`); with ``relative`` their weights are multiples of ``cs_lambda``.
        """
        if not cs_iterations:
            return cls(bias, shrink, cs_iterations, 0.0, ())
        items = [cls.parse_cs_input(item) if isinstance(item, str) else item for item in cs_inputs]
        pairs = [(f, DEFAULT_WAVE) if isinstance(f, (int, float)) else tuple(f) for f in items]
        if relative:
            pairs = [(float(f) * float(cs_lambda), w) for f, w in pairs]
        return cls(bias, shrink, cs_iterations, cs_lambda, tuple(pairs))

    @staticmethod
    def parse_cs_input(text: str) -> CsInput:
        """``"L"`` or ``"L:WAVELET"`` as ``(L, wavelet)`` (Daubechies-4 by default); ``ValueError`` otherwise."""
        lam, _, wave = text.partition(":")
        wave = wave or DEFAULT_WAVE
        try:
            value = float(lam)
        except ValueError:
            value = math.nan
        if not (value > 0 and math.isfinite(value)) or wave not in pywt.wavelist(kind="discrete"):
            raise ValueError(f"expected L or L:WAVELET, L a finite weight > 0 and WAVELET a discrete PyWavelets name "
                             f"(e.g. 0.003:haar). Got {text!r}")
        return value, wave

    def channels(self, concat_input: bool = True) -> int:
        """Input channels of a stage's block: the estimate (2), the zero-filled image (2) when ``concat_input``,
        the constant channel (1), every shrunk estimate (2 each) and every further CS image (2 each)."""
        return 2 + 2 * bool(concat_input) + int(self.bias) + 2 * len(self.shrink) + 2 * len(self.cs_inputs)

    def options(self) -> dict[str, Any]:
        """The fields as keyword arguments (of :class:`~convexrecon.stack.unrolled.UnrolledNet`)."""
        return {"bias": self.bias, "shrink": self.shrink, "cs_iterations": self.cs_iterations,
                "cs_lambda": self.cs_lambda, "cs_inputs": self.cs_inputs}

    def settings(self) -> dict[str, Any]:
        """The fields as JSON values (lists for tuples), as saved in configs and checkpoints."""
        return {**self.options(), "shrink": list(self.shrink), "cs_inputs": [list(c) for c in self.cs_inputs]}


def _cs_inputs(value: Any) -> tuple[CsInput, ...]:
    """``cs_inputs`` as ``((λ, wavelet), …)``: each item a relative weight (Daubechies-4) or a ``(weight, wavelet)``
    pair with a discrete PyWavelets name."""
    error = ValueError(f"The 'cs_inputs' parameter must be a sequence of relative L1 weights > 0, each a number "
                       f"(Daubechies-4) or a (weight, wavelet) pair with a discrete PyWavelets name such as 'haar' or "
                       f"'sym8' (empty: none). Got {value!r} instead.")
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise error
    out = []
    for item in value:
        lam, wave = (item, DEFAULT_WAVE) if isinstance(item, (int, float)) else tuple(item) if (
            hasattr(item, "__len__") and not isinstance(item, (str, bytes)) and len(item) == 2) else (None, None)
        if (not isinstance(lam, (int, float)) or isinstance(lam, bool) or not math.isfinite(lam) or lam <= 0
                or wave not in pywt.wavelist(kind="discrete")):
            raise error
        out.append((float(lam), str(wave)))
    return tuple(out)


def _thresholds(shrink: Any) -> tuple[float, ...]:
    """``shrink`` as a tuple of finite relative thresholds > 0."""
    error = ValueError(f"The 'shrink' parameter must be a sequence of finite relative thresholds > 0 (empty: none). "
                       f"Got {shrink!r} instead.")
    if isinstance(shrink, (str, bytes)):
        raise error
    try:
        values = tuple(float(t) for t in shrink)
    except (TypeError, ValueError):
        raise error from None
    if not all(t > 0 and math.isfinite(t) for t in values):
        raise error
    return values
