"""Training: state and step, the one training loop, devices, checkpoints, preemption, seeds."""
