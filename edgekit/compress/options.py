"""Every compression option, declared once: name, type, default, help and check.

:data:`OPTIONS` holds one table per method (a plain dict, ``method -> (Option, ...)``), in the
spirit of Olive's pass configs. Everything else is derived from it:

* the ``edgekit compress`` flags (:func:`cli_parameters`: one command serves every method; the
  flag is ``--`` + the name with ``-`` for ``_`` unless ``flag`` says otherwise);
* ``edgekit.compress.METHOD_OPTIONS`` (the CLI options each method takes);
* the check of the Python API: :func:`resolve` converts each value to its type, runs its
  check, refuses options of another method and fills in the defaults -- the CLI hands its raw
  strings to the same :func:`resolve` (through ``edgekit.compress.compress``), so a bad value
  gives the same one-line error either way;
* the keyword arguments a method function receives (:func:`declared` wraps it).

Adding an option: one ``Option(...)`` line in its method's table (or in :data:`COMMON` when
several methods share it), then use the name in the method's body.

This module imports nothing heavy (``edgekit --help`` builds the CLI from it); checks that
need a library name it as ``"module:function"`` and import it only when they run.

Example::

    from edgekit.compress.options import resolve
    resolve("prune", {"sparsity": "0.5"})["sparsity"]      # 0.5 (a float), defaults filled
    resolve("prune", {"sparsity": 1.5})   # EdgekitError: --sparsity must be between 0 and 1 ...
"""
import collections
import functools
import importlib
import inspect
import math
from pathlib import Path

from edgekit.errors import EdgekitError


class Option(collections.namedtuple("Option", "name kind default help check flag cli")):
    """One option: ``kind`` converts a value (a CLI string or a Python value) to its type;
    ``check(value, flag)`` raises :class:`EdgekitError` on a bad value;
    ``flag`` overrides the CLI declaration (``"--int8/--no-int8"``); ``cli=False``: Python
    API only."""

    @property
    def flag_name(self):
        return "--" + self.name.replace("_", "-")

    def but(self, **changes):
        """The same option with another default (or help) for one method."""
        return self._replace(**changes)

    def parse(self, value):
        value = self.kind.convert(value, self.flag_name)
        if self.check is not None and value is not None:
            self.check(value, self.flag_name)
        return value


def option(name, kind, default=None, help="", check=None, flag=None, cli=True):
    return Option(name, kind, default, help, check, flag, cli)


# -- kinds: what a value may be, from the CLI (a string) or from Python ---------------------------
class Kind(object):
    """A type by name (the CLI's metavar) and its converter."""

    def __init__(self, name, convert, switch=False):
        self.name, self._convert, self.switch = name, convert, switch

    def convert(self, value, flag):
        return None if value is None else self._convert(value, flag)

    def __repr__(self):
        return "Kind({})".format(self.name)


def _int(v, flag):
    if isinstance(v, bool):
        raise EdgekitError("{} must be an integer, got {!r}".format(flag, v))
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            raise EdgekitError("{} must be an integer, got {!r}".format(flag, v)) from None
    if hasattr(v, "__index__"):        # int, numpy integers
        return int(v.__index__())
    raise EdgekitError("{} must be an integer, got {!r}".format(flag, v))


def _float(v, flag):
    if isinstance(v, bool) or not isinstance(v, (str, int, float)) and not hasattr(v, "__float__"):
        raise EdgekitError("{} must be a number, got {!r}".format(flag, v))
    try:
        return float(v.strip() if isinstance(v, str) else v)
    except ValueError:
        raise EdgekitError("{} must be a number, got {!r}".format(flag, v)) from None


def _text(v, flag):
    if not isinstance(v, str):
        raise EdgekitError("{} must be text, got {!r}".format(flag, v))
    return v


def _switch(v, flag):
    if isinstance(v, bool) or type(v).__name__ == "bool_":   # numpy's bool too
        return bool(v)
    raise EdgekitError("{} is a switch: True or False, got {!r}".format(flag, v))


def _names(v, flag):
    """``"tflite,onnx"`` or a list of names -> a list of lower-case names."""
    if isinstance(v, str):
        v = v.split(",")
    if not isinstance(v, (list, tuple)) or not all(isinstance(s, str) for s in v):
        raise EdgekitError("{} must be comma-separated names, got {!r}".format(flag, v))
    return [s.strip().lower() for s in v if s.strip()]


def _text_or(*types):
    def convert(v, flag):
        if isinstance(v, types):
            return v
        return _text(v, flag)
    return convert


