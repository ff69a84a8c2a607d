"""One benchmark protocol for every runner, on host and device alike (Python 3.6, numpy only).

Protocol: cold start = load + first inference, timed separately (a TensorRT engine build is
not part of it: ``engine_build_ms`` / ``engine_cached`` say whether and how long one ran);
then warm-up by count and/or seconds; then timed iterations by count and/or seconds.
``latency_ms`` is wall-clock (``time.perf_counter`` around each call) of the runtime's leanest
call on an input preset once (:meth:`Runner.timed_call`: OpenVINO ``infer()`` on a preset
tensor, onnxruntime IO binding, LiteRT ``invoke()``); ``runtime_latency_ms`` beside it is the
runtime's own per-inference time of the same calls where it measures one (OpenVINO
``InferRequest.latency``), else null, with ``runtime_latency_source`` saying what it is.
Accuracy on the labelled set measured by the same runner. Results follow docs/contract.md (plus
those two fields, and ``engine_cached`` / ``engine_build_ms`` for TensorRT).

Example::

    runner = OrtRunner("model.onnx")
    result = measure(runner, x_test, y_test, batch=1, warmup=20, iterations=200)
"""
import datetime
import socket
import sys
import time

import numpy as np

from edgekit.runtime.base import classes_from_outputs
from edgekit.runtime.errors import EdgekitError

PERCENTILES = (50, 90, 95, 99)
EXTRA_PERCENTILES = (25, 75)  # beyond the contract: quartiles for box plots in reports


def latency_stats(samples_ms):
    """Summary statistics of latency samples in ms: mean/std/min/p50/p90/p95/p99/max
    (+ p25/p75).

    Percentiles use linear interpolation (numpy's default), std is the population std.
    """
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise EdgekitError("no latency samples to summarise")
    stats = {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min())}
    for p in PERCENTILES + EXTRA_PERCENTILES:
        stats["p{}".format(p)] = float(np.percentile(a, p))
    stats["max"] = float(a.max())
    return stats


def peak_rss_mb():
    """Peak resident set size of this process in MiB (Linux ru_maxrss is in KiB)."""
    try:
        import resource
    except ImportError:  # not on Linux/macOS
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":
        rss /= 1024.0
    return rss / 1024.0


def accuracy(runner, x, y, batch=64):
    """Top-1 accuracy of ``runner`` on (x, y), batching when the model allows it; a model with
    a fixed batch (torch.onnx.export writes batch 1) gets chunks of that size, the last one
    padded with repeats of its last image and its extra predictions dropped."""
    if x is None or y is None or len(x) == 0:
        return None
    static = runner.input_shape and isinstance(runner.input_shape[0], int) \
        and runner.input_shape[0] > 0
    step = runner.input_shape[0] if static else batch
    correct = 0
    n = len(x)
    for i in range(0, n, step):
        chunk = np.asarray(x[i:i + step])
        k = len(chunk)
        if static and k < step:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - k, axis=0)])
        outputs = runner.infer(chunk)
        if i == 0:
            check_scores(list(outputs.values())[0][:k], y, getattr(runner, "path", "the model"))
        pred = classes_from_outputs(outputs)[:k]
        correct += int(np.sum(pred == np.asarray(y[i:i + step])))
    return correct / float(n)


def check_scores(first, y, what):
    """Refuse, on the first batch, an output that is not one score per class: a feature map
    (more than one dimension after the batch larger than 1), or fewer columns than the labels
    need (a symbolic ``(N, K)`` output that is really one column would score every image as
    class 0 and report 1/K accuracy as if it meant something)."""
    first = np.asarray(first)
    if first.ndim <= 1:  # class ids already (the k-NN graph)
        return
    big = [d for d in first.shape[1:] if d > 1]
    if len(big) > 1:
        raise EdgekitError("{}: its first output has shape {} per batch, a feature map, not one "
                           "score per class (N, K): edgekit scores image classifiers".format(
                               what, "x".join(str(d) for d in first.shape)))
    width = big[0] if big else 1
    need = int(np.max(np.asarray(y))) + 1 if len(y) else 0
    if width < max(need, 2):
        raise EdgekitError("{}: its first output has {} column{} per image but the data's labels "
                           "need {} classes: not per-class scores".format(
                               what, width, "" if width == 1 else "s", max(need, 2)))


