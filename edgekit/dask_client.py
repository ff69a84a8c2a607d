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
        client = Client(url, timeout=timeout, set_as_default=False)
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


def n_workers(client):
    return max(1, len(client.scheduler_info().get("workers", {})))


def parse_dask_address(address):
    """``dask://HOST:PORT`` -> ``tcp://HOST:PORT`` (refuse anything else)."""
    rest = address[len("dask://"):] if address.startswith("dask://") else None
    host, _, port = (rest or "").rpartition(":")
    if not rest or not host or not port.isdigit():
        raise EdgekitError("executor {!r} is not valid: use local or dask://HOST:PORT".format(address))
    return "tcp://{}:{}".format(host, port)