def _path(v, flag):
    if isinstance(v, (str, Path)) and str(v):
        return Path(v)
    raise EdgekitError("{} must be a path, got {!r}".format(flag, v))


def _byte_count(v, flag):
    """A byte count (``74000``, ``"74_000"``, ``"74,000"``) or ``"none"`` (no limit)."""
    if isinstance(v, str):
        t = v.strip().lower().replace("_", "").replace(",", "")
        if t == "none":
            return "none"
        v = int(t) if t.isdigit() else v
    if isinstance(v, bool) or not hasattr(v, "__index__") or int(v.__index__()) < 1:
        raise EdgekitError("{} must be an integer >= 1 or 'none', got {!r}".format(flag, v))
    return int(v.__index__())


INT = Kind("int", _int)
FLOAT = Kind("float", _float)
TEXT = Kind("str", _text)
SWITCH = Kind("bool", _switch, switch=True)
NAMES = Kind("str", _names)
PATH = Kind("path", _path)
BYTES = Kind("str", _byte_count)
TEXT_OR_INT = Kind("str", _text_or(int))          # a layer name or index
TEXT_OR_DICT = Kind("str", _text_or(dict))        # "conv1=16,conv2=32" or {name: n}


def _spec(v, flag):
    """A data spec, or (Python) an already loaded :class:`edgekit.data.Dataset`."""
    return v if hasattr(v, "x_train") else _text(v, flag)


DATA_SPEC = Kind("str", _spec)


def _duration(v, flag):
    """A wall-time budget (``10m``, ``90s``, ``1.5h``, ``600``) -> seconds (float > 0), by
    ``optimize --budget``'s own parser (:func:`edgekit.deadline.parse_budget`): one grammar,
    one message, for both commands."""
    from edgekit.deadline import parse_budget
    return parse_budget(v)


DURATION = Kind("duration", _duration)


# -- checks ------------------------------------------------------------------------------------
def at_least(low):
    def check(v, flag):
        if v < low:
            raise EdgekitError("{} must be an integer >= {}, got {!r}".format(flag, low, v))
    return check


def interval(low, high, closed="neither", what=""):
    """``low < v < high`` (``closed``: ``"neither"``, ``"low"``, ``"high"`` or ``"both"``
    ends included); NaN is outside every interval."""
    lo_in, hi_in = closed in ("low", "both"), closed in ("high", "both")

    def check(v, flag):
        ok = (v >= low if lo_in else v > low) and (v <= high if hi_in else v < high)
        if not ok or not math.isfinite(v):
            if closed == "neither":
                span = "between {:g} and {:g} (exclusive)".format(low, high)
            else:
                span = "in {}{:g}, {:g}{}".format("[" if lo_in else "(", low, high,
                                                  "]" if hi_in else ")")
            raise EdgekitError("{}{} must be {}, got {:g}".format(flag, what, span, v))
    return check


def positive(v, flag):
    if not (math.isfinite(v) and v > 0):
        raise EdgekitError("{} must be > 0, got {:g}".format(flag, v))


def one_of(choices, note=""):
    """``choices``: a tuple, or ``"module:NAME"`` of one (the fact stays where it lives)."""
    def check(v, flag):
        names = _resolve_ref(choices)
        if v not in names:
            raise EdgekitError("{} must be one of {}{}, got {!r}".format(
                flag, ", ".join(names), note, v))
    return check


def uses(ref):
    """The check a library already has, ``"module:function"`` taking the value (imported only
    when it runs): the message stays where the rule lives."""
    def check(v, flag):
        _resolve_ref(ref)(v)
    return check


def _executor(v, flag):
    if v != "local":
        if not v.startswith("dask://"):
            raise EdgekitError("{} must be local or dask://HOST:PORT, got {!r}".format(flag, v))
        from edgekit.dask_client import parse_dask_address
        parse_dask_address(v)


def _training(name):
    """lr / batch size through the check ``edgekit train`` uses too."""
    def check(v, flag):
        from edgekit.models import check_training_params
        check_training_params(**{name: v})
    return check


def _resolve_ref(ref):
    if isinstance(ref, str):
        module, attr = ref.split(":")
        return getattr(importlib.import_module(module), attr)
    return ref