def check_protocol(batch, iterations, duration, warmup=0, warmup_seconds=0.0,
                   eval_samples=None):
    """Refuse a protocol that times nothing or asks for what cannot be: ``iterations`` < 1
    without a ``duration``, a ``batch`` < 1, a negative (or non-finite) ``warmup`` /
    ``duration`` / ``warmup_seconds``, ``eval_samples`` < 1 (omit it for the whole split)."""
    import math
    for flag, v in (("--duration", duration), ("--warmup-seconds", warmup_seconds),
                    ("--warmup", warmup), ("--iterations", iterations)):
        if v is not None and (not math.isfinite(float(v)) or float(v) < 0):
            raise EdgekitError("{} must be >= 0, got {}".format(flag, v))
    if iterations < 1 and duration <= 0:
        raise EdgekitError("--iterations must be >= 1 (or give a --duration)")
    if batch < 1:
        raise EdgekitError("--batch must be >= 1")
    if eval_samples is not None and int(eval_samples) < 1:
        raise EdgekitError("--eval-samples must be >= 1, got {} (omit it to score the whole "
                           "test split)".format(eval_samples))


# calls in a runtime's profiling pass (onnxruntime), after the timed ones
PROFILED_CALLS = 200


def measure(runner, x, y=None, batch=1, warmup=10, iterations=100, warmup_seconds=0.0,
            duration=0.0, eval_samples=None, progress=None):
    """Benchmark ``runner`` (not yet loaded, or loaded: cold start is measured only if not).

    ``x`` is the input array, or a callable ``x(runner) -> array`` called once the runner is
    loaded (outside the cold-start timing) for inputs that depend on the model's shape.

    ``iterations`` and ``duration`` (seconds): timing stops when BOTH minimums are met.
    ``progress(done, total)`` is called now and then if given.
    Returns the results dict of docs/contract.md (without target/host stamping beyond ``host``).
    """
    check_protocol(batch, iterations, duration, warmup, warmup_seconds, eval_samples)
    cold_ms = load_s = None
    if not runner.loaded:
        start = time.perf_counter()
        runner.load()
        load_s = time.perf_counter() - start
    if callable(x):  # input made from the loaded model's shape (e.g. random data)
        x = x(runner)
    x = np.asarray(x)
    if len(x) < batch:
        reps = int(np.ceil(batch / float(len(x))))
        x = np.concatenate([x] * reps)
    sample = x[:batch]
    start = time.perf_counter()
    runner.infer(sample)
    if load_s is not None:  # an engine build (TensorRT's first run) is recorded apart
        build_s = (getattr(runner, "engine_build_ms", None) or 0.0) / 1e3
        cold_ms = (load_s - build_s + time.perf_counter() - start) * 1e3

    # the timed call: input preset once, the runtime's leanest run (Runner.timed_call);
    # a CNN does the same work whatever the pixel values, so one batch serves every call
    call = runner.timed_call(sample)
    own_latency = (runner.runtime_latency_ms if runner.runtime_latency_source
                   and runner.runtime_latency_per_call else None)
    t_end = time.perf_counter() + warmup_seconds
    done = 0
    while done < warmup or time.perf_counter() < t_end:
        call()
        done += 1

    samples, own = [], []
    start_all = time.perf_counter()
    t_end = start_all + duration
    while len(samples) < iterations or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1e3)
        if own_latency is not None:
            own.append(own_latency())
        if progress is not None and len(samples) % 50 == 0:
            progress(len(samples), iterations)
    total_s = time.perf_counter() - start_all
    if not own and runner.runtime_latency_source:   # measured apart: a profiling pass
        own = runner.profiled_latencies_ms(sample, min(len(samples), PROFILED_CALLS)) or []

    acc = None
    if y is not None:
        xs, ys = x[:len(y)], np.asarray(y)
        if eval_samples:
            xs, ys = xs[:eval_samples], ys[:eval_samples]
        acc = accuracy(runner, xs, ys)

    info = runner.describe()
    res = {
        "runtime": info["runtime"],
        "runtime_version": info["runtime_version"],
        "device": info["device"],
        "batch": int(batch),
        "iterations": len(samples),
        "warmup": int(done),
        "cold_start_ms": cold_ms,
        "latency_ms": latency_stats(samples),
        # the runtime's own per-inference latency of the same timed calls, where it has one
        "runtime_latency_ms": latency_stats(own) if own else None,
        "runtime_latency_source": runner.runtime_latency_source if own else None,
        "throughput_ips": float(len(samples) * batch / total_s) if total_s > 0 else None,
        "peak_rss_mb": peak_rss_mb(),
        "accuracy": acc,
        "host": socket.gethostname(),
        "timestamp": datetime.datetime.utcnow().replace(microsecond=0).isoformat() + "Z",
    }
    if "engine_cached" in info:  # TensorRT: did this run build its engine, and how long it took
        res["engine_cached"] = info["engine_cached"]
        res["engine_build_ms"] = info.get("engine_build_ms")
    return res
