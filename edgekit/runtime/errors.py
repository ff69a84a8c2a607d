"""The one user-facing exception family.

Lives in ``edgekit.runtime`` because the device-side runners raise it too (the bundle
ships only this package). ``edgekit.errors`` re-exports it for host code.
Python 3.6 syntax: this file runs on a Jetson Nano.
"""


class EdgekitError(Exception):
    """A problem the user can act on: printed as one ``error:`` line, exit 1."""

    exit_code = 1


class MissingDependency(EdgekitError):
    """An optional package, runtime or piece of hardware is absent: exit 2.

    The message says what to install or attach.
    """

    exit_code = 2


class HardwareMissing(MissingDependency):
    """The target device (NCS2 stick, Jetson GPU) is not attached here: exit 2."""
