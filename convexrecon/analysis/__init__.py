"""Looking inside trained networks: linear regions and filters (:mod:`~convexrecon.analysis.explain`),
and the memory of end-to-end versus layer-wise training (:mod:`~convexrecon.analysis.memory`)."""
