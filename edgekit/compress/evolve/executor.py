"""Where a population's fitness is computed: in this process, or on a Dask cluster.

``local`` evaluates the population in-process: TensorFlow's conv/matmul kernels already use
both cores of the machine, and a process pool would have to ship the reference/validation
data and start TensorFlow in every worker (measured in BENCHMARKS.md "Evolution": one
2-worker LocalCluster is slower than in-process on this 2-core VM).

``dask://HOST:PORT`` connects a ``dask.distributed.Client`` to an existing scheduler, scatters
the fitness object (which holds the reference/validation subsets) to every worker once, then
maps the fitness over population chunks. Workers need edgekit (with its [compress] extra)
importable. Fitness rows are computed independently, so results equal the local executor's.
"""
import numpy as np

from edgekit.dask_client import DASK_TIMEOUT, connect, n_workers, parse_dask_address  # noqa: F401
from edgekit.errors import EdgekitError


def _eval_chunk(fitness, W, kwargs=None):
    return fitness.evaluate_full(W, **(kwargs or {}))


class LocalExecutor:
    name = "local"

    def __init__(self, fitness):
        self.fitness = fitness

    def evaluate_full(self, W, **kwargs):
        return self.fitness.evaluate_full(W, **kwargs)

    def close(self):
        pass


class DaskExecutor:
    """Evaluate population chunks on the workers of an existing Dask scheduler."""

    def __init__(self, fitness, address, timeout=DASK_TIMEOUT, chunks=None):
        self.name = address
        self.client = connect(address, timeout)
        try:
            self.n_workers = n_workers(self.client)
            self.chunks = chunks or self.n_workers
            self.fitness_future = self.client.scatter(fitness, broadcast=True, hash=False)
        except Exception:
            self.client.close()
            raise

    def evaluate_full(self, W, **kwargs):
        """``kwargs`` (e.g. the mini-batch index) go to every chunk's ``fitness.evaluate_full``."""
        W = np.asarray(W, np.float32)
        parts = [p for p in np.array_split(np.arange(len(W)), min(self.chunks, len(W))) if len(p)]
        futures = [self.client.submit(_eval_chunk, self.fitness_future, W[p], kwargs, pure=False)
                   for p in parts]
        results = self.client.gather(futures)
        return np.concatenate(results)

    def close(self):
        try:
            self.client.close()
        except Exception:  # closing a client whose scheduler died must not hide the real result
            pass


def make_executor(executor, fitness, timeout=DASK_TIMEOUT):
    if executor in (None, "local"):
        return LocalExecutor(fitness)
    if isinstance(executor, str) and executor.startswith("dask://"):
        return DaskExecutor(fitness, executor, timeout=timeout)
    raise EdgekitError("unknown executor {!r}: use local or dask://HOST:PORT".format(executor))
