"""``deploy()``: the verb. Builds one bundle per target, then per device (in parallel, one
failure never stops the others): connect, setup, preflight, upload, docker build, bench.

Example::

    summary = deploy("out/seed", hosts=["me@192.168.1.50"], bench=True)
"""
import concurrent.futures
import json
import posixpath
import socket
import time

from edgekit.errors import EdgekitError
from edgekit.deploy.hosts import parse_host, resolve_host, read_inventory
from edgekit.deploy.bundle import _docker, build_bundle
from edgekit.deploy.ssh import Remote, check_known_hosts
from edgekit.deploy.steps import (DEFAULT_REMOTE_DIR, board_identity, check_device_ops,
                                  check_docker_default_runtime, docker_build_command, preflight,
                                  remote_bench, setup_device, stamp_board, upload)


def _network_error(exc):
    """True for what a flaky network or a foreign SSH server raises (paramiko's exceptions,
    socket errors, EOF on a dropped channel), as opposed to a bug in edgekit."""
    return (type(exc).__module__.split(".")[0] == "paramiko"
            or isinstance(exc, (OSError, EOFError, socket.timeout)))


def _describe(exc):
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return "{} ({})".format(text, type(exc).__name__) if text else type(exc).__name__


def _one(host, bundles, opts, log):
    """Deploy to one device; returns its summary dict (never raises EdgekitError)."""
    o = dict(opts)
    o.update(host.options)
    target = o["target"]
    say = (lambda msg: log("[{}] {}".format(host.spec, msg)))
    row = {"host": host.spec, "address": str(host), "target": target, "ok": False,
           "exit_code": 1, "bytes_sent": 0, "bundle": None, "results": None, "error": None}
    remote = None
    t0 = time.monotonic()
    try:
        bundle = bundles[target]
        row["bundle"] = bundle.sha256
        remote = Remote(host, identity=o.get("identity"), known_hosts=o["known_hosts"],
                        accept_new_host_key=o["accept_new_host_key"],
                        connect_timeout=o["connect_timeout"], log=say)
        python = o["remote_python"]
        if o["setup"]:
            say("setup: venv with numpy + {} runtime".format(target))
            if o["docker"]:
                pass  # the image is built after the upload (the Dockerfile is in the bundle)
            else:
                python = setup_device(remote, target, posixpath.join(o["remote_dir"], "venv"),
                                      python, timeout=o["command_timeout"] * 10, log=say)
        report = preflight(remote, target, python, o["remote_dir"], o["min_free_mb"], o["docker"],
                           o.get("runtime"), o.get("device"), timeout=o["command_timeout"])
        row["identity"] = report["identity"]
        from edgekit.targets import as_target, l4t_release_info
        if as_target(target).get("l4t"):  # refuses an L4T release the runner/image isn't for
            say("L4T {l4t}: {jetpack}, TensorRT {tensorrt}".format(
                l4t=report["identity"].get("l4t"),
                **l4t_release_info(target, report["identity"].get("l4t"))))
        say("preflight ok: " + ", ".join("{} {}".format(c["name"], c["value"])
                                         for c in report["checks"]))
        checked = check_device_ops(bundle, target, report["identity"].get("l4t"), host.hostname)
        if checked:
            say("ops checked against the device's TensorRT {}".format(checked))
        last = [0]

        def progress(sent, total):
            if sent - last[0] >= 1 << 20 or sent == total:
                last[0] = sent
                say("upload {:,}/{:,} bytes".format(sent, total))
            if o.get("upload_callback"):
                o["upload_callback"](sent, total)
        dest, sent = upload(remote, bundle, o["remote_dir"], python, stale_after=o["stale_after"],
                            timeout=o["command_timeout"] * 5, progress=progress)
        row["bytes_sent"], row["remote_path"] = sent, dest
        row["transport"] = remote.transport
        say("bundle {} at {} ({})".format(bundle.short, dest,
                                          "{:,} bytes sent over {}".format(sent, remote.transport)
                                          if sent else "unchanged, nothing sent"))
        if o["docker"] and o["setup"]:
            want = _docker(target).get("default_runtime")
            if want:
                check_docker_default_runtime(remote, want=want)
            cmd = docker_build_command(target, dest, report["identity"].get("l4t"))
            say("setup: " + cmd)
            code, _, err = remote.run(cmd, timeout=o["command_timeout"] * 30,
                                      on_line=lambda ln: say(ln) if ln else None)
            if code:
                raise EdgekitError("{}: docker build failed: {}".format(
                    host.hostname, (err.strip().splitlines() or ["exit {}".format(code)])[-1]))
        if o["bench"]:
            res = remote_bench(remote, dest, bundle, python, o["remote_dir"], o["bench_args"],
                               o["docker"], timeout=o["command_timeout"] * 30, log=say,
                               l4t=report["identity"].get("l4t"))
            if o["docker"]:  # the container's hostname is its id: name the board instead
                stamp_board(res, board_identity(remote, python, timeout=o["command_timeout"]))
            for w in res.get("warnings") or []:
                say("warning: " + w)
            res["deploy"] = {"ssh_host": host.spec, "address": str(host), "remote_path": dest,
                             "docker": bool(o["docker"]), "remote_python": python,
                             "transport": remote.transport}
            res.setdefault("artifact", str(o["artifact"]))
            row["results"] = res
        row["ok"], row["exit_code"] = True, 0
    except EdgekitError as exc:
        row["error"], row["exit_code"] = str(exc), exc.exit_code
    except Exception as exc:  # the network's failures, one line each; bugs keep tracebacks
        if not _network_error(exc):
            raise
        row["error"] = "{}: {}".format(host.hostname, _describe(exc))
    finally:
        if remote is not None:
            remote.close()
        row["seconds"] = round(time.monotonic() - t0, 2)
    return row