# -- the declarations --------------------------------------------------------------------------
# options several methods take (each method lists the ones it does, by name)
COMMON = {o.name: o for o in (
    option("max_drop", FLOAT, None, "Most validation accuracy (points) the result may lose; over "
           "it nothing is written (default 1.0).", uses("edgekit.compress.guard:check_max_drop")),
    option("allow_drop", SWITCH, False, "Write the result even when it loses more than "
           "--max-drop."),
    option("preprocess", TEXT_OR_DICT, None, "Input the model expects: unit (raw/255) | symmetric "
           "(raw/127.5-1) | raw | imagenet (default: raw if the model has a Rescaling layer, "
           "else unit)."),
    option("scale", FLOAT, None, "Explicit preprocessing: x = (pixel*SCALE - MEAN) / STD on "
           "0..255 pixels."),
    option("mean", TEXT, None, "Explicit preprocessing: MEAN (one value or one per channel, "
           "comma-separated)."),
    option("std", TEXT, None, "Explicit preprocessing: STD (one value or one per channel)."),
    option("epochs", INT, None, "prune/distill/--qat: most fine-tuning epochs (default: scaled "
           "to the data).", at_least(0)),
    option("lr", FLOAT, None, "prune/quantize --qat/distill: learning rate.", _training("lr")),
    option("batch_size", INT, None, "prune/quantize --qat/distill.", _training("batch_size")),
    option("seed", INT, 0, ""),
    option("budget", DURATION, None, "prune/distill: wall time the training may take, e.g. "
           "10m, 90s, 1.5h; bounds the extra rounds a default cap adds while still improving "
           "(default: no time limit, at most 2 extra rounds)."),
)}
# --scale/--mean/--std become one ``preprocess`` value (edgekit.adapt.parse_preprocess)
PREPROCESS_PARTS = ("scale", "mean", "std")
_INPUT = ("max_drop", "allow_drop", "preprocess", "scale", "mean", "std")   # every method's


def _common(*names, **defaults):
    return tuple(COMMON[n].but(default=defaults[n]) if n in defaults else COMMON[n]
                 for n in names)


