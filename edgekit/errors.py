"""User-facing errors (see :mod:`edgekit.runtime.errors`); bugs keep their tracebacks."""
from edgekit.runtime.errors import EdgekitError, HardwareMissing, MissingDependency

__all__ = ["EdgekitError", "MissingDependency", "HardwareMissing"]
