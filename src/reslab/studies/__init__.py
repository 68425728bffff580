"""Orchestrators above training, evaluation and sweeps: comparisons (and whole studies)."""
