"""Templates of the per-method sections of train.py."""
