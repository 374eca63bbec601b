"""The host side: load a model, quantize it per platform, deploy to agents, keep results, report."""

__version__ = "0.1.0"
