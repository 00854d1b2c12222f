"""What the benchmark scripts share, one module per concern (import from the module itself):

* :mod:`~benchmarks.kit.runinfo`: run metadata (time, machine, command line) and results files;
* :mod:`~benchmarks.kit.figures`: the knee experiment's figures;
* :mod:`~benchmarks.kit.configs`: the knee experiment's typed configurations, masks and time estimate;
* :mod:`~benchmarks.kit.data`: synthetic sets, the measured-data split (one ESPIRiT run per slice);
* :mod:`~benchmarks.kit.methods`: scores and every trained or classical method of the knee experiment;
* :mod:`~benchmarks.kit.evidence`: cycle-spun CS, per-method effort (epochs / iterations, converged / certified),
  paired per-slice differences and the Adam baselines' held-out curves;
* :mod:`~benchmarks.kit.seeds`: spread over seeds (mean ± std per learned method, headline differences pooled over
  seeds, the first seed's rule choice for later seeds);
* :mod:`~benchmarks.kit.report`: the knee experiment's ``results.md``;
* :mod:`~benchmarks.kit.memory`: Fig. 4 (the largest trainable batch) measured on CUDA.

Everything here calls library functions; nothing re-implements them.
"""