def check_device(host, target, identity=None, known_hosts=None, accept_new_host_key=False,
                 remote_python="python3", remote_dir=DEFAULT_REMOTE_DIR, ssh_config=None,
                 connect_timeout=10.0, command_timeout=120.0, min_free_mb=50.0, log=print):
    """Connect to ``host`` and run the device checks of ``target`` (``preflight``), before any
    long work that will need the device: ``optimize --host`` trains candidates for minutes or
    hours before it times the first one, so an unreachable, unknown or wrong device must be
    refused first, in one line. Returns the preflight report; raises ``EdgekitError``."""
    from edgekit.targets import load_target
    target = load_target(target)["name"]
    parse_host(host)
    check_known_hosts(known_hosts)
    spec = resolve_host(host, ssh_config, {})
    remote = None
    try:
        remote = Remote(spec, identity=identity, known_hosts=known_hosts,
                        accept_new_host_key=accept_new_host_key,
                        connect_timeout=float(connect_timeout),
                        log=lambda msg: log("[{}] {}".format(spec.spec, msg)))
        return preflight(remote, target, remote_python, remote_dir, float(min_free_mb),
                         timeout=float(command_timeout))
    except EdgekitError:
        raise
    except Exception as exc:  # the network's failures, one line; bugs keep tracebacks
        if not _network_error(exc):
            raise
        raise EdgekitError("{}: {}".format(spec.hostname, _describe(exc)))
    finally:
        if remote is not None:
            remote.close()


def deploy(artifact, target=None, hosts=(), inventory=None, identity=None, known_hosts=None,
           accept_new_host_key=False, remote_python="python3", remote_dir=DEFAULT_REMOTE_DIR,
           setup=False, bench=False, json_path=None, docker=False, dry_run=False, runtime=None,
           device=None, test_samples=1000, data=None, ssh_config=None, connect_timeout=10.0,
           command_timeout=120.0, min_free_mb=50.0, stale_after=3600.0, iterations=100, warmup=10,
           batch=1, model_file=None, workers=8, log=print, upload_callback=None):
    """Deploy ``artifact`` to every host (``hosts`` + ``inventory``) in parallel.

    Returns ``{"bundles": {target: info}, "devices": [row per host], "results": [...]}``; each
    row says ok/exit_code/error/bytes_sent/results. ``dry_run`` builds the bundle(s) and
    returns without connecting. Raises only for bad input found before connecting.
    ``target``: the default for devices that name none (default: the default target).
    """
    from edgekit.targets import default_target, load_target
    target = load_target(target or default_target())["name"]
    devices = [{"host": h} for h in hosts or ()]
    if inventory:
        devices += read_inventory(inventory)
    if not devices and not dry_run:
        raise EdgekitError("no device: give --host [USER@]HOST[:PORT] (repeatable) or --inventory FILE")
    for d in devices:
        parse_host(d["host"])  # refuse malformed hosts before any work
        load_target(d.get("target", target))
    if int(iterations) < 1:
        raise EdgekitError("--iterations must be >= 1")
    if int(batch) < 1:
        raise EdgekitError("--batch must be >= 1")
    targets = sorted({d.get("target", target) for d in devices} or {target})
    bundles = {}
    from edgekit.onnx_model import artifact_for
    with artifact_for(artifact) as art_dir:  # a bare .onnx file: wrapped as an artifact
        for t in targets:
            dk = docker or any(d.get("docker") for d in devices if d.get("target", target) == t)
            bundles[t] = build_bundle(art_dir, t, runtime=runtime, test_samples=test_samples,
                                      data=data, docker=dk, model_file=model_file)
    summary = {"bundles": {t: {"sha256": b.sha256, "bytes": b.size, "files": b.entries,
                               "model": b.meta["model"], "runtime": b.meta["runtime"]}
                           for t, b in bundles.items()},
               "devices": [], "results": []}
    specs = []  # SSH config and known_hosts are read (and refused) in --dry-run too
    for d in devices:
        o = {k: v for k, v in d.items() if k not in ("host", "name")}
        specs.append(resolve_host(d["host"], ssh_config, o))
    if ssh_config and not devices:
        resolve_host("localhost", ssh_config)
    check_known_hosts(known_hosts)
    if dry_run:
        return summary
    opts = {"target": target, "identity": identity, "known_hosts": known_hosts,
            "accept_new_host_key": accept_new_host_key, "remote_python": remote_python,
            "remote_dir": remote_dir, "setup": setup, "bench": bench, "docker": docker,
            "runtime": runtime, "device": device, "connect_timeout": float(connect_timeout),
            "command_timeout": float(command_timeout), "min_free_mb": float(min_free_mb),
            "stale_after": float(stale_after), "artifact": artifact, "upload_callback": upload_callback,
            "bench_args": ["--iterations", str(int(iterations)), "--warmup", str(int(warmup)),
                           "--batch", str(int(batch))] + (["--device", device] if device else [])}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(int(workers), len(specs)))) as ex:
        rows = list(ex.map(lambda h: _one(h, bundles, opts, log), specs))
    summary["devices"] = rows
    summary["results"] = [r["results"] for r in rows if r.get("results")]
    if json_path and summary["results"]:
        from edgekit.util import atomic_write_text
        res = summary["results"]
        atomic_write_text(json_path, json.dumps(res[0] if len(res) == 1 else res, indent=2) + "\n")
    return summary
