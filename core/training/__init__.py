"""Training: config schema, the loop, checkpoints, validation. Run as `python -m core.training`."""
