"""Where optimize's candidates are evaluated: in this process, or on a Dask cluster.

The driver proposes trials; an executor only runs
:func:`edgekit.optimize.evaluate.evaluate` on ``(candidate, number, ctx, thresholds)``
tuples and returns the results in the order given. ``dask://HOST:PORT`` submits one task per
candidate to an existing scheduler (the connection and its errors are
:func:`edgekit.compress.evolve.executor.connect`'s); workers need edgekit installed and the
output directory on a shared filesystem (they write ``DIR/candidates/NNN`` themselves).
Workers that are threads of one process share TensorFlow's global seed: give them one thread
each (``dask worker --nthreads 1``) so two trainings never interleave.

Example::

    with open_executor("dask://127.0.0.1:8786") as ex:
        results = ex.map([(cand, 0, ctx, [])])
"""
from edgekit.dask_client import DASK_TIMEOUT, check_reachable, connect, parse_dask_address
from edgekit.errors import EdgekitError


def check_executor(spec, reach=True):
    """``local`` or ``dask://HOST:PORT`` (refused otherwise, before any work): parsed, its
    port in range and, with ``reach``, something listening there (a short TCP connect)."""
    if spec in (None, "local"):
        return "local"
    if isinstance(spec, str) and spec.startswith("dask://"):
        parse_dask_address(spec)
        if reach:
            check_reachable(spec)
        return spec
    raise EdgekitError("--executor {!r} is not valid: use local or dask://HOST:PORT".format(spec))


class LocalExecutor:
    """In this process, one candidate after the other (TensorFlow uses every core already)."""

    def __init__(self, ds=None):
        self.ds = ds

    def map(self, jobs):
        from edgekit.optimize.evaluate import evaluate
        return [evaluate(c, n, ctx, cut, ds=self.ds) for c, n, ctx, cut in jobs]

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DaskExecutor(LocalExecutor):
    """One task per candidate on the workers of an existing scheduler."""

    def __init__(self, address, timeout=DASK_TIMEOUT):
        self.client = connect(address, timeout)

    def map(self, jobs):
        from edgekit.optimize.evaluate import evaluate
        futures = [self.client.submit(evaluate, c, n, ctx, cut, pure=False)
                   for c, n, ctx, cut in jobs]
        return self.client.gather(futures)

    def close(self):
        try:
            self.client.close()
        except Exception:  # a dead scheduler must not hide the run's own result
            pass


def open_executor(spec, ds=None, timeout=DASK_TIMEOUT):
    spec = check_executor(spec, reach=False)  # reached by connect() itself
    return LocalExecutor(ds) if spec == "local" else DaskExecutor(spec, timeout)
