"""Analyses that are not a measure over steps: each reads a finished run (its checkpoints, its journal)."""
