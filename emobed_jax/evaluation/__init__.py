"""Evaluation: metrics, evaluators, post-processing, prediction exports and plots."""
