r"""What an unrolled stage's block sees besides the estimate: :class:`StageInputs`, parsed in one place.

``bias`` adds a constant channel :math:`\rho = \max|P^T x_1|` of the slice; ``shrink`` the estimate
wavelet-shrunk at each relative threshold; ``cs_iterations`` > 0 starts the chain from that many
FISTA steps of L1-wavelet CS with weight ``cs_lambda`` :math:`\cdot\rho`, and ``cs_inputs`` adds the
CS images at further (weight, wavelet) pairs (``docs/design.md`` §9.1). ``cs_relative="noise"``
scales those weights by the slice's noise level estimated from its own outer k-space
(:func:`~convexrecon.mri.noise.estimate_noise`) instead of :math:`\rho`: the best CS weight follows the
noise, not the image maximum, so a network trained at one SNR keeps a sensible CS start at another.

The fallback inputs: ``sense_input`` adds the unregularised SENSE-CG image (:data:`SENSE_ITERATIONS` CG
steps on :math:`A^H A` from zero, the classical SENSE-CG reference) as a block input, and ``sense_start``
starts the chain from it. With the skip connection a zero block leaves its stage's estimate as it is, so
a network whose stages are all identity stages (zero block, no DC step) returns its start exactly, and a
block that sees the SENSE-CG image can reproduce it; :func:`~convexrecon.stack.unrolled_train.train_unrolled`
with ``keep_start`` makes a stage the identity whenever every candidate scores worse than the stage's
input on the held-out slices.

``residual`` gives the block every further image *minus the estimate* (the zero-filled image, the shrunk
estimates, the CS images, SENSE-CG) and not the estimate itself. The correction then depends on the
estimate only through how the other reconstructions disagree with it, and the gated block is positively
homogeneous, so a correction learned where the reconstructions disagree by noise of one level shrinks
with them where the noise is lower: on the quick benchmark's out-of-distribution sets it keeps the network
near its CS start at 4x the training SNR, where a block that sees the estimate itself costs about 3 dB
(docs/benchmarks.md §1.4). The block can still reproduce any input image (weight 1 on its difference). The
trainers, the network,
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
from convexrecon.mri.sparsity import CYCLE_SHIFTS

CsInput = tuple[float, str]
CS_RELATIVE = ("max", "noise")  # what the CS weights multiply: the slice's max |P^T x_1|, or its noise estimate
SENSE_ITERATIONS = 10  # CG steps of the SENSE-CG input and start (sigpy's SenseRecon default, as sense_cg)


@dataclass(frozen=True)
class StageInputs:
    r"""The further block inputs and the CS start of an unrolled network (checked and normalised on creation).

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
    sense_input
        Adds the unregularised SENSE-CG image as a block input (2 channels).
    sense_start
        Starts the chain from the SENSE-CG image instead of the zero-filled image or the CS start (the CS
        inputs stay; ``cs_lambda`` then weighs nothing but must still be valid when ``cs_iterations`` > 0).
    cs_relative
        ``"max"``: CS weights are relative to :math:`\rho = \max|P^T x_1|`; ``"noise"``: relative to the
        slice's estimated noise standard deviation (:func:`~convexrecon.mri.noise.estimate_noise`).
    residual
        The block sees every further image minus the estimate, and not the estimate (2 channels fewer).
    cs_shifts
        Every CS image (start and inputs) is cycle-spun over this many wavelet-grid shifts
        (:data:`~convexrecon.mri.sparsity.CYCLE_SHIFTS`; 1: plain CS). Cycle spinning costs that many times
        the CS work per slice.
    dc_noise
        0: every stage's data-consistency weight :math:`\lambda_i` is used as trained. > 0: the relative
        noise level :math:`r_0` at which the :math:`\lambda_i` hold, and a slice of relative noise level
        :math:`r = \hat\sigma / \max|P^T x_1|` (:func:`~convexrecon.mri.noise.estimate_noise`) gets
        :math:`\lambda_i (r / r_0)^2`. The DC step :math:`\arg\min_x \|Ax - k\|^2 + \lambda\|x - z\|^2`
        is the MAP estimate for noise of variance :math:`\sigma^2` and an error of :math:`z` of variance
        :math:`\tau^2` when :math:`\lambda = \sigma^2 / \tau^2`, so on a scan with less noise the measured
        data weigh more (``docs/design.md`` §9.2).
    cs_noise
        0: the CS weights are ``cs_lambda`` (and the ``cs_inputs`` weights) times :math:`\hat\sigma` or
        :math:`\rho` as ``cs_relative`` says. > 0: the relative noise level :math:`r_0` of the training data,
        and a slice that is cleaner (:math:`r < r_0`) gets every CS weight times :math:`r / r_0`; a noisier
        slice keeps them. With ``cs_relative="noise"`` the weight is then :math:`c\,\hat\sigma^2 / (r_0\rho)`
        below :math:`r_0`, the MAP weight :math:`\sigma^2 / b` of a Laplace prior whose scale :math:`b` follows
        the image (:math:`\propto \rho`). On the knee family with Poisson-disc sampling the best cycle-spun CS
        weight moves so (c* 0.29 σ̂ at SNR 10 and 25, 0.09 σ̂ at SNR 100: ``benchmarks/cs_weight_law.py``), and a
        weight that follows σ̂ alone over-smooths clean scans (``docs/design.md`` §9.2).
    """

    bias: bool = False
    shrink: tuple[float, ...] = ()
    cs_iterations: int = 0
    cs_lambda: float = 0.0
    cs_inputs: tuple[CsInput, ...] = ()
    sense_input: bool = False
    sense_start: bool = False
    cs_relative: str = "max"
    residual: bool = False
    cs_shifts: int = 1
    dc_noise: float = 0.0
    cs_noise: float = 0.0

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
        if self.cs_relative not in CS_RELATIVE:
            raise ValueError(f"The 'cs_relative' parameter must be one of {CS_RELATIVE}. Got {self.cs_relative!r} "
                             "instead.")
        object.__setattr__(self, "bias", bool_flag("bias", self.bias))
        object.__setattr__(self, "sense_input", bool_flag("sense_input", self.sense_input))
        object.__setattr__(self, "sense_start", bool_flag("sense_start", self.sense_start))
        object.__setattr__(self, "residual", bool_flag("residual", self.residual))
        shifts = self.cs_shifts
        if not (isinstance(shifts, int) and not isinstance(shifts, bool) and 1 <= shifts <= len(CYCLE_SHIFTS)):
            raise ValueError(f"The 'cs_shifts' parameter must be an int from 1 (plain CS) to {len(CYCLE_SHIFTS)} "
                             f"(wavelet-grid shifts of cycle-spun CS). Got {shifts!r} instead.")
        for name, meaning in (("dc_noise", "data-consistency weights as trained; > 0: the relative noise level at "
                                           "which they hold"),
                              ("cs_noise", "CS weights as cs_relative says; > 0: the training data's relative noise "
                                           "level, below which they shrink with the noise")):
            noise = getattr(self, name)
            if not (isinstance(noise, (int, float)) and not isinstance(noise, bool) and math.isfinite(noise)
                    and noise >= 0):
                raise ValueError(f"The '{name}' parameter must be a finite number >= 0 (0: {meaning}). Got "
                                 f"{noise!r} instead.")
            object.__setattr__(self, name, float(noise))
        if self.cs_noise > 0 and not iterations:
            raise ValueError(f"The 'cs_noise' parameter needs 'cs_iterations' > 0 (it scales the CS weights). Got "
                             f"cs_noise={self.cs_noise!r} with cs_iterations=0.")
        object.__setattr__(self, "shrink", _thresholds(self.shrink))
        object.__setattr__(self, "cs_lambda", float(lam))
        object.__setattr__(self, "cs_inputs", inputs)

    @classmethod
    def from_options(cls, *, bias: Any = False, shrink: Any = (), cs_iterations: Any = 0, cs_lambda: Any = 0.0,
                     cs_inputs: Any = (), relative: bool = False, sense_input: Any = False,
                     sense_start: Any = False, cs_relative: str = "max", residual: Any = False,
                     cs_shifts: Any = 1, dc_noise: Any = 0.0, cs_noise: Any = 0.0) -> "StageInputs":
        """The inputs as a command line or a benchmark configuration states them.

        ``cs_lambda`` and ``cs_inputs`` apply to a CS start only: without one (``cs_iterations`` 0) they
        are dropped. ``cs_inputs`` items may also be text ``"L"`` or ``"L:WAVELET"``
        (:meth:`parse_cs_input`); with ``relative`` their weights are multiples of ``cs_lambda``.
        """
        more = {"sense_input": sense_input, "sense_start": sense_start, "cs_relative": cs_relative,
                "residual": residual, "cs_shifts": cs_shifts, "dc_noise": dc_noise}
        if not cs_iterations:
            return cls(bias, shrink, cs_iterations, 0.0, (), **more)
        more["cs_noise"] = cs_noise
        items = [cls.parse_cs_input(item) if isinstance(item, str) else item for item in cs_inputs]
        pairs = [(f, DEFAULT_WAVE) if isinstance(f, (int, float)) else tuple(f) for f in items]
        if relative:
            pairs = [(float(f) * float(cs_lambda), w) for f, w in pairs]
        return cls(bias, shrink, cs_iterations, cs_lambda, tuple(pairs), **more)

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
        """Input channels of a stage's block: the estimate (2; not with ``residual``), the zero-filled image (2)
        when ``concat_input``, the constant channel (1), every shrunk estimate (2 each), every further CS image
        (2 each) and the SENSE-CG image (2) when ``sense_input``."""
        return (2 * (not self.residual) + 2 * bool(concat_input) + int(self.bias) + 2 * len(self.shrink) + 2 * len(self.cs_inputs)
                + 2 * int(self.sense_input))

    @property
    def images(self) -> int:
        """Images computed once per slice (:meth:`UnrolledNet.initial`): the start, the CS inputs, SENSE-CG."""
        return 1 + len(self.cs_inputs) + int(self.sense_input)

    @property
    def precomputed(self) -> bool:
        """Whether those images cost more than the zero-filled image (worth computing once and reusing)."""
        return bool(self.cs_iterations or self.sense_input or self.sense_start)

    def options(self) -> dict[str, Any]:
        """The fields as keyword arguments (of :class:`~convexrecon.stack.unrolled.UnrolledNet`)."""
        return {"bias": self.bias, "shrink": self.shrink, "cs_iterations": self.cs_iterations,
                "cs_lambda": self.cs_lambda, "cs_inputs": self.cs_inputs, "sense_input": self.sense_input,
                "sense_start": self.sense_start, "cs_relative": self.cs_relative, "residual": self.residual,
                "cs_shifts": self.cs_shifts, "dc_noise": self.dc_noise, "cs_noise": self.cs_noise}

    def settings(self) -> dict[str, Any]:
        """The fields as JSON values (lists for tuples), as saved in configs and checkpoints; the fallback and
        noise-relative fields only when they differ from their defaults, so the records of networks without
        them (and the checkpoints they resume from) keep their keys."""
        out = {**self.options(), "shrink": list(self.shrink), "cs_inputs": [list(c) for c in self.cs_inputs]}
        for name, default in (("sense_input", False), ("sense_start", False), ("cs_relative", "max"),
                              ("residual", False), ("cs_shifts", 1), ("dc_noise", 0.0), ("cs_noise", 0.0)):
            if out[name] == default:
                del out[name]
        return out


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
