"""A wall-clock deadline training stops at: ``optimize --budget`` is a promise, not a wish.

``with until(t):`` (an absolute ``time.time()``) makes every Keras ``fit`` edgekit starts in
the block -- reference training, distillation, fine-tuning, each rung of a candidate -- end at
the first batch after ``t`` (``model.stop_training``, through the callback every fit already
carries: :func:`edgekit.models.ctrl_c_at_batch_end`). What was trained so far is then measured
like any result; :func:`was_cut` tells the caller that the deadline cut it, so the search
stops and the best candidate measured so far is written with a note.

A context variable, not a parameter threaded through every method: optimize sets it around
one candidate's evaluation (in the driver, or on a Dask worker from ``ctx["deadline"]``).

Example::

    with until(time.time() + 60):
        fit(model, ds, epochs=100)        # returns after ~60 s, best effort so far
        print(was_cut())                  # True
"""
import contextlib
import contextvars
import math
import re
import time

from edgekit.errors import EdgekitError

BUDGET_UNITS = {"s": 1, "m": 60, "h": 3600}

_STATE = contextvars.ContextVar("edgekit_deadline", default=None)


def parse_budget(text):
    """``45m``, ``90s``, ``1.5h``, ``600`` (seconds) -> seconds (float > 0); None stays None.
    The one parser of a ``--budget``: ``optimize`` and ``compress`` (prune, distill)."""
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        v = float(text)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
        if not m:
            raise EdgekitError("--budget {!r} is not a duration: use e.g. 45m, 90s, 1.5h".format(
                text))
        v = float(m.group(1)) * BUDGET_UNITS[m.group(2) or "s"]
    if not math.isfinite(v) or v <= 0:
        raise EdgekitError("--budget must be a positive duration, got {!r}".format(text))
    return v


@contextlib.contextmanager
def until(deadline):
    """Training in the block stops at ``deadline`` (seconds since the epoch; None: never)."""
    token = _STATE.set(None if deadline is None else {"at": float(deadline), "cut": False,
                                                       "warned": False})
    try:
        yield
    finally:
        _STATE.reset(token)


def passed():
    """True once the deadline of the enclosing :func:`until` has passed (marks it cut)."""
    state = _STATE.get()
    if state is None or time.time() < state["at"]:
        return False
    state["cut"] = True
    return True


def was_cut():
    """Whether a fit in the enclosing :func:`until` was stopped by its deadline."""
    state = _STATE.get()
    return bool(state and state["cut"])


def left():
    """Seconds left before the deadline (None: no deadline)."""
    state = _STATE.get()
    return None if state is None else state["at"] - time.time()


def estimate(done_epochs, total_epochs, seconds):
    """After ``done_epochs`` of a fit's ``total_epochs`` took ``seconds``: say once (stderr),
    early, when the rest cannot finish before the deadline -- with the estimate -- rather
    than let the user find out at the end."""
    import sys
    state = _STATE.get()
    if state is None or state["warned"] or not total_epochs or done_epochs >= total_epochs:
        return
    need = seconds / float(max(done_epochs, 1)) * (total_epochs - done_epochs)
    have = state["at"] - time.time()
    if need > have:
        state["warned"] = True
        print("note: this training needs about {:.0f} s more ({} of {} epochs left); --budget "
              "has {:.0f} s left: it will be cut at the deadline and the best so far kept".format(
                  need, total_epochs - done_epochs, total_epochs, max(have, 0.0)),
              file=sys.stderr, flush=True)
