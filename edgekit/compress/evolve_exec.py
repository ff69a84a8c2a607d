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

from edgekit.errors import EdgekitError, MissingDependency

DASK_TIMEOUT = 10.0


def _eval_chunk(fitness, W):
    return fitness.evaluate_full(W)


class LocalExecutor:
    name = "local"

    def __init__(self, fitness):
        self.fitness = fitness

    def evaluate_full(self, W):
        return self.fitness.evaluate_full(W)

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

    def evaluate_full(self, W):
        W = np.asarray(W, np.float32)
        parts = [p for p in np.array_split(np.arange(len(W)), min(self.chunks, len(W))) if len(p)]
        futures = [self.client.submit(_eval_chunk, self.fitness_future, W[p], pure=False) for p in parts]
        results = self.client.gather(futures)
        return np.concatenate(results)

    def close(self):
        try:
            self.client.close()
        except Exception:  # closing a client whose scheduler died must not hide the real result
            pass


def connect(address, timeout=DASK_TIMEOUT):
    """A ``distributed.Client`` on the scheduler at ``dask://HOST:PORT`` with at least one
    worker, or one ``EdgekitError`` line saying what to start (within ``timeout`` s)."""
    try:
        from distributed import Client
    except ImportError:
        raise MissingDependency("dask executor needs dask.distributed: pip install 'distributed'") from None
    url = parse_dask_address(address)
    try:
        client = _within(timeout + 5.0, lambda: Client(url, timeout=timeout, set_as_default=False),
                         "no Dask scheduler answered at {} within {:g}s: is that port a Dask "
                         "scheduler's (`dask scheduler` prints it)? Or use --executor local"
                         .format(address, timeout + 5.0))
    except (OSError, TimeoutError) as exc:
        raise EdgekitError("cannot reach the Dask scheduler at {} within {:g}s ({}): start one with "
                           "`dask scheduler` or use --executor local".format(
                               address, timeout, str(exc).splitlines()[0][:120] or type(exc).__name__)) from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (OSError, TimeoutError):
        client.close()
        raise EdgekitError("the Dask scheduler at {} has no workers (waited {:g}s): start one with "
                           "`dask worker {}`".format(address, timeout, url)) from None
    except Exception:
        client.close()
        raise
    return client


def _within(seconds, fn, message):
    """``fn()`` in a daemon thread, or EdgekitError(``message``) when it has not returned
    within ``seconds``: ``distributed.Client`` on a port that accepts connections but never
    speaks Dask's protocol (an HTTP server, a plain listener) waits forever, whatever its
    ``timeout``. The abandoned thread dies with the process."""
    import threading
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc
    t = threading.Thread(target=run, name="edgekit-dask-connect", daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise EdgekitError(message)
    if "error" in box:
        raise box["error"]
    return box["value"]


def n_workers(client):
    return max(1, len(client.scheduler_info().get("workers", {})))


def parse_dask_address(address):
    """``dask://HOST:PORT`` -> ``tcp://HOST:PORT`` (refuse anything else)."""
    rest = address[len("dask://"):] if address.startswith("dask://") else None
    host, _, port = (rest or "").rpartition(":")
    if not rest or not host or not port.isdigit():
        raise EdgekitError("executor {!r} is not valid: use local or dask://HOST:PORT".format(address))
    if not 1 <= int(port) <= 65535:
        raise EdgekitError("executor {!r}: port {} is not in 1..65535".format(address, int(port)))
    return "tcp://{}:{}".format(host, int(port))


def check_reachable(address, timeout=3.0):
    """Refuse, before any work, a ``dask://HOST:PORT`` whose host does not resolve or whose
    port does not accept a TCP connection within ``timeout`` seconds (a plain socket: no
    Dask handshake, no scheduler-side state)."""
    import socket
    host, _, port = parse_dask_address(address)[len("tcp://"):].rpartition(":")
    host = host.strip("[]")
    try:
        socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise EdgekitError("executor {}: cannot resolve host {!r} ({})".format(
            address, host, getattr(exc, "strerror", None) or exc)) from None
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise EdgekitError("executor {}: nothing answers on {}:{} ({}): start a scheduler there "
                           "(`dask scheduler --port {}`) or use --executor local".format(
                               address, host, port, exc.strerror or "timed out after {:g} s"
                               .format(timeout), port)) from None


def make_executor(executor, fitness, timeout=DASK_TIMEOUT):
    if executor in (None, "local"):
        return LocalExecutor(fitness)
    if isinstance(executor, str) and executor.startswith("dask://"):
        return DaskExecutor(fitness, executor, timeout=timeout)
    raise EdgekitError("unknown executor {!r}: use local or dask://HOST:PORT".format(executor))
