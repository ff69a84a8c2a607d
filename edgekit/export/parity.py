"""Parity: does an exported model predict what the original does?

Runs both on N test images and reports top-1 agreement, max/mean absolute difference of the
first output, and each one's accuracy. Thresholds depend on precision (measured on
seed-mnist-cnn and tiny, see BENCHMARKS.md): fp32 agreement >= 99.9%, fp16 >= 99.5%,
int8 >= 98.5% with accuracy drop <= 1 pt.
"""
import numpy as np

from edgekit.errors import EdgekitError

THRESHOLDS = {"fp32": {"agreement": 0.999}, "fp16": {"agreement": 0.995},
              "int8": {"agreement": 0.985, "accuracy_drop": 0.01}}


def compare(ref_outputs, got_outputs, y, precision="fp32"):
    """Parity figures between two output arrays (N,C scores or N class ids) and labels."""
    ref, got = np.asarray(ref_outputs), np.asarray(got_outputs)
    ref_cls = ref if ref.ndim == 1 else np.argmax(ref.reshape(len(ref), -1), axis=1)
    got_cls = got if got.ndim == 1 else np.argmax(got.reshape(len(got), -1), axis=1)
    fig = {"samples": int(len(ref_cls)),
           "agreement": float(np.mean(ref_cls == got_cls)),
           "accuracy_reference": float(np.mean(ref_cls == y)),
           "accuracy_export": float(np.mean(got_cls == y)),
           "max_abs_diff": None, "mean_abs_diff": None, "precision": precision}
    if ref.shape == got.shape and ref.dtype.kind == "f":
        d = np.abs(ref.astype(np.float64) - got.astype(np.float64))
        fig["max_abs_diff"] = float(d.max())
        fig["mean_abs_diff"] = float(d.mean())
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
    """Raise one EdgekitError listing every failing export, if any failed."""
    bad = ["{}: {}".format(name, "; ".join(f["failures"])) for name, f in results.items()
           if f["failures"]]
    if bad:
        raise EdgekitError("parity check failed, nothing written: " + " | ".join(bad))
