"""The version of emergence, recorded in every run's journal and tracker tags."""

__version__ = "0.1.0"
