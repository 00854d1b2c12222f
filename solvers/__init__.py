"""Generic convex solvers for group-lasso and cone-constrained programs."""
