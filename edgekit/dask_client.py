"""The Dask connection both searches share: ``compress --method evolve --executor`` and
``optimize --executor`` reach a cluster the same way (``dask://HOST:PORT``, an existing
scheduler with at least one worker, one ``EdgekitError`` line saying what to start when
there is none). What runs on the cluster stays with each search
(:mod:`edgekit.compress.evolve.executor`, :mod:`edgekit.optimize.executor`).

Example::

    client = connect("dask://127.0.0.1:8786")      # distributed.Client, >= 1 worker
    n_workers(client)
"""
from edgekit.errors import EdgekitError, MissingDependency

DASK_TIMEOUT = 10.0


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
