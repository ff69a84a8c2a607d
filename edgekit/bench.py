"""Host-side ``bench``: pick the artifact's file for a target/runtime and run the protocol.

The protocol itself is :func:`edgekit.runtime.bench.measure` (shared with the device).
``runtime="all"`` runs every laptop-cpu runtime the artifact has a file for and marks the
fastest (lowest p50) with ``"fastest": true``.

Example::

    results = bench("out/seed", "laptop-cpu", runtime="all", iterations=200)
"""
import json
from pathlib import Path

from edgekit.errors import EdgekitError

TARGET_DEVICE = {"ncs2": "MYRIAD", "laptop-cpu": "CPU", "jetson-nano": "GPU"}


def pick_file(art, target, runtime):
    """(path, files entry) of the file ``runtime`` runs for ``target``, preferring exports
    made for that target; refuses with the export command to run."""
    from edgekit.runtime import RUNTIME_FORMATS
    fmt = RUNTIME_FORMATS[runtime]
    names = [n for n in art.find(fmt) if art.files[n].get("inference", True)]
    if target == "ncs2":
        names = [n for n in names if art.files[n].get("precision") == "fp16"] or names
    tagged = [n for n in names if art.files[n].get("target") == target]
    names = tagged or names
    if not names:
        raise EdgekitError("{} has no {} file for {}: run `edgekit export {} --format {} "
                           "--target {}`".format(art.path, fmt, runtime, art.path, fmt, target))
    e = art.files[names[0]]
    p = art.file(names[0])
    return (p / e["entry"] if e.get("entry") else p), e


def bench(artifact, target="laptop-cpu", runtime=None, batch=1, warmup=10, iterations=100,
          duration=0.0, threads=None, data=None, json_path=None, eval_samples=1000, device=None):
    """Benchmark an artifact on ``target``; returns a list of results dicts (CONTRACT.md)."""
    from edgekit.artifact import Artifact
    from edgekit.data import load_data
    from edgekit.runtime import RUNNERS, runner_class
    from edgekit.runtime.bench import measure
    from edgekit.targets import load_target

    if iterations < 1 and duration <= 0:
        raise EdgekitError("--iterations must be >= 1 (or give a --duration)")
    t = load_target(target)
    art = Artifact.open(artifact)
    if runtime in (None, "all"):
        runtimes = [r for r in t["runtimes"] if r in RUNNERS]
        if runtime is None:
            runtimes = [r for r in runtimes if _has_file(art, r)][:1] or runtimes[:1]
        else:
            runtimes = [r for r in runtimes if _has_file(art, r)]
            if not runtimes:
                raise EdgekitError("{} has no file any {} runtime can run: run `edgekit export "
                                   "{} --format onnx`".format(art.path, target, art.path))
    else:
        if runtime not in t["runtimes"]:
            raise EdgekitError("target {} has no runtime {!r} (it has: {})".format(
                target, runtime, ", ".join(t["runtimes"])))
        runtimes = [runtime]
    if target == "jetson-nano" and "tensorrt" in runtimes:
        raise_no_tensorrt()
    ds = load_data(data or art.manifest["source"].get("data") or "digits")
    results = []
    for rt in runtimes:
        if rt not in RUNNERS:
            raise_no_tensorrt()
        path, entry = pick_file(art, target, rt)
        opts = {"threads": threads} if threads else {}
        if rt == "openvino":
            opts["device"] = device or TARGET_DEVICE.get(target, "CPU")
        runner = runner_class(rt)(path, **opts)
        try:
            res = measure(runner, ds.x_test, ds.y_test, batch=batch, warmup=warmup,
                          iterations=iterations, duration=duration, eval_samples=eval_samples)
        finally:
            runner.close()
        res.update({"target": target, "artifact": str(art.path), "file": path.name,
                    "precision": entry.get("precision"), "bytes": entry.get("bytes"),
                    "method": art.method, "threads": threads})
        results.append(res)
    if len(results) > 1:
        best = min(results, key=lambda r: r["latency_ms"]["p50"])
        for r in results:
            r["fastest"] = r is best
    if json_path:
        from edgekit.util import atomic_write_text
        atomic_write_text(json_path, json.dumps(results if len(results) > 1 else results[0],
                                                indent=2) + "\n")
    return results


def raise_no_tensorrt():
    from edgekit.errors import MissingDependency
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise MissingDependency(
            "TensorRT is not installed here: the jetson-nano target needs a Jetson Nano with "
            "JetPack 4.6 (TensorRT 8.2); deploy with `edgekit deploy ART --target jetson-nano "
            "--host USER@NANO --bench`") from None


def _has_file(art, runtime):
    from edgekit.runtime import RUNTIME_FORMATS
    return bool([n for n in art.find(RUNTIME_FORMATS[runtime]) if art.files[n].get("inference", True)])


def load_results(paths):
    """Read results JSON files (object or list each); refuses files that aren't ours."""
    out = []
    for p in paths:
        p = Path(p)
        try:
            obj = json.loads(p.read_text())
        except FileNotFoundError:
            raise EdgekitError("results file {} does not exist".format(p)) from None
        except (ValueError, UnicodeDecodeError):
            raise EdgekitError("{} is not an edgekit results file (not JSON)".format(p)) from None
        items = obj if isinstance(obj, list) else [obj]
        for r in items:
            if not isinstance(r, dict) or not {"target", "runtime", "latency_ms"} <= set(r):
                raise EdgekitError("{} is not an edgekit results file (needs target, runtime, "
                                   "latency_ms)".format(p))
            out.append(r)
    return out
