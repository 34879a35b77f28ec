"""Flax models: per-modality encoders, projectors and the shared recognition head."""
