"""User-facing errors (see :mod:`edgekit.runtime.errors`); bugs keep their tracebacks."""
from edgekit.runtime.errors import EdgekitError, HardwareMissing, MissingDependency

__all__ = ["EdgekitError", "MissingDependency", "HardwareMissing", "OverBudget"]


class OverBudget(EdgekitError):
    """Nothing the method can make fits the byte budget; ``smallest``: the fewest bytes it
    could reach (what ``optimize`` records as the candidate's bound)."""

    def __init__(self, message, smallest=None):
        EdgekitError.__init__(self, message)
        self.smallest = smallest
