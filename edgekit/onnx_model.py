"""A user's ONNX file (from tf2onnx, PyTorch or any framework): its facts, and it as an artifact.

edgekit's data is NHWC float32. An ONNX model may want NCHW (PyTorch exports, any graph whose
input feeds a Conv directly) or NHWC (tf2onnx: the input goes through a Transpose first), and
may end in a Softmax node (probabilities), a LogSoftmax (log-probabilities) or neither
(logits), and may say which pixel values it wants (metadata, or a ``/255`` as its first op).
PyTorch files come with a fixed batch of 1, local functions or external data beside them:
functions are inlined and external data read (:func:`self_contained` makes one plain file
where a tool needs it). :func:`inspect_onnx` reads those facts from the graph; :func:`import_onnx` wraps the file as an artifact (kind ``model``,
method ``import``) whose manifest records them, so every later stage (eval, quantize, export,
bench, deploy, doctor) feeds the model what it expects. Nothing here imports tensorflow.

Example::

    facts = inspect_onnx("resnet.onnx")
    facts["layout"], facts["input_shape"], facts["output"]     # 'NCHW', [None, 3, 32, 32], 'softmax'
    art = import_onnx("resnet.onnx", "out/resnet", data="npz:cifar.npz")
    x = to_model_layout(ds.x_test, art.manifest["input"]["layout"])   # NHWC -> NCHW
"""
import contextlib
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError, MissingDependency

MODEL_FILE = "model.onnx"

# ops that keep the tensor layout (walked through when looking for the first layout-bearing op)
_ELEMENTWISE = {"Cast", "Identity", "Sub", "Mul", "Div", "Add", "Clip", "Relu", "Neg", "Abs",
                "Sqrt", "Pow", "QuantizeLinear", "DequantizeLinear"}
# standard ONNX ops whose 4-D input is NCHW by definition
_NCHW_OPS = {"Conv", "ConvInteger", "QLinearConv", "ConvTranspose", "MaxPool", "AveragePool",
             "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization", "InstanceNormalization",
             "LpPool", "Resize", "SpaceToDepth", "DepthToSpace"}
# ops a classifier's output may pass through after its last Softmax
_PASS_THROUGH = {"Identity", "Reshape", "Flatten", "Squeeze", "Cast"}
_DTYPES = {1: "float32", 10: "float16", 3: "int8", 2: "uint8", 6: "int32", 7: "int64"}

# said once when the file cannot tell which pixel values it was trained on
PREPROCESS_NOTE = ("note: {} does not say which pixel values it expects (0..1, 0..255, or "
                   "mean/std): feeding 0..1; if accuracy looks low pass --preprocess "
                   "raw|symmetric|imagenet or --scale/--mean/--std (e.g. torchvision MNIST: "
                   "--scale 0.00392157 --mean 0.1307 --std 0.3081)")

# what works on an ONNX file and what needs the Keras model: one line, used by every refusal
ONNX_VERBS = ("eval, import, compress --method quantize (int8 ONNX + OpenVINO), compress --method "
              "knn-slice, export --format openvino, bench, deploy, doctor")


def _onnx():
    try:
        import onnx
    except ImportError:
        raise MissingDependency("onnx is not installed: pip install onnx") from None
    return onnx


def is_onnx_file(path):
    """True for a bare ``.onnx`` file (not an artifact directory)."""
    p = Path(str(path))
    return p.suffix.lower() == ".onnx" and not p.is_dir()


