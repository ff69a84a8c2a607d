"""Target descriptors (``targets/*.toml``): the single source of truth, read by code.

Each says which runtimes, formats and precisions a target runs (``format_precisions``: what
``edgekit export`` writes per format), its max/default ONNX opset, the op domains/ops it
rejects, its input layout and why a precision is refused.

Example::

    t = load_target("jetson-nano")
    t["max_opset"]                                   # 13 (TensorRT 8.2's ONNX parser)
    check_onnx_model("model.onnx", "jetson-nano")    # -> list of problems, [] when it runs
    check_artifact("out/seed", "ncs2")               # what `edgekit doctor --target` prints
"""
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (e.g. an NCS2 host's OpenVINO 2022.3 interpreter)
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

from edgekit.errors import EdgekitError

TARGETS_DIR = Path(__file__).resolve().parent.parent / "targets"
REQUIRED_KEYS = ("name", "runtimes", "formats", "precisions", "max_opset")

# ONNX ops TensorRT 8.2's parser converts (onnx-tensorrt docs/operators.md of the 8.x branch,
# rows marked "Y"), for static checks. Restrictions on inputs are checked where cheap (TopK K).
TRT82_OPS = frozenset("""Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool
BatchNormalization Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
CumSum DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten
Floor Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater
GreaterOrEqual GRU HardSigmoid Identity If ImageScaler InstanceNormalization IsNaN LeakyRelu Less
LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean Min Mul
Neg NonMaxSuppression Not Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomUniform
RandomUniformLike Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN Round
ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Sigmoid Sign Sin Sinh Size Slice
Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile
TopK Transpose Unsqueeze Upsample Where Xor""".split())

_DEFAULT_DOMAINS = ("", "ai.onnx")


def target_names():
    """Names of every target descriptor in ``targets/``."""
    return sorted(p.stem for p in TARGETS_DIR.glob("*.toml"))


def load_target(name):
    """The descriptor dict of target ``name`` (refuses unknown names, names the known ones)."""
    if isinstance(name, dict):
        return name
    path = TARGETS_DIR / "{}.toml".format(name)
    if not name or "/" in str(name) or not path.is_file():
        raise EdgekitError("unknown target {!r}; choose one of: {}".format(
            name, ", ".join(target_names())))
    if tomllib is None:
        from edgekit.errors import MissingDependency
        raise MissingDependency("reading {} on Python < 3.11 needs tomli: pip install tomli"
                                .format(path))
    try:
        with open(path, "rb") as fh:
            t = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise EdgekitError("{} is not valid TOML: {}".format(path, exc)) from None
    missing = [k for k in REQUIRED_KEYS if k not in t]
    if missing:
        raise EdgekitError("{} lacks {}".format(path, ", ".join(missing)))
    t.setdefault("default_precision", t["precisions"][0])
    t.setdefault("default_opset", t["max_opset"])
    t.setdefault("forbidden_domains", [])
    t.setdefault("forbidden_ops", [])
    t.setdefault("refuse_reasons", {})
    t.setdefault("format_precisions", {f: list(t["precisions"]) for f in t["formats"]})
    return t


def l4t_release_info(target, l4t):
    """``{"jetpack", "tensorrt", "base_image"}`` for a device's L4T release (``'R32.7.1'``, as
    ``edgekit_remote.py identity`` reads /etc/nv_tegra_release), from the target's ``[l4t]``
    table; a key ``R32.7`` covers every R32.7.x. An unlisted release is refused (HardwareMissing,
    exit 2) with the releases this target supports.

    Example: ``l4t_release_info("jetson-nano", "R32.6.1")["tensorrt"]`` -> ``'8.0.1'``.
    """
    from edgekit.errors import HardwareMissing
    t = load_target(target)
    table = t.get("l4t") or {}
    rel = str(l4t or "").strip()
    for key, info in table.items():
        if rel == key or rel.startswith(key + "."):
            return dict(info)
    known = "; ".join("L4T {} = {} (TensorRT {})".format(k, v["jetpack"], v["tensorrt"])
                      for k, v in table.items())
    raise HardwareMissing("{} runs on {}; this device reports L4T {}: flash one of those JetPack "
                          "releases (the Nano's last is JetPack 4.6.x)".format(
                              t["name"], known or "no L4T release", rel or "unknown (not a Jetson?)"))


def check_precision(target, precision):
    """Refuse a precision the target cannot run, saying why (e.g. int8 on the Jetson Nano)."""
    t = load_target(target)
    if precision not in ("fp32", "fp16", "int8"):
        raise EdgekitError("unknown precision {!r}; choose fp32, fp16 or int8".format(precision))
    if precision not in t["precisions"]:
        why = t["refuse_reasons"].get(precision)
        raise EdgekitError("target {} refuses {}{} (allowed: {})".format(
            t["name"], precision, ": " + why if why else "", ", ".join(t["precisions"])))


def check_format(target, fmt, precision):
    """Refuse a format (or format x precision) the target's descriptor does not list."""
    t = load_target(target)
    if fmt not in t["formats"]:
        raise EdgekitError("target {} does not run {} (it runs: {})".format(
            t["name"], fmt, ", ".join(t["formats"])))
    allowed = t["format_precisions"].get(fmt, [])
    if precision not in allowed:
        if precision == "int8" and fmt in ("onnx", "openvino"):
            raise EdgekitError("int8 {} comes from calibration: run `edgekit compress MODEL "
                               "--method quantize` (export writes {} as {})".format(
                                   fmt, fmt, "/".join(allowed)))
        raise EdgekitError("target {} exports {} as {} only, not {}".format(
            t["name"], fmt, "/".join(allowed), precision))


def check_onnx_model(onnx_path, target):
    """Problems (sorted list of one-line str) that stop ``target`` from running this ONNX file:
    opset above the target's max, forbidden domains/ops, and for TensorRT targets any
    default-domain op outside TensorRT 8.2's parser list or a TopK whose K is not constant."""
    import onnx
    t = load_target(target)
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError / OSError for junk
        return ["{} is not a readable ONNX file ({})".format(onnx_path, type(exc).__name__)]
    problems = []
    for imp in model.opset_import:
        if imp.domain in _DEFAULT_DOMAINS and imp.version > t["max_opset"]:
            problems.append("opset {} > {}'s max opset {}".format(
                imp.version, t["name"], t["max_opset"]))
    bad_domains = set(t["forbidden_domains"])
    bad_ops = set(t["forbidden_ops"])
    trt = bool(t.get("check_trt82_ops"))
    for graph, node in _all_nodes(model.graph):
        if node.domain in bad_domains:
            problems.append("op {} (domain {}) is not supported on {}".format(
                node.op_type, node.domain, t["name"]))
        elif node.op_type in bad_ops:
            problems.append("op {} is not supported on {}".format(node.op_type, t["name"]))
        elif trt and node.domain in _DEFAULT_DOMAINS and node.op_type not in TRT82_OPS:
            problems.append("op {} is outside TensorRT 8.2's ONNX parser".format(node.op_type))
        elif trt and node.op_type == "TopK" and len(node.input) > 1 \
                and not _is_constant(graph, node.input[1]):
            problems.append("op TopK needs a constant K for TensorRT 8.2 (node {})".format(
                node.name or node.output[0]))
    return sorted(set(problems))


def check_artifact(artifact, target):
    """Problems (list of str) for running an artifact on ``target``; [] when it can run.

    Looks at the inference files the target's runtimes read: their precisions, their ONNX ops
    and opset, and for the NCS2 whether OpenVINO 2022.3 could read them (recorded at export).
    This is what ``edgekit doctor --target T ARTIFACT`` prints.
    """
    from edgekit.artifact import Artifact
    art = artifact if hasattr(artifact, "manifest") else Artifact.open(artifact)
    t = load_target(target)
    problems = []
    runnable = [n for n, e in art.files.items()
                if e.get("format") in t["formats"] and e.get("inference", True)]
    if not runnable:
        return ["no {} file for {}: run `edgekit export {} --format {} --target {}`".format(
            "/".join(t["formats"]), t["name"], art.path, t["formats"][0], t["name"])]
    ok = []
    for name in runnable:
        e = art.files[name]
        mine = []
        prec = e.get("precision")
        if prec == "int8" and "int8" not in t["precisions"]:
            why = t["refuse_reasons"].get("int8", "")
            mine.append("{}: int8 is not allowed on {}{}".format(
                name, t["name"], " (" + why + ")" if why else ""))
        if e.get("format") == "onnx":
            mine += ["{}: {}".format(name, p) for p in check_onnx_model(art.file(name), t)]
        if t.get("check_ov2022") and e.get("ov2022", {}).get("readable") is False:
            mine.append("{}: OpenVINO 2022.3 cannot read it ({})".format(
                name, e["ov2022"].get("error", "see manifest")))
        if t["name"] == "ncs2" and e.get("format") == "openvino" and prec != "fp16":
            mine.append("{}: the NCS2 needs an FP16 IR (this one is {})".format(name, prec))
        problems += mine
        if not mine:
            ok.append(name)
    if ok:  # one usable file is enough: report the rest as notes only when none is usable
        return []
    return problems


def _is_constant(graph, name):
    if any(i.name == name for i in graph.initializer):
        return True
    return any(n.op_type == "Constant" and name in n.output for n in graph.node)


def _all_nodes(graph):
    """(graph, node) for every node, subgraphs (If/Loop/Scan bodies) included."""
    for node in graph.node:
        yield graph, node
        for attr in node.attribute:
            subs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
            for sub in subs:
                yield from _all_nodes(sub)
