"""Host-side ``bench``: pick the artifact's file for a target/runtime and run the protocol.

The protocol itself is :func:`edgekit.runtime.bench.measure` (shared with the device, where
``python3 -m edgekit.runtime bench`` runs it). ``runtime="all"`` runs every runtime of the
target installed here that the artifact has a file for, and marks the fastest (lowest p50)
with ``"fastest": true``.

Before timing anything, :func:`edgekit.targets.require_machine` checks that this machine is
the target's hardware (targets/T.toml: host arch, marker file, USB device, packages): a board
target benched elsewhere exits 2 pointing at ``edgekit deploy --bench``, so no number is ever
labelled with hardware it was not measured on. An OpenVINO ``device="CPU"`` runs a device
target's path on the CPU (results say so).

Example::

    results = bench("out/seed", runtime="all", iterations=200)   # the default target
"""
import json
import sys
from pathlib import Path

from edgekit.errors import EdgekitError, MissingDependency
from edgekit.runtime.registry import installed  # noqa: F401 (edgekit.bench.installed: API)


def bench(artifact, target=None, runtime=None, batch=1, warmup=10, iterations=100,
          duration=0.0, threads=None, data=None, json_path=None, eval_samples=None, device=None,
          warmup_seconds=0.0, progress=None):
    """Benchmark an artifact on ``target``; returns a list of results dicts (docs/contract.md).

    ``target``: a target name (default: the default target) or a loaded descriptor dict.
    ``runtime``: one of the target's runtimes, ``None`` (the first one the artifact has a
    file for) or ``"all"``. ``data``: a data spec or a loaded Dataset for accuracy (default:
    the manifest's).
    ``eval_samples``: accuracy on the first N test samples (default: the whole test split).
    ``artifact`` may be a bare ``.onnx`` file; without ``data`` it is timed on seeded random
    input of its own shape (accuracy ``None``).
    """
    from edgekit.onnx_model import artifact_for, is_onnx_file
    if is_onnx_file(artifact):
        with artifact_for(artifact) as tmp:
            results = bench(tmp, target, runtime=runtime, batch=batch, warmup=warmup,
                            iterations=iterations, duration=duration, threads=threads, data=data,
                            eval_samples=eval_samples, device=device,
                            warmup_seconds=warmup_seconds, progress=progress)
        for r in results:
            r["artifact"] = str(artifact)
            r["file"] = Path(str(artifact)).name
        return _written(results, json_path)
    from edgekit.artifact import Artifact
    from edgekit.runtime import RUNNERS, runner_class, runner_options
    from edgekit.runtime.bench import check_protocol, measure
    from edgekit.targets import candidate_files, file_path, load_target, pick_file, \
        require_machine

    check_protocol(batch, iterations, duration, warmup, warmup_seconds,  # before any file
                   eval_samples)                                       # is read
    from edgekit.targets import default_target
    t = load_target(target or default_target())
    target = t["name"]
    art = Artifact.open(artifact)
    if runtime in (None, "all"):
        cands = [r for r in t["runtimes"] if r in RUNNERS]
        with_file = [r for r in cands if candidate_files(art, t, r)]
        if not with_file:
            fmt = t["formats"][0]
            raise EdgekitError("{} has no file any {} runtime can run ({}): run `edgekit export "
                               "{} --format {} --target {}`".format(
                                   art.path, target, "/".join(t["formats"]), art.path, fmt, target))
        if runtime is None:
            runtimes = with_file[:1]
        else:
            runtimes = [r for r in with_file if installed(r)]
            if not runtimes:
                raise MissingDependency("none of {} is installed here: pip install "
                                        "'edgekit[all]'".format(", ".join(with_file)))
    else:
        if runtime not in t["runtimes"]:
            raise EdgekitError("target {} has no runtime {!r} (it has: {})".format(
                target, runtime, ", ".join(t["runtimes"])))
        runtimes = [runtime]
    if device is not None and "openvino" not in runtimes:  # it would be ignored, results "CPU"
        raise EdgekitError("--device {} picks an OpenVINO device, but this run uses {}: add "
                           "--runtime openvino (or drop --device)".format(
                               device, ", ".join(runtimes) or "no runtime"))
    require_machine(t, runtimes, device)
    picked = [pick_file(art, t, rt, any_file=True) for rt in runtimes]  # refuse before any work
    files = [(file_path(art, name), entry) for name, entry in picked]

    from edgekit.data import load_data
    from edgekit.onnx_model import check_artifact_data, manifest_layout, to_model_layout
    if hasattr(data, "x_test"):  # an already loaded Dataset (no second read of the files)
        ds, spec = data, data.spec
    else:
        spec = data or art.manifest.get("source", {}).get("data")
        ds = None if spec is None and art.method == "import" else load_data(spec or "digits")
    if ds is not None:
        from edgekit.adapt import data_for
        ds = data_for(ds, art.manifest.get("input"))  # the preprocessing/size the model was built for
    if ds is None:  # an imported model with no data set: time it on random input of its shape
        x_test, y_test, n_test = _random_input, None, 0
    else:
        check_artifact_data(art, ds)  # the user's ONNX: say what does not fit
        art.check_data_fits(ds)  # the class count / image size the artifact was made for
        x_test, y_test = to_model_layout(ds.x_test, manifest_layout(art.manifest)), ds.y_test
        n_test = int(len(ds.y_test) if not eval_samples else min(eval_samples, len(ds.y_test)))
    results = []
    for rt, (path, entry) in zip(runtimes, files):
        opts = runner_options(rt, threads=threads, device=device or t["device"], batch=batch)
        if rt == "litert":
            opts["allow_tf"] = True  # host side: tf.lite as the explicit last resort
        runner = runner_class(rt)(path, **opts)
        try:
            res = measure(runner, x_test, y_test, batch=batch, warmup=warmup,
                          warmup_seconds=warmup_seconds, iterations=iterations,
                          duration=duration, eval_samples=eval_samples, progress=progress)
        finally:
            runner.close()
        res.update({"target": target, "artifact": str(art.path),
                    "file": str(Path(path).relative_to(art.path)),
                    "format": entry.get("format"),
                    "precision": getattr(runner, "precision", None) or entry.get("precision"),
                    "bytes": _run_bytes(art, entry), "method": art.method, "threads": threads,
                    "model_sha256": entry.get("sha256"),  # report.html: same model or not
                    "data": spec if ds is not None else "random",
                    "test_samples": n_test})
        fitted = {k: v for k, v in ((ds.adapt or {}) if ds is not None else {}).items()
                  if k in ("resize", "source_size", "channels")}
        if fitted:  # the data was resized / channel-adapted to fit (edgekit.adapt): say so
            res["data_fit"] = fitted
        results.append(res)
    _stamp_board(results)
    if len(results) > 1:
        best = min(results, key=lambda r: r["latency_ms"]["p50"])
        for r in results:
            r["fastest"] = r is best
    return _written(results, json_path)