def inspect_onnx(path):
    """Facts about the ONNX model at ``path`` that edgekit needs to feed and read it.

    Returns a dict: ``input_name``, ``input_shape`` (``None`` for dynamic dims), ``dtype``,
    ``layout`` (``NCHW`` / ``NHWC`` for 4-D input, ``None`` otherwise), ``image_shape`` (the
    NHWC ``(H, W, C)`` edgekit data must have, ``None`` for dynamic dims), ``output_name``,
    ``num_classes``, ``output`` (``softmax`` if the output comes from a Softmax node, ``log_softmax``
    from a LogSoftmax node, else ``logits``; the arg-max is the class either way), ``opset``, ``precision``
    (``int8`` with Q/DQ nodes, ``fp16`` with float16 weights, else ``fp32``), ``params``,
    ``producer``. A file that is not ONNX raises EdgekitError. ``params`` counts weights, not
    the integer shape constants a converter adds.
    """
    onnx = _onnx()
    path = Path(path)
    from edgekit.util import check_regular_file
    check_regular_file(path, "model")
    if path.stat().st_size == 0:
        raise EdgekitError("{} is empty (0 bytes): not an ONNX model".format(path))
    model = _load(onnx, path)
    external, functions = model.external_files, len(model.functions)
    model = _inlined(onnx, model)
    g = model.graph
    if not g.node and not g.input and not g.output:  # protobuf parses many byte strings
        raise EdgekitError("{} is not an ONNX model (no graph: {} bytes that parse as an empty "
                           "ModelProto)".format(path, path.stat().st_size))
    init_names = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in init_names]
    if len(inputs) != 1:
        raise EdgekitError("{} has {} inputs ({}): edgekit runs image classifiers with one "
                           "input".format(path, len(inputs), ", ".join(i.name for i in inputs)))
    if not g.output:
        raise EdgekitError("{} declares no output".format(path))
    inp, out = inputs[0], g.output[0]
    shape = _dims(inp)
    out_shape = _dims(out)
    from edgekit.artifact import check_input_shape
    check_input_shape(shape, "{}: input".format(path))
    layout = _layout(g, inp.name, shape)
    facts = {
        "input_name": inp.name,
        "input_shape": shape,
        "dtype": _DTYPES.get(inp.type.tensor_type.elem_type, "float32"),
        "layout": layout,
        "image_shape": _image_shape(shape, layout),
        "output_name": out.name,
        "output_names": [o.name for o in g.output],
        "output_shape": out_shape,
        "num_classes": out_shape[-1] if out_shape and isinstance(out_shape[-1], int) else None,
        "output": _convention(g, out.name),
        "preprocess": None, "preprocess_source": None,
        "opset": max([imp.version for imp in model.opset_import
                      if imp.domain in ("", "ai.onnx")] or [0]),
        "precision": _precision(onnx, model),
        "params": _params(onnx, g),
        "producer": " ".join(x for x in (model.producer_name, model.producer_version) if x),
        "functions": functions,
        "external_data": external,
    }
    facts["preprocess"], facts["preprocess_source"] = _preprocess_hint(model, inp.name)
    return facts


class _Model(object):
    """A loaded ModelProto (attributes pass through) and the external-data files it named."""

    def __init__(self, proto, external_files):
        self.proto, self.external_files = proto, external_files

    def __getattr__(self, name):
        return getattr(self.proto, name)


def _load(onnx, path):
    """The model at ``path`` with its external data (files beside it) read in; its
    ``external_files`` name them."""
    try:
        model = onnx.load(str(path), load_external_data=False)
        external = _external_files(model)
        if external:
            from onnx.external_data_helper import load_external_data_for_model
            load_external_data_for_model(model, str(Path(path).parent))
    except Exception as exc:  # DecodeError, OSError, external data missing
        raise EdgekitError("{} is not a readable ONNX model ({})".format(
            path, _first_line(exc))) from None
    return _Model(model, external)


def _external_files(model):
    """Names of the external-data files the model's tensors were read from (torch writes one
    beside a model over 2 GB)."""
    names = set()
    for t in model.graph.initializer:
        for kv in t.external_data:
            if kv.key == "location":
                names.add(kv.value)
    return sorted(names)


