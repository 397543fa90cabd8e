"""emergence: what changes inside a transformer before it acquires a capability, and did it come first."""

__version__ = "0.1.0"