def _stamp_board(results):
    """This machine's identity and board state (the device side's ``identity``: a Pi's
    throttling, a Jetson's power mode, NCS2 link speeds) in every result, and the state's
    warnings in the results and on stderr: a bench run on the board itself is stamped like a
    deployed one, so ``edgekit report`` can tell results in different states apart."""
    from edgekit.resources import remote_module
    mod = remote_module()
    ident = mod.identity()
    warnings = mod.board_warnings(ident)
    for w in warnings:
        sys.stderr.write("warning: {}\n".format(w))
    for r in results:
        r["device_identity"] = ident
        r["warnings"] = list(r.get("warnings") or []) + warnings


def _written(results, json_path):
    """``results``, written to ``json_path`` (atomic; one object, or a list of several).
    A disk that refuses the file does not lose the measurement: the JSON goes to stdout, then
    one ``error:`` line says it could not be saved."""
    if json_path:
        from edgekit.util import atomic_write_text, write_failure
        text = json.dumps(results if len(results) > 1 else results[0], indent=2) + "\n"
        try:
            atomic_write_text(json_path, text)
        except OSError as exc:
            message = write_failure(exc)
            if message is None:
                raise
            sys.stdout.write(text)
            sys.stdout.flush()
            raise EdgekitError("{}; the results are printed above on stdout".format(
                message.split(";")[0])) from None
    return results


def _random_input(runner, n=64, seed=0):
    """Seeded standard-normal input of the loaded model's shape (dynamic dims: 1 / batch)."""
    import numpy as np
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in (runner.input_shape or [])]
    if not shape:
        raise EdgekitError("{} declares no input shape: pass --data SPEC".format(runner.path))
    shape[0] = n if shape[0] == 1 and not _static_batch(runner) else shape[0]
    from edgekit.artifact import check_input_shape
    check_input_shape(shape, "{}: input".format(runner.path))
    x = np.random.RandomState(seed).standard_normal(shape)
    return x.astype(np.dtype(runner.input_dtype))


def _static_batch(runner):
    d = (runner.input_shape or [None])[0]
    return isinstance(d, int) and d > 0


def _run_bytes(art, entry):
    """Bytes on disk needed to run a file (:meth:`Artifact.run_bytes`: an IR's .xml + .bin)."""
    name = next(n for n, e in art.files.items() if e is entry)
    return art.run_bytes(name) or None


def load_results(paths):
    """Read results JSON files (an object or a list each), checked against
    :data:`edgekit.schemas.RESULTS_FILE_SCHEMA` (docs/contract.md): files that aren't ours, NaN,
    negative or string figures, percentiles out of order -> EdgekitError."""
    from edgekit.schemas import LATENCY_KEYS, RESULTS_FILE_SCHEMA, check, load_json
    out = []
    for p in paths:
        p = Path(p)
        what = "an edgekit results file"
        obj = load_json(p, what)
        check(obj, RESULTS_FILE_SCHEMA, "{} is not {} (make one with `edgekit bench ... --json "
                                        "FILE`)".format(p, what))
        for r in obj if isinstance(obj, list) else [obj]:
            lat = [r["latency_ms"][k] for k in ("min", "p50", "p90", "p95", "p99", "max")]
            if r["latency_ms"]["p50"] <= 0:  # ratios against 0 mean nothing (all "1.00x")
                raise EdgekitError("{} is not {}: latency_ms.p50 is {} -- not a measured "
                                   "latency (a timer that did not run?)".format(
                                       p, what, r["latency_ms"]["p50"]))
            if lat != sorted(lat):
                raise EdgekitError("{} is not {}: latency_ms min <= p50 <= p90 <= p95 <= p99 <= max "
                                   "does not hold ({})".format(p, what, ", ".join(
                                       "{} {}".format(k, r["latency_ms"][k]) for k in LATENCY_KEYS)))
            r = dict(r)
            r["source_file"] = str(p)
            out.append(r)
    return out
