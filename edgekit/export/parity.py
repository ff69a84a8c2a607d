"""Parity: does an exported model predict what the original does?

Runs both on N test images and reports top-1 agreement, max/mean absolute difference of the
first output, and each one's accuracy. Thresholds depend on precision (measured on
seed-mnist-cnn/MNIST and tiny/digits, see BENCHMARKS.md "Export"): fp32 agreement >= 99.9%,
fp16 >= 99.5%, int8 >= 98.5% with accuracy drop <= 1 pt.

Example::

    fig = compare(keras_scores, run_file("onnxruntime", "model.onnx", x), y, "fp32")
    raise_on_failures({"model.onnx": fig})     # EdgekitError listing every failing export
"""
import numpy as np

from edgekit.errors import EdgekitError

THRESHOLDS = {"fp32": {"agreement": 0.999}, "fp16": {"agreement": 0.995},
              "int8": {"agreement": 0.985, "accuracy_drop": 0.01}}


def compare(ref_outputs, got_outputs, y, precision="fp32"):
    """Parity figures between two first outputs (N,C scores or N class ids) and labels y."""
    if precision not in THRESHOLDS:
        raise EdgekitError("unknown precision {!r} for parity".format(precision))
    ref, got = np.asarray(ref_outputs), np.asarray(got_outputs)
    if len(ref) != len(got):
        raise EdgekitError("parity: {} reference outputs but {} exported ones".format(
            len(ref), len(got)))
    from edgekit.runtime.base import classes_of
    ref_cls = classes_of(ref)
    got_cls = classes_of(got)
    y = np.asarray(y)[:len(ref_cls)]
    fig = {"samples": int(len(ref_cls)), "precision": precision,
           "agreement": float(np.mean(ref_cls == got_cls)),
           "accuracy_reference": float(np.mean(ref_cls == y)),
           "accuracy_export": float(np.mean(got_cls == y)),
           "max_abs_diff": None, "mean_abs_diff": None,
           "thresholds": dict(THRESHOLDS[precision])}
    if ref.shape == got.shape and ref.dtype.kind == "f" and got.dtype.kind == "f":
        d = np.abs(ref.astype(np.float64) - got.astype(np.float64))
        fig["max_abs_diff"] = float(d.max()) if d.size else 0.0
        fig["mean_abs_diff"] = float(d.mean()) if d.size else 0.0
    fig["failures"] = failures(fig)
    fig["passed"] = not fig["failures"]
    return fig


def failures(fig):
    """Every threshold a parity figure misses (all of them, not just the first)."""
    th = THRESHOLDS[fig["precision"]]
    out = []
    if fig["agreement"] < th["agreement"]:
        out.append("top-1 agreement {:.2%} < {:.1%}".format(fig["agreement"], th["agreement"]))
    drop = fig["accuracy_reference"] - fig["accuracy_export"]
    if "accuracy_drop" in th and drop > th["accuracy_drop"]:
        out.append("accuracy drop {:.2f} pt > {:.1f} pt".format(100 * drop, 100 * th["accuracy_drop"]))
    return out


def raise_on_failures(results):
    """Raise one EdgekitError listing every failing export (name: reasons), if any failed."""
    bad = ["{}: {}".format(name, "; ".join(f["failures"])) for name, f in results.items()
           if f.get("failures")]
    if bad:
        raise EdgekitError("parity check failed, nothing written: " + " | ".join(bad))


def run_file(runtime, path, x, **options):
    """First output of the model file at ``path`` run by ``runtime`` on all of ``x``; a static
    batch dimension is honoured by running chunks (the last one padded, then trimmed)."""
    from edgekit.runtime import open_runner
    from edgekit.runtime.base import first_output
    with open_runner(runtime, path, **options) as r:
        return first_output(r, x)


def check_file(runtime, path, reference, x, y, precision="fp32", **options):
    """Run ``path`` with ``runtime`` and return its parity figures against ``reference``."""
    return compare(reference, run_file(runtime, path, x, **options), y, precision)