def _inlined(onnx, model):
    """``model`` with its local functions inlined (torch's ``export_modules_as_functions`` and
    older ``dynamo`` exports wrap Conv/Gemm in functions): what the graph walks below and
    onnxruntime's quantizer need to see. A model without functions is returned as it is."""
    model = getattr(model, "proto", model)
    if not len(model.functions):
        return model
    try:
        from onnx import inliner
        return inliner.inline_local_functions(model)
    except Exception:  # an onnx without the inliner, or a function it cannot inline
        return model


def load_inlined(path):
    """The ModelProto at ``path``, external data read in, local functions inlined (what a
    graph edit such as knn-slice's cut needs); one error line for a file that is not ONNX."""
    onnx = _onnx()
    return _inlined(onnx, _load(onnx, path))


def self_contained(path, work):
    """``path`` itself when it is one plain file; else a copy in ``work`` with its local
    functions inlined and its external data embedded (one file, what onnxruntime's quantizer,
    OpenVINO and an artifact need). Models over protobuf's 2 GB keep external data."""
    onnx = _onnx()
    loaded = _load(onnx, path)
    if not loaded.external_files and not len(loaded.functions):
        return Path(path)
    model = _inlined(onnx, loaded.proto)
    from onnx.external_data_helper import convert_model_from_external_data
    convert_model_from_external_data(model)
    dst = Path(work) / Path(path).name
    if dst.resolve() == Path(path).resolve():
        dst = dst.with_name("self-contained." + dst.name)
    if model.ByteSize() > 2 ** 31 - 2 ** 20:
        onnx.save(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=dst.name + ".data")
    else:
        onnx.save(model, str(dst))
    return dst


def _dims(value_info):
    dims = value_info.type.tensor_type.shape.dim
    return [int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in dims]


def _consumers(graph, name):
    return [n for n in graph.node if name in n.input]


def _layout(graph, input_name, shape):
    """NCHW/NHWC of a 4-D input: the first layout-bearing op it reaches decides (a standard
    Conv/pool means NCHW, a Transpose 0,3,1,2 means NHWC data made NCHW inside); failing that,
    which axis looks like channels (1, 3 or 4)."""
    if len(shape) != 4:
        return None
    frontier, seen = [input_name], set()
    while frontier:
        name = frontier.pop(0)
        if name in seen:
            continue
        seen.add(name)
        for node in _consumers(graph, name):
            if node.op_type == "Transpose":
                perm = [a.ints for a in node.attribute if a.name == "perm"]
                if perm and list(perm[0]) == [0, 3, 1, 2]:
                    return "NHWC"
                if perm and list(perm[0]) == [0, 2, 3, 1]:
                    return "NCHW"
            elif node.op_type in _NCHW_OPS and node.domain in ("", "ai.onnx"):
                return "NCHW"
            elif node.op_type in _ELEMENTWISE:
                frontier.extend(node.output)
    c1, c3 = shape[1], shape[3]
    if c3 in (1, 3, 4) and c1 not in (1, 3, 4):
        return "NHWC"
    if c1 in (1, 3, 4) and c3 not in (1, 3, 4):
        return "NCHW"
    return "NCHW"  # ONNX's own convention


def _image_shape(shape, layout):
    if layout == "NCHW":
        return (shape[2], shape[3], shape[1])
    if layout == "NHWC":
        return tuple(shape[1:])
    return tuple(shape[1:])


def _convention(graph, output_name):
    producers = {o: n for n in graph.node for o in n.output}
    name = output_name
    for _ in range(16):
        node = producers.get(name)
        if node is None:
            return "logits"
        if node.op_type == "Softmax":
            return "softmax"
        if node.op_type == "LogSoftmax":   # PyTorch's F.log_softmax head (NLLLoss training)
            return "log_softmax"
        if node.op_type not in _PASS_THROUGH:
            return "logits"
        name = node.input[0]
    return "logits"


