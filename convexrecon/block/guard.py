"""Memory guard: estimate a solve's big buffers before allocating them.

A convex block solve holds, besides its data, the arrangement masks
(``N P H W``), convolution intermediates with ``S P C_out`` channels per
image chunk and, for the exact ReLU program, cone values and multipliers with
``2 P C_out`` channels for every pixel. :func:`check_fit_memory` adds these
up and raises :class:`MemoryBudgetError` -- saying how much is needed, how
much is available and which setting to reduce -- when they will not fit,
instead of letting the operating system kill the process (or CUDA fail
half-way through a solve).

The estimate counts the largest tensors of the solvers with the number of
copies alive at the peak, plus a fixed workspace; on CPU solves of a few
hundred MiB it was within -5 %..+50 % of the measured peak resident memory
(``ru_maxrss``). It is an estimate, not a bound. Available
memory is ``MemAvailable`` of ``/proc/meminfo`` capped by a cgroup limit on
the CPU, and free plus allocator-cached memory on a CUDA device. The
environment variable ``CONVEXRECON_MEMORY_LIMIT`` overrides it: a size
(``"8GiB"``, ``"500M"``, ``"123456"`` bytes) or ``"off"`` to skip the check.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import torch

from convexrecon.block.arrangements import default_chunk_size
from convexrecon.errors import MemoryBudgetError

ENV_VAR = "CONVEXRECON_MEMORY_LIMIT"
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}

# copies of each kind of buffer alive at the peak of a solve (counted in the solvers'
# code: iterate, momentum point, trial point, gradient and temporaries)
_IMAGE_COPIES = 16  # (N, C_out, H, W): targets, predictions, residuals of x, y and trial points
_CHUNK_COPIES = 7  # (chunk, S P C_out, H, W): conv output, masked products, adjoint input and their temporaries
_WORKSPACE = 32 * 2**20  # convolution workspaces and allocator slack, measured ~20-25 MiB on a tiny CPU solve
_CONE_COPIES = 16  # (N, 2 P C_out, H, W), relu only: C v of x, y and trial points, multipliers, clamps, float64 certificate


def parse_size(text: str) -> int:
    """Bytes in ``"8GiB"``, ``"500M"``, ``"1.5g"`` or ``"123456"``."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]i?)?b?\s*", text.lower())
    if match is None:
        raise ValueError(f"{ENV_VAR} must be a size such as '8GiB', '500M' or a number of bytes, or 'off'. "
                         f"Got {text!r} instead.")
    return int(float(match.group(1)) * _UNITS[match.group(2) or ""])


def available_bytes(device: torch.device | str = "cpu") -> tuple[int | None, str]:
    """Memory available to this process on ``device`` and where the number comes from.

    Returns ``(None, reason)`` when the check is switched off or nothing can be read.
    """
    override = os.environ.get(ENV_VAR)
    if override is not None and override.strip():
        if override.strip().lower() in ("off", "none", "false", "0"):
            return None, f"{ENV_VAR}=off"
        return parse_size(override), f"{ENV_VAR}={override.strip()}"
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached), f"free memory of {device} (torch.cuda.mem_get_info + allocator cache)"
    if device.type != "cpu":
        return None, f"no memory query for device type {device.type!r}"
    return _cpu_available()


