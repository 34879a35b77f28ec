"""Per-modality feature extraction and readers, all on the 40 ms emotion-label grid.

``audio`` (numpy) and ``mel_jax`` (JAX) compute log-mel audio features; the other modules read
precomputed feature files (ARFF, OpenFace CSV).
"""