# ONNX's image metadata (docs/MetadataProps.md, written by WinML-era converters): pixel range
_NOMINAL_RANGE = {"NominalRange_0_255": "raw", "Normalized_0_1": "unit",
                  "Normalized_1_1": "symmetric"}
# ops an input passes through before the graph's own scaling (if any) is met
_BEFORE_SCALING = {"Cast", "Identity", "Transpose", "Reshape", "Unsqueeze"}


def _preprocess_hint(model, input_name):
    """``(preprocess name, where it was read)`` when the file tells which pixel values it
    wants, else ``(None, None)``: metadata ``preprocess`` (an :data:`edgekit.adapt.PREPROCESS`
    name) or ``Image.NominalPixelRange``; or the graph itself dividing the input by 255 (or
    multiplying it by 1/255) first, which means it takes raw 0..255 pixels. Anything else --
    0..1, mean/std done outside the graph -- cannot be told from the file."""
    from edgekit.adapt import PREPROCESS
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get("preprocess") in PREPROCESS:
        return meta["preprocess"], "metadata 'preprocess'"
    if meta.get("Image.NominalPixelRange") in _NOMINAL_RANGE:
        return _NOMINAL_RANGE[meta["Image.NominalPixelRange"]], \
            "metadata Image.NominalPixelRange = " + meta["Image.NominalPixelRange"]
    g = model.graph
    consts = {t.name: t for t in g.initializer}
    consts.update({n.output[0]: a.t for n in g.node if n.op_type == "Constant"
                   for a in n.attribute if a.name == "value"})
    name = input_name
    for _ in range(8):
        users = _consumers(g, name)
        if len(users) != 1:
            return None, None
        node = users[0]
        if node.op_type in _BEFORE_SCALING:
            name = node.output[0]
            continue
        if node.op_type in ("Div", "Mul") and len(node.input) == 2:
            other = node.input[1] if node.input[0] == name else node.input[0]
            value = _scalar(consts.get(other))
            if value is not None:
                if node.op_type == "Div" and abs(value - 255.0) < 1e-3 or \
                        node.op_type == "Mul" and abs(value * 255.0 - 1.0) < 1e-4:
                    return "raw", "the graph divides its input by 255 ({})".format(
                        node.name or node.op_type)
        return None, None
    return None, None


def _scalar(tensor):
    """The single value of a constant tensor, or None."""
    if tensor is None:
        return None
    from onnx import numpy_helper
    try:
        a = numpy_helper.to_array(tensor)
    except Exception:  # external data not loaded, exotic types
        return None
    return float(a.reshape(-1)[0]) if a.size == 1 else None


def _params(onnx, graph):
    """Weights: every initializer element except integer shape/index constants."""
    skip = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
    return int(sum(int(np.prod(t.dims)) for t in graph.initializer if t.data_type not in skip))


def _precision(onnx, model):
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul",
              "ConvInteger", "MatMulInteger"}:
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


# -- data <-> model ------------------------------------------------------------------------

def to_model_layout(x, layout):
    """edgekit's NHWC batch ``x`` in the model's input ``layout`` (NCHW: transposed)."""
    if layout != "NCHW":
        return x
    x = np.asarray(x)
    if x.ndim != 4:
        raise EdgekitError("an NCHW model needs 4-D images, got shape {}".format(x.shape))
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def fit_data_to_onnx(facts, ds, what="the model", preprocess=None, say=None):
    """``ds`` fitted to the ONNX model's image size / channels and ``preprocess``
    (:func:`edgekit.adapt.fit_data`), then checked (:func:`check_data_fits`).

    Without ``preprocess`` the file's own hint is used (``facts["preprocess"]``: metadata, or
    a graph that divides by 255); when the file does not tell, ``unit`` (0..1) is assumed and
    ``say`` (if given) is told so once, naming ``--preprocess``."""
    shape = facts.get("image_shape")
    note = None
    if preprocess is None and facts.get("preprocess"):
        preprocess = facts["preprocess"]
        note = "{}: input preprocessing {} ({})".format(what, preprocess,
                                                       facts["preprocess_source"])
    elif preprocess is None and facts.get("layout"):
        note = PREPROCESS_NOTE.format(what)
    if shape is not None and len(shape) == 3 and all(d is not None for d in shape) \
            and len(ds.input_shape) == 3:
        from edgekit.adapt import fit_data
        ds = fit_data(ds, tuple(int(d) for d in shape), preprocess=preprocess)
    check_data_fits(facts, ds, what=what)
    if say:   # once the data fits (a refusal stays one line)
        for line in (note, _fitted_line(ds)):
            if line:
                say(line)
    return ds


