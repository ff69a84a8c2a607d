"""JSON Schemas of what edgekit reads back from disk: ``manifest.json`` and bench results.

docs/contract.md describes both; these schemas are its machine-checkable form, checked with
:mod:`jsonschema` every time such a file is read, so a hand-edited, truncated or hostile file
is one ``error:`` line instead of a crash or a wrong number several steps later.
:func:`load_json` also refuses ``NaN`` / ``Infinity`` / overflowing numbers, which Python's
``json`` would otherwise accept.

Example::

    manifest = load_json(path / "manifest.json", "an edgekit manifest")
    check(manifest, MANIFEST_SCHEMA, "{} is not an edgekit manifest".format(path))
"""
import json
import math

from edgekit.errors import EdgekitError

_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_COUNT = {"type": ["integer", "null"], "minimum": 0}
_FRACTION = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_NAME = {"type": "string", "minLength": 1}

FILE_ENTRY_SCHEMA = {
    "type": "object",
    "required": ["format", "sha256"],
    "properties": {
        "format": _NAME,
        "precision": {"type": ["string", "null"]},
        "bytes": {"type": "integer", "minimum": 0},
        "sha256": _SHA256,
        "entry": _NAME,        # a SavedModel / IR dir's file to load (relative to the entry)
        "weights": _NAME,      # openvino: its .bin (another files entry); onnx: "int8"
        "inference": {"type": "boolean"},
        "accuracy": _FRACTION,
        "opset": {"type": "integer", "minimum": 1},
        "targets": {"type": ["array", "string"], "items": {"type": "string"}},
    },
}

MANIFEST_SCHEMA = {
    "type": "object",
    "required": ["kind", "method", "files"],
    "properties": {
        "edgekit_version": {"type": "string"},
        "kind": {"enum": ["model", "compressed", "export"]},
        "method": {"type": "object", "required": ["name"],
                   "properties": {"name": _NAME, "params": {"type": "object"}}},
        "source": {"type": "object"},
        "input": {"type": "object", "properties": {
            "shape": {"type": "array", "maxItems": 8,
                      "items": {"type": ["integer", "null"], "minimum": 1}},
            "dtype": {"enum": ["float32", "float16", "int8", "uint8"]},
            "layout": {"enum": ["NHWC", "NCHW"]},
            "scale": {"type": "number", "exclusiveMinimum": 0},
            "mean": {"type": "array", "items": {"type": "number"}},
            "std": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}},
        }},
        "classes": {"type": "array", "items": {"type": ["string", "integer"]}},
        "metrics": {"type": "object", "properties": {
            "accuracy": _FRACTION, "val_accuracy": _FRACTION,
            "params": _COUNT, "bytes": _COUNT, "macs": _COUNT,
        }},
        "files": {"type": "object", "additionalProperties": FILE_ENTRY_SCHEMA},
    },
}

_MS = {"type": "number", "minimum": 0}
LATENCY_KEYS = ("mean", "std", "min", "p50", "p90", "p95", "p99", "max")

RESULT_SCHEMA = {
    "type": "object",
    "required": ["target", "runtime", "runtime_version", "latency_ms", "batch", "iterations"],
    "properties": {
        "target": _NAME,
        "runtime": _NAME,
        "runtime_version": {"type": ["string", "null"]},
        "device": {"type": ["string", "null"]},
        "batch": {"type": "integer", "minimum": 1},
        "iterations": {"type": "integer", "minimum": 1},
        "warmup": {"type": ["integer", "null"], "minimum": 0},
        "cold_start_ms": {"type": ["number", "null"], "minimum": 0},
        "engine_cached": {"type": ["boolean", "null"]},
        "engine_build_ms": {"type": ["number", "null"], "minimum": 0},
        "warnings": {"type": "array", "items": {"type": "string"}},
        "latency_ms": {"type": "object", "required": list(LATENCY_KEYS),
                       "properties": {k: _MS for k in LATENCY_KEYS + ("p25", "p75")}},
        "runtime_latency_ms": {"type": ["object", "null"], "required": list(LATENCY_KEYS),
                               "properties": {k: _MS for k in LATENCY_KEYS + ("p25", "p75")}},
        "runtime_latency_source": {"type": ["string", "null"]},
        "throughput_ips": {"type": ["number", "null"], "minimum": 0},
        "peak_rss_mb": {"type": ["number", "null"], "minimum": 0},
        "accuracy": _FRACTION,
        "bytes": _COUNT,
        "host": {"type": ["string", "null"]},
        "timestamp": {"type": ["string", "number", "null"]},
    },
}

RESULTS_FILE_SCHEMA = {"oneOf": [RESULT_SCHEMA,
                                 {"type": "array", "minItems": 1, "items": RESULT_SCHEMA}]}


def _refuse_constant(name):
    raise ValueError("{} is not a number edgekit accepts".format(name))


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("{} overflows a float".format(text[:20]))
    return value


def load_json(path, what):
    """Parse a JSON file strictly (no NaN/Infinity/overflow): ``what`` names what it should
    be (``"an edgekit manifest"``); unreadable or invalid -> EdgekitError."""
    import os
    import stat
    try:
        mode = os.stat(str(path)).st_mode
    except OSError:
        mode = None  # the open() below says what is wrong
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        from edgekit.util import check_regular_file
        check_regular_file(path, "")  # a FIFO / device: refused before open() blocks on it
    try:
        with open(str(path), "rb") as fh:
            text = fh.read().decode("utf-8")
    except FileNotFoundError:
        raise EdgekitError("{} does not exist".format(path)) from None
    except IsADirectoryError:
        raise EdgekitError("{} is a directory, not {}".format(path, what)) from None
    except UnicodeDecodeError:
        raise EdgekitError("{} is not {} (not UTF-8 text)".format(path, what)) from None
    except OSError as exc:
        raise EdgekitError("cannot read {}: {}".format(path, exc.strerror)) from None
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise EdgekitError("{} is not {} (nested too deeply)".format(path, what)) from None
    except ValueError as exc:
        raise EdgekitError("{} is not {} (not valid JSON: {})".format(path, what, exc)) from None


def check(instance, schema, where):
    """Validate ``instance`` against ``schema``; the first problem -> EdgekitError naming the
    field (``files['model.h5'].sha256``) and what was expected."""
    import jsonschema
    validator = jsonschema.Draft202012Validator(schema)
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    except RecursionError:
        raise EdgekitError("{}: nested too deeply".format(where)) from None
    if error is None:
        return instance
    field = "".join("[{!r}]".format(p) if isinstance(p, int) or not str(p).isidentifier()
                    else ".{}".format(p) for p in error.absolute_path).lstrip(".") or "top level"
    message = error.message
    if len(message) > 160:
        message = message[:157] + "..."
    raise EdgekitError("{}: {}: {}".format(where, field, message))
