"""convexrecon: convex, layer-wise training of neural MRI reconstruction."""