def _fitted_line(ds):
    """What :func:`edgekit.adapt.fit_data` changed, as it says it, or None."""
    adapt = getattr(ds, "adapt", None) or {}
    parts = []
    if adapt.get("preprocess") not in (None, "unit"):
        from edgekit.adapt import _describe
        factor = float(ds.norm["scale"]) / float(getattr(ds, "unit_scale", ds.norm["scale"]))
        parts.append("preprocessing " + _describe(adapt["preprocess"], factor, ds.norm["mean"],
                                                  ds.norm["std"]))
    if adapt.get("resize"):
        parts.append("resized {}x{} -> {}x{}".format(*(adapt["source_size"] + adapt["resize"])))
    if adapt.get("channels"):
        parts.append("channels {}".format(adapt["channels"]))
    return "data {} fitted to the model: {}".format(ds.spec, "; ".join(parts)) if parts else None


def check_data_fits(facts, ds, what="the model"):
    """Refuse data whose image shape or class count does not fit the ONNX model (one line)."""
    want = facts["image_shape"]
    got = ds.input_shape
    if want is None or len(want) != len(got) or any(
            w is not None and w != g for w, g in zip(want, got)):
        shown = "x".join("?" if w is None else str(w) for w in (want or ()))
        raise EdgekitError("{} expects {} images ({} input {}) but {} has {}: pass --data of "
                           "that size (resizing is not done here yet)".format(
                               what, shown, facts["layout"] or "flat",
                               _shape_str(facts["input_shape"]), ds.spec,
                               "x".join(str(d) for d in got)))
    oshape = facts.get("output_shape") or []
    big = [d for d in oshape[1:] if not (isinstance(d, int) and d <= 1)]
    if len(oshape) > 2 and len(big) > 1:
        raise EdgekitError("{}'s output {} is a feature map ({}-D), not one score per class "
                           "(N, K): edgekit evaluates image classifiers".format(
                               what, _shape_str(oshape), len(oshape)))
    n = facts.get("num_classes")
    if n is not None and n != ds.num_classes:
        raise EdgekitError("{} has {} outputs but {} has {} classes".format(
            what, n, ds.spec, ds.num_classes))


def check_artifact_data(art, ds):
    """For an imported ONNX artifact, :func:`check_data_fits` naming the user's file (a bare
    file is wrapped in a temp artifact whose path means nothing to them); else nothing."""
    names = art.find("onnx") if art.method == "import" else []
    if names:
        what = (art.manifest.get("source") or {}).get("model") or str(art.path)
        check_data_fits(inspect_onnx(art.file(names[0])), ds, what=what)


def _shape_str(shape):
    return "[" + ",".join("N" if d is None else str(d) for d in shape) + "]"


def onnx_accuracy(path, x, y, layout, runtime="onnxruntime"):
    """Top-1 accuracy of the ONNX file run by ``runtime`` (onnxruntime or openvino) on NHWC
    ``x`` put into ``layout``."""
    from edgekit.runtime import open_runner
    from edgekit.runtime.bench import accuracy
    with tempfile.TemporaryDirectory(prefix="edgekit-onnx-") as work:
        # OpenVINO's ONNX reader rejects torch's module functions: give it them inlined
        path = self_contained(path, work) if runtime == "openvino" else path
        with open_runner(runtime, path) as r:
            return accuracy(r, to_model_layout(np.asarray(x, dtype=np.float32), layout), y,
                            batch=256)


