"""From prepared datasets to batches: read splits, normalise, delay labels, window and batch."""