def _cpu_available() -> tuple[int | None, str]:
    found: list[tuple[int, str]] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append((int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"))
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit_text = Path(limit_file).read_text().strip()
            if limit_text == "max":
                continue
            limit, usage = int(limit_text), int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit < 2**60:  # cgroup v1 reports "no limit" as a huge number
            found.append((max(limit - usage, 0), f"cgroup limit {limit_file}"))
    if not found:
        return None, "no memory information (/proc/meminfo, cgroup) readable"
    return min(found)


def fit_memory_terms(input_shape: tuple[int, ...], num_outputs: int, num_arrangements: int, kernel_size: int, *,
                     relu: bool, chunk_size: int | None, dtype: torch.dtype,
                     gate_chunk: int | None = None, device: torch.device | str = "cpu") -> dict[str, int]:
    """Estimated bytes of the big buffers of one ``fit_layer`` solve, by kind.

    ``input_shape`` is ``(N, C_in, *spatial)`` (any number of spatial axes).
    On the CPU the conv weight gradient unfolds a chunk's patches
    (``chunk * C_in k^d * voxels`` numbers); cuDNN does not, so on CUDA that
    term is left out (measured on an H100 at the paper's width, 320 x 320,
    C_in = 256, k = 7, P = 64: peak 0.51 / 0.74 / 2.73 GiB for 1 / 4 / 16
    images, estimates without the term 0.53 / 1.03 / 3.0 GiB;
    docs/benchmarks.md).
    """
    num_images, in_channels, spatial = int(input_shape[0]), int(input_shape[1]), tuple(input_shape[2:])
    b = torch.empty((), dtype=dtype).element_size()
    signs = 2 if relu else 1
    voxels = math.prod(spatial)
    pixels = num_images * voxels
    gates_at_once = min(gate_chunk or num_arrangements, num_arrangements)
    chunk = min(chunk_size or default_chunk_size(tuple(input_shape), signs * gates_at_once * num_outputs,
                                                 kernel_size, b), num_images)
    patch = in_channels * kernel_size ** len(spatial)
    # the float64 certificate operator shares the inputs and masks and casts them chunk by chunk (chunks
    # shrunk by the widening factor), so it adds no resident buffers and no larger transient ones
    mask_values = 0 if gate_chunk is not None else b  # with gate chunks the masks stay booleans
    terms = {
        # booleans, their values in the working precision, and the conv that makes them
        "arrangement masks": pixels * num_arrangements * (1 + mask_values) + pixels * gates_at_once * b,
        "conv intermediates": _CHUNK_COPIES * chunk * voxels * signs * gates_at_once * num_outputs * b
        + (0 if torch.device(device).type == "cuda" else chunk * patch * voxels * b),  # unfolded patches (CPU)
        "images": _IMAGE_COPIES * pixels * num_outputs * b + pixels * in_channels * b,
        "workspace": _WORKSPACE,
    }
    if relu:
        terms["cone values and multipliers"] = _CONE_COPIES * pixels * signs * num_arrangements * num_outputs * b
    return terms


def check_fit_memory(input_shape: tuple[int, ...], num_outputs: int, num_arrangements: int, kernel_size: int, *,
                     relu: bool, chunk_size: int | None, dtype: torch.dtype,
                     device: torch.device | str = "cpu", gate_chunk: int | None = None) -> int:
    """Raise :class:`MemoryBudgetError` if a ``fit_layer`` solve will not fit; return the estimate in bytes."""
    terms = fit_memory_terms(input_shape, num_outputs, num_arrangements, kernel_size, relu=relu,
                             chunk_size=chunk_size, dtype=dtype, gate_chunk=gate_chunk, device=device)
    num_images, size = int(input_shape[0]), " x ".join(str(n) for n in input_shape[2:])
    chunk = min(chunk_size or default_chunk_size(tuple(input_shape), (2 if relu else 1) * min(
        gate_chunk or num_arrangements, num_arrangements) * num_outputs, kernel_size,
        torch.empty((), dtype=dtype).element_size()), num_images)
    advice = {
        "arrangement masks": f"num_arrangements (now {num_arrangements}) or the number of images/patches "
                             f"(now {num_images})",
        "conv intermediates": f"chunk_size (now {chunk_size if chunk_size is not None else f'None = {chunk}'} "
                              f"images per chunk), gate_chunk (now {gate_chunk}) or num_arrangements "
                              f"(now {num_arrangements})",
        "images": f"the number of images/patches (now {num_images}) or their size ({size})",
        "workspace": "the other programs' memory use",
        "cone values and multipliers": f"num_arrangements (now {num_arrangements}), the number of images/patches "
                                       f"(now {num_images}), or use activation='gated'",
    }
    return _check("fit_layer", terms, advice, device)


def check_buffer_memory(what: str, terms: dict[str, int], advice: dict[str, str],
                        device: torch.device | str = "cpu") -> int:
    """The same check for any named set of buffers (e.g. a trainer's features)."""
    return _check(what, terms, advice, device)


def _check(what: str, terms: dict[str, int], advice: dict[str, str], device: torch.device | str) -> int:
    needed = sum(terms.values())
    available, source = available_bytes(device)
    if available is None or needed <= available:
        return needed
    parts = ", ".join(f"{name} {_gib(size)}" for name, size in sorted(terms.items(), key=lambda t: -t[1]))
    largest = max(terms, key=terms.__getitem__)
    raise MemoryBudgetError(
        f"{what} needs about {_gib(needed)} ({parts}) but only {_gib(available)} is available on {device} "
        f"({source}). Reduce {advice[largest]}. To override this estimate set {ENV_VAR} to a size or 'off'."
    )


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**27 else f"{n / 2**20:.3g} MiB"