def onnx_predict(path, x, layout, batch=256):
    """Class ids the ONNX file predicts for NHWC ``x`` (an array or lazy images) put into
    ``layout``, batch by batch (a fixed-batch model: that many at a time, the last padded)."""
    from edgekit.runtime.base import classes_from_outputs
    from edgekit.runtime.ort import OrtRunner
    out = []
    with OrtRunner(path) as r:
        fixed = (r.input_shape or [None])[0]
        step = fixed if isinstance(fixed, int) and fixed > 0 else batch
        for s in range(0, len(x), step):
            chunk = to_model_layout(np.asarray(x[s:s + step], dtype=np.float32), layout)
            n = len(chunk)
            if n < step and step == fixed:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - n, 0)])
            out.append(np.asarray(classes_from_outputs(r.infer(chunk)))[:n])
    return np.concatenate(out) if out else np.zeros((0,), np.int64)


def onnx_source(model):
    """Path of the ONNX model behind ``model`` when it is a bare ``.onnx`` file or an imported
    ONNX artifact (no Keras model inside), else None."""
    p = Path(str(model))
    if is_onnx_file(p):
        return p
    if p.is_dir() and (p / "manifest.json").is_file():
        from edgekit.artifact import Artifact
        art = Artifact.open(p, verify=False)
        if art.method == "import" and not art.find("keras"):
            names = [n for n in art.find("onnx") if art.files[n].get("inference", True)]
            if names:
                return art.file(names[0])
    return None


def refuse_training(model, method):
    """One-line refusal when a method that trains (prune, distill, QAT) gets an ONNX model."""
    if onnx_source(model) is not None:
        raise EdgekitError("{} is an ONNX model and {} retrains it, which needs the Keras model "
                           "(.h5/.keras/SavedModel); on an ONNX file edgekit runs: {}".format(
                               model, method, ONNX_VERBS))


# -- the ONNX file as an artifact ----------------------------------------------------------

def input_spec(facts, ds=None):
    """The manifest ``input`` entry of an ONNX model (+ the normalisation the data applied)."""
    spec = {"name": facts["input_name"], "shape": list(facts["input_shape"]),
            "dtype": facts["dtype"]}
    if facts["layout"]:  # images; a flat (N, F) input has no layout
        spec["layout"] = facts["layout"]
    if facts.get("preprocess") and ds is None:   # what the file says, for data_for later
        spec["preprocess"] = facts["preprocess"]
    if ds is not None:
        spec.update({"scale": ds.norm["scale"], "mean": ds.norm["mean"], "std": ds.norm["std"]})
        spec.update(getattr(ds, "adapt", None) or {})  # preprocess / resize / channels
    return spec


def output_spec(facts):
    """The manifest ``output`` entry: name, number of classes, convention (softmax/logits)."""
    return {"name": facts["output_name"], "classes": facts["num_classes"],
            "convention": facts["output"]}


