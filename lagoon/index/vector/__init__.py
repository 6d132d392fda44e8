"""Vector search: the IVF index (k-means build, probe, 8-bit first pass, exact re-rank) and the
exact distance and top-k kernels shared by every vector path."""