OPTIONS = {
    "prune": _common(*_INPUT) + _common("epochs", "lr", "batch_size", "seed", "budget") + (
        option("sparsity", FLOAT, None, "prune: target sparsity in (0,1) (default 0.8).",
               interval(0, 1)),
        option("structured", SWITCH, False, "prune: remove whole conv channels by coupled group "
               "(Add/Concatenate/depthwise follow; L1)."),
        option("ratio", FLOAT, None, "prune --structured: fraction of filters removed (default "
               "0.5).", interval(0, 1, what=" (fraction of filters removed)")),
        option("keep", TEXT_OR_DICT, None, "prune --structured: channels kept, LAYER=N[,LAYER=N] "
               "(the layer's whole group).", uses("edgekit.compress.prune:parse_keep")),
        option("dense_width", INT, None, "prune: shrink the first hidden Dense to N units.",
               at_least(1)),
        option("target_macs", FLOAT, None, "prune --structured: remove the globally weakest conv "
               "channels until MACs <= this fraction of the original (e.g. 0.5).",
               interval(0, 1, what=" (fraction of the original MACs to keep)")),
        option("round_to", INT, None, "prune --structured: kept channel counts are multiples of N "
               "(default: 16 where the cut allows, else 8 -- CPU kernels block channels by 16/8).",
               at_least(1)),
    ),
    "quantize": _common(*_INPUT) + _common("epochs", "lr", "batch_size", "seed",
                                                 lr=1e-4) + (
        option("precision", TEXT, "int8", "quantize: int8 (default) | fp16.",
               one_of(("int8", "fp16"), " (fp32 is the model you have)")),
        option("formats", NAMES, None, "quantize: tflite,onnx,openvino (default: all)."),
        option("calibration_samples", INT, 200, "quantize: training images for calibration "
               "(default 200).", at_least(1)),
        option("calibration_data", DATA_SPEC, None, "quantize: calibrate on this spec's training split "
               "instead."),
        option("io", TEXT, "float", "quantize: TFLite input/output type, float | int8.",
               one_of(("float", "int8"))),
        option("onnx_activations", TEXT, "uint8", "quantize: ONNX activations uint8 | int8.",
               one_of(("uint8", "int8"))),
        option("qat", SWITCH, False, "quantize: quantization-aware training (tfmot), then int8 "
               "TFLite."),
        option("target", TEXT, None, "quantize: refuse precisions the target cannot run."),
        option("per_channel", SWITCH, True, "per-channel int8 weights (ONNX)", cli=False),
    ),
    "distill": _common(*_INPUT) + _common("epochs", "lr", "batch_size", "seed", "budget",
                                                lr=1e-3) + (
        option("student", TEXT, None, "distill: student architecture (tiny, ...)."),
        option("width", FLOAT, None, "distill: width multiplier in (0,1] for a derived student.",
               interval(0, 1, "high")),
        option("depthwise", SWITCH, False, "distill: SeparableConv2D in the derived student."),
        option("resolution", FLOAT, None, "distill: the derived student sees r-scaled images (a "
               "Resizing first layer; ~r^2 MACs).", interval(0, 1, "high")),
        option("temperature", FLOAT, 4.0, "distill: softmax temperature (default 4).", positive),
        option("alpha", FLOAT, 0.1, "distill: weight of the hard-label loss (default 0.1).",
               interval(0, 1, "both", what=" (weight of the hard-label loss)")),
        option("augment", TEXT, "none", "distill: random shifts of the training images (none | "
               "shift: up to 10% of height and width each way, edges repeated); the teacher's "
               "soft labels stay those of the unshifted image.",
               one_of("edgekit.compress.distill:AUGMENTS")),
        option("refit", SWITCH, False, "distill: after the held-out slice has chosen the epoch "
               "count, train again on all training images for that many epochs (~2x the time)."),
        option("refit_epochs", INT, None, "distill: only the refit, for N epochs an earlier "
               "selection run of this student and --seed chose (no held-out slice).",
               at_least(1)),
        option("settle", SWITCH, True, "distill: stop once within the guard and an epoch brings "
               "no new best (False: train to the cap, keep the best epoch -- optimize)",
               cli=False),
    ),
    "knn-slice": _common(*_INPUT) + (
        option("cut", TEXT_OR_INT, "auto", "knn-slice: layer NAME, INDEX or auto."),
        option("k", INT, None, "knn-slice: neighbours (default: chosen on validation).",
               at_least(1)),
        option("prototypes", INT, None, "knn-slice: k-means prototypes per class.", at_least(1)),
        option("dims", INT, None, "knn-slice: PCA dimensions (0: no PCA).", at_least(0)),
        option("pool", TEXT_OR_INT, None, "knn-slice: pooling window before the head: avgN | "
               "maxN | N (avg).", uses("edgekit.compress.knn.onnx:parse_pool")),
        option("int8", SWITCH, None, "knn-slice: store prototypes as int8.",
               flag="--int8/--no-int8"),
        option("int8_weights", SWITCH, False, "knn-slice: store trunk kernels and PCA as int8."),
        option("objective", TEXT, "accuracy", "knn-slice --cut auto: accuracy | size | latency.",
               one_of("edgekit.compress.knn.search:OBJECTIVES")),
        option("max_bytes", BYTES, None, "knn-slice: size limit in bytes (default: the input "
               "model's bytes; 'none': no limit)."),
        option("cut_candidates", TEXT, "blocks", "knn-slice --cut auto: blocks (default: block "
               "ends) | all (every conv/pool unit).",
               one_of("edgekit.compress.knn.cuts:CANDIDATE_SETS")),
        option("min_accuracy", FLOAT, None, "knn-slice --cut auto: accuracy floor (0-1).",
               interval(0, 1, "both")),
        option("evolve", TEXT, None, "knn-slice: cma | pso (evolve the trunk for the k-NN).",
               one_of("edgekit.compress.evolve:METHODS")),
        option("evolve_space", TEXT, "channels", "evolution: channels (per-filter gains of the "
               "last conv, NCA fitness) | kernels (every conv weight).",
               one_of("edgekit.compress.evolve:SPACES")),
        option("strategy", TEXT, None, "evolution: serial | parallel.",
               one_of("edgekit.compress.evolve:STRATEGIES")),
        option("generations", INT, None, "", at_least(1)),
        option("population", INT, None, "", at_least(2)),
        option("time_budget", FLOAT, None, "evolution: seconds, keeps the best so far.",
               positive),
        option("init", TEXT, None, "evolution: backprop | random.",
               one_of("edgekit.compress.evolve:INITS")),
    ) + _common("seed") + (
        option("checkpoint", PATH, None, "evolution: checkpoint/resume directory."),
        option("executor", TEXT, None, "evolution: local | dask://HOST:PORT.",
               _executor),
        option("weights", TEXT, "uniform", "k-NN vote weights", one_of(("uniform", "distance")),
               cli=False),
        option("reduction", TEXT, None, "reference set: all | kmeans | cnn (default: searched)",
               one_of(("all", "kmeans", "cnn")), cli=False),
        option("ref_samples", INT, None, "cap on the training vectors used as references",
               at_least(1), cli=False),
        option("val_samples", INT, None, "validation images scoring the search (default "
               "edgekit.compress.knn.search.VAL_SAMPLES)", at_least(1), cli=False),
    ),
}
# knn-slice options that go on to the evolution (evolve_channels or evolve_trunk) when given
EVOLVE_PARAMS = ("evolve_space", "strategy", "generations", "population", "time_budget", "init",
                 "seed", "checkpoint", "executor")