def write_import(directory, path, data=None, measure=True, preprocess=None, say=None):
    """Copy the ONNX file at ``path`` into ``directory`` as ``model.onnx`` and write the
    manifest (kind ``model``, method ``import``). With ``data`` (a spec or Dataset) the data
    is checked against the model and, if ``measure``, test/validation accuracy recorded.
    ``preprocess``: the pixel values the model wants (:func:`fit_data_to_onnx`), recorded in
    the manifest's ``input`` so every later stage feeds the same. Functions are inlined and
    external data embedded (:func:`self_contained`); the source's sha256s are recorded."""
    from edgekit.artifact import describe_file, new_manifest, write_manifest
    from edgekit.data import file_sha256, load_data
    path = Path(path)
    facts = inspect_onnx(path)
    ds = None
    if data is not None:
        ds = data if hasattr(data, "x_train") else load_data(data)
        ds = fit_data_to_onnx(facts, ds, what=str(path), preprocess=preprocess, say=say)
    dst = Path(directory) / MODEL_FILE
    with tempfile.TemporaryDirectory(prefix="edgekit-onnx-") as work:  # one file in the artifact
        shutil.copyfile(str(self_contained(path, work)), str(dst))
    metrics = {"params": facts["params"], "bytes": int(dst.stat().st_size)}
    if ds is not None and measure:
        metrics["accuracy"] = onnx_accuracy(dst, ds.x_test, ds.y_test, facts["layout"])
        metrics["val_accuracy"] = onnx_accuracy(dst, ds.x_val, ds.y_val, facts["layout"])
    source = {"model_sha256": file_sha256(path), "model": str(path),
              "external_data": {n: file_sha256(path.parent / n) for n in facts["external_data"]},
              "functions_inlined": facts["functions"],
              "data": ds.spec if ds is not None else None,
              "data_sha256": ds.fingerprint() if ds is not None else None}
    classes = ds.classes if ds is not None else \
        [str(i) for i in range(facts["num_classes"] or 0)]
    manifest = new_manifest("model", "import", {"format": "onnx", "file": path.name,
                                                "producer": facts["producer"]},
                            source, input_spec(facts, ds), classes, metrics)
    manifest["output"] = output_spec(facts)
    manifest["files"][MODEL_FILE] = describe_file(
        dst, "onnx", facts["precision"], opset=facts["opset"], input_name=facts["input_name"],
        output_names=facts["output_names"], inference=True)
    if facts["preprocess_source"] and ds is not None:
        manifest["input"]["preprocess_source"] = facts["preprocess_source"]
    write_manifest(directory, manifest)
    return manifest


def import_onnx(path, out, data=None, force=False, preprocess=None, say=None):
    """Write the ONNX file at ``path`` as the artifact ``out`` (atomic); returns it."""
    from edgekit.artifact import Artifact, staging
    with staging(out, force=force) as tmp:
        write_import(tmp, path, data, preprocess=preprocess, say=say)
    return Artifact.open(out)


@contextlib.contextmanager
def artifact_for(model, data=None):
    """Yield an artifact directory for ``model``: the directory itself, or for a bare
    ``.onnx`` file a temporary artifact wrapping it (removed afterwards), so verbs that read
    an artifact (bench, deploy, doctor) take an ONNX file as it is."""
    if not is_onnx_file(model):
        yield Path(str(model))
        return
    work = Path(tempfile.mkdtemp(prefix="edgekit-onnx-"))
    try:
        art_dir = work / Path(str(model)).stem
        art_dir.mkdir()
        write_import(art_dir, model, data, measure=False)
        try:
            yield art_dir
        except EdgekitError as exc:  # name the user's file, not the temp copy (gone by now)
            import re
            text = re.sub(re.escape(str(art_dir)) + r"/[^\s:']+", str(model), str(exc))
            text = text.replace(str(art_dir), str(model))
            if text == str(exc):
                raise
            try:
                renamed = type(exc)(text)
            except TypeError:
                renamed = EdgekitError(text)
            renamed.exit_code = exc.exit_code
            raise renamed from None
    finally:
        shutil.rmtree(str(work), ignore_errors=True)


def manifest_layout(manifest):
    """The input layout an artifact's files take (NHWC unless the manifest says otherwise)."""
    return (manifest.get("input") or {}).get("layout") or "NHWC"


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


__all__ = ["inspect_onnx", "import_onnx", "write_import", "artifact_for", "to_model_layout",
           "self_contained", "load_inlined", "fit_data_to_onnx", "PREPROCESS_NOTE",
           "check_data_fits", "check_artifact_data", "onnx_accuracy", "onnx_source", "refuse_training", "is_onnx_file",
           "manifest_layout", "ONNX_VERBS"]
