"""Inference cost of a saved model per slice, split into its phases.

For an unrolled network (``train --recommended``) one slice's reconstruction is: read the k-space and make its
mask, full-grid ESPIRiT maps, the SENSE images (zero-filled input and slice scale), the images computed once
before the first stage (:meth:`~convexrecon.stack.unrolled.UnrolledNet.initial`: the CS start and the CS inputs,
batched FISTA per wavelet) and the stages (blocks and data-consistency CG). The same slice is then reconstructed
end to end with :func:`~convexrecon.recon.reconstruct_slice`, as ``reconstruct`` does. For the layer-wise CNN the
phases are the maps, the SENSE images and the network.

    OMP_NUM_THREADS=1 python -m benchmarks.bench_recon --model MODEL_DIR --data FILE_OR_DIR --slices 1

``--cs-shifts 1 4`` also times an unrolled network's CS images with those numbers of wavelet-grid shifts, in the
same run (rows marked "side by side", outside the sum).

Prints a Markdown table and writes JSON and Markdown to ``--out`` (default ``benchmarks/results/recon-cost``).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.kit.runinfo import command, machine, utc_now, write_results
from convexrecon.data.fastmri import FastMRIVolume, list_volumes
from convexrecon.mri.espirit import calibration_width, coil_maps
from convexrecon.mri.fft import complex_to_channels
from convexrecon.mri.sense import sense_images
from convexrecon.recon import mask_func_of, model_crop, reconstruct_slice, volume_sampling
from convexrecon.stack.persist import load_network


class Clock:
    """Seconds per named phase, summed over slices."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.mark = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self.mark
        self.mark = now


@torch.no_grad()
def time_slice(net, volume: FastMRIVolume, index: int, clock: Clock, end_to_end: bool,
               shifts: tuple[int, ...] = ()) -> None:
    """Time one slice's phases (and, with ``end_to_end``, one :func:`reconstruct_slice` call) into ``clock``;
    ``shifts``: also time an unrolled network's start images with each of these ``cs_shifts`` (side by side)."""
    mask_func = mask_func_of(net.config)
    crop = model_crop(net, volume.shape[-2:])
    clock.mark = time.perf_counter()
    kspace = volume.kspace(index)
    mask = volume_sampling(volume, mask_func).mask(kspace, volume, index, mask_func)
    limit = mask_func.calibration_limit(mask.shape)
    masked = kspace * mask
    clock.lap("read k-space, mask")
    if getattr(net, "needs_measurements", False):
        maps = coil_maps(masked, calibration_width(mask, limit))
        clock.lap("ESPIRiT maps (full grid)")
        images = sense_images(masked, mask, limit, crop, maps=maps)
        clock.lap("SENSE images, scale")
        k = torch.as_tensor(np.asarray(masked / images.scale, dtype=np.complex64))[None]
        s = torch.as_tensor(np.asarray(maps, dtype=np.complex64))[None]
        m = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None]
        with net.at_crop(crop):
            initial = net.initial(net.start(k, s, m), k, s, m)
            clock.lap("CS start and CS inputs (FISTA)")
            for n in shifts:  # the same images with another number of wavelet-grid shifts
                inputs, net.stage_inputs = net.stage_inputs, dataclasses.replace(net.stage_inputs, cs_shifts=n)
                try:
                    clock.mark = time.perf_counter()
                    net.initial(net.start(k, s, m), k, s, m)
                    clock.lap(f"(side by side) CS images with cs_shifts={n}")
                finally:
                    net.stage_inputs = inputs
            net(k, s, m, initial=initial)
            clock.lap("stages (blocks + DC)")
    else:
        images = sense_images(masked, mask, limit, crop)
        clock.lap("ESPIRiT maps + SENSE images")
        x = complex_to_channels(images.input)[None].to(next(net.parameters()).dtype)
        net(x)
        clock.lap("network")
    if end_to_end:
        reconstruct_slice(net, masked, mask, crop=crop)
        clock.lap("end to end: reconstruct_slice")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="directory written by `train`")
    parser.add_argument("--data", type=Path, required=True, help="a fastMRI .h5 file or a directory of them")
    parser.add_argument("--slices", type=int, default=1, help="slices timed (first files first; default 1)")
    parser.add_argument("--no-end-to-end", action="store_true", help="skip the reconstruct_slice timing")
    parser.add_argument("--cs-shifts", type=int, nargs="+", default=[], metavar="N",
                        help="unrolled models: also time the CS images with each of these numbers of wavelet-grid "
                             "shifts (not part of the sum of the phases)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/recon-cost"))
    args = parser.parse_args(argv)
    if args.slices < 1:
        parser.error(f"argument --slices: expected an int >= 1. Got {args.slices} instead.")
    net = load_network(args.model, map_location="cpu").eval()
    paths = [args.data] if args.data.is_file() else list_volumes(args.data)
    clock, done, shape = Clock(), 0, None
    for path in paths:
        volume = FastMRIVolume(path)
        for index in range(volume.num_slices):
            if done == args.slices:
                break
            shape = (*volume.shape[-3:],)
            time_slice(net, volume, index, clock, not args.no_end_to_end, tuple(args.cs_shifts))
            done += 1
    per_slice = {name: seconds / done for name, seconds in clock.seconds.items()}
    phases = {k: v for k, v in per_slice.items() if not k.startswith(("end to end", "(side by side)"))}
    lines = ["| phase | s/slice |", "| --- | --- |"]
    lines += [f"| {name} | {seconds:.2f} |" for name, seconds in phases.items()]
    lines.append(f"| sum of the phases | {sum(phases.values()):.2f} |")
    lines += [f"| {name} | {seconds:.2f} |" for name, seconds in per_slice.items() if name.startswith("(side by side)")]
    if "end to end: reconstruct_slice" in per_slice:
        lines.append(f"| end to end: reconstruct_slice | {per_slice['end to end: reconstruct_slice']:.2f} |")
    header = (f"model {args.model} ({type(net).__name__}, "
              f"crop {model_crop(net, shape[-2:])}), {done} slice(s) of k-space {shape} (coils, H, W), "
              f"{torch.get_num_threads()} torch thread(s)")
    markdown = "\n".join([f"# Inference cost per slice\n", f"    {command('bench_recon.py', argv)}\n",
                          f"{utc_now()}, {machine()}\n", header + "\n", *lines]) + "\n"
    print(markdown)
    results = {"date": utc_now(), "machine": machine(), "command": command("bench_recon.py", argv),
               "model": str(args.model), "slices": done, "kspace_shape": shape,
               "threads": torch.get_num_threads(), "seconds_per_slice": per_slice}
    args.out.mkdir(parents=True, exist_ok=True)
    write_results(args.out, results, markdown)
    return results


if __name__ == "__main__":
    main()