# ... of which these apply to --evolve-space kernels only (evolve_trunk)
KERNEL_ONLY_PARAMS = ("strategy", "init", "checkpoint", "executor")


def table(method):
    """``name -> Option`` of ``method``; an unknown method is one clear error."""
    if method not in OPTIONS:
        raise EdgekitError("unknown compression method {!r}; choose one of: {}".format(
            method, ", ".join(sorted(OPTIONS))))
    return collections.OrderedDict((o.name, o) for o in OPTIONS[method])


def method_options():
    """``method -> set of CLI option names`` (``edgekit.compress.METHOD_OPTIONS``)."""
    return {m: {o.name for o in opts if o.cli} for m, opts in OPTIONS.items()}


def cli_options():
    """Every CLI option once, in declaration order (a shared option is declared once, so
    every method's copy carries the same flag and help)."""
    seen = collections.OrderedDict()
    for opts in OPTIONS.values():
        for o in opts:
            if o.cli and o.name not in seen:
                seen[o.name] = o
    return list(seen.values())


def resolve(method, params):
    """``params`` checked for ``method``: each converted and checked, options of another method
    refused, ``--scale/--mean/--std`` folded into ``preprocess``, defaults filled in.

    Raises :class:`EdgekitError` with the message the CLI prints for the same value.
    """
    opts = table(method)
    bad = sorted(set(params) - set(opts))
    if bad:
        def flag(name):
            return "--" + name.replace("_", "-")
        raise EdgekitError("{} {} not an option of --method {} (its options: {})".format(
            ", ".join(flag(b) for b in bad), "is" if len(bad) == 1 else "are", method,
            " ".join(o.flag_name for o in sorted(opts.values(), key=lambda o: o.name)
                     if o.cli)))
    given = {name: opts[name].parse(v) for name, v in params.items()}
    values = {name: o.default for name, o in opts.items()}
    values.update((k, v) for k, v in given.items() if v is not None)
    if any(values.get(p) is not None for p in PREPROCESS_PARTS):
        from edgekit.adapt import parse_preprocess
        parse_preprocess(values.get("preprocess"), *(values[p] for p in PREPROCESS_PARTS))
        values["preprocess"] = {p: values[p] for p in PREPROCESS_PARTS}
    elif values.get("preprocess") is not None:
        from edgekit.adapt import parse_preprocess
        parse_preprocess(values["preprocess"])
    for p in PREPROCESS_PARTS:
        values.pop(p, None)
    return values


def declared(method):
    """Decorate the method function ``fn(model, data, out, *, <options>, force, progress)``:
    its options arrive resolved (:func:`resolve`) with the declared defaults, so calling it
    directly checks them as ``compress()`` and the CLI do."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(model, data, out, force=False, progress=True, **params):
            return fn(model, data, out, force=force, progress=progress,
                      **resolve(method, params))
        P = inspect.Parameter
        run.__signature__ = inspect.Signature(
            [P(n, P.POSITIONAL_OR_KEYWORD) for n in ("model", "data", "out")]
            + [P(o.name, P.KEYWORD_ONLY, default=o.default) for o in OPTIONS[method]]
            + [P("force", P.KEYWORD_ONLY, default=False),
               P("progress", P.KEYWORD_ONLY, default=True)])
        run.method = method
        return run
    return wrap


def cli_parameters():
    """The ``edgekit compress`` option parameters: ``inspect.Parameter`` objects with typer
    defaults (raw strings in, :func:`resolve` converts them, so the CLI and the Python API share
    the check and its message). Imports typer, not the methods."""
    import typer
    P = inspect.Parameter
    out = []
    for o in cli_options():
        if o.kind.switch:
            default = typer.Option(None, o.flag or o.flag_name, help=o.help)
            annotation = bool
        else:
            default = typer.Option(None, o.flag or o.flag_name, help=o.help,
                                   metavar="<{}>".format(o.kind.name))
            annotation = str
        out.append(P(o.name, P.KEYWORD_ONLY, default=default, annotation=annotation))
    return out
