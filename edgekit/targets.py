"""Target descriptors (``targets/*.toml``): the single source of truth, read by code.

Each says which runtimes, formats and precisions a target runs, its max ONNX opset, the op
domains/ops it rejects, and its input layout.

Example::

    t = load_target("jetson-nano")
    t["max_opset"]                 # 13 (TensorRT 8.2's ONNX parser)
    check_onnx_model("model.onnx", "jetson-nano")   # -> list of problems
"""
import tomllib
from pathlib import Path

from edgekit.errors import EdgekitError

TARGETS_DIR = Path(__file__).resolve().parent.parent / "targets"

# TensorRT 8.2's ONNX parser: ops it supports (onnx-tensorrt 8.2 operators.md), for static checks.
TRT82_OPS = set("""Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool
BatchNormalization Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
CumSum DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten
Floor GRU Gather GatherElements Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater
GreaterOrEqual HardSigmoid HardSwish Identity If InstanceNormalization IsInf IsNaN LRN LSTM
LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization LpPool MatMul Max MaxPool Mean
Min Mod Mul Neg NonMaxSuppression Not OneHot Or PRelu Pad ParametricSoftplus Pow QuantizeLinear
RNN RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1
ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize ReverseSequence ScaledTanh Scatter ScatterElements ScatterND
Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split
Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Unsqueeze Upsample Where
Xor""".split())


def target_names():
    return sorted(p.stem for p in TARGETS_DIR.glob("*.toml"))


def load_target(name):
    """The descriptor dict of target ``name`` (refuses unknown names)."""
    path = TARGETS_DIR / "{}.toml".format(name)
    if not path.is_file():
        raise EdgekitError("unknown target {!r}; choose one of: {}".format(
            name, ", ".join(target_names())))
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def check_precision(target, precision):
    """Refuse a precision the target cannot run, saying why."""
    t = load_target(target) if isinstance(target, str) else target
    if precision not in t["precisions"]:
        why = {"jetson-nano": "the Jetson Nano's Maxwell GPU has no fast INT8; use fp16",
               "ncs2": "the NCS2 (MYRIAD) runs FP16 only"}.get(t["name"], "")
        raise EdgekitError("target {} does not accept {} ({}allowed: {})".format(
            t["name"], precision, why + "; " if why else "", ", ".join(t["precisions"])))


def check_onnx_model(onnx_path, target):
    """Problems (list of str) that stop ``target`` from running this ONNX file."""
    import onnx
    t = load_target(target) if isinstance(target, str) else target
    model = onnx.load(str(onnx_path), load_external_data=False)
    problems = []
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > t["max_opset"]:
            problems.append("opset {} > {}'s max {}".format(imp.version, t["name"], t["max_opset"]))
    bad_domains = set(t.get("forbidden_domains", []))
    bad_ops = set(t.get("forbidden_ops", []))
    for node in _all_nodes(model.graph):
        if node.domain in bad_domains:
            problems.append("op {} in domain {} is not supported on {}".format(
                node.op_type, node.domain, t["name"]))
        elif node.op_type in bad_ops:
            problems.append("op {} is not supported on {}".format(node.op_type, t["name"]))
        elif t["name"] == "jetson-nano" and node.domain in ("", "ai.onnx") \
                and node.op_type not in TRT82_OPS:
            problems.append("op {} is outside TensorRT 8.2's ONNX parser".format(node.op_type))
    return sorted(set(problems))


def check_artifact(artifact, target):
    """Problems for running an artifact on ``target``: formats present, precisions, ops."""
    from edgekit.artifact import Artifact
    art = artifact if hasattr(artifact, "manifest") else Artifact.open(artifact)
    t = load_target(target)
    problems = []
    runnable = [n for n, e in art.files.items()
                if e.get("format") in t["formats"] and e.get("inference", True)]
    if not runnable:
        problems.append("no {} file: run `edgekit export {} --format {} --target {}`".format(
            "/".join(t["formats"]), art.path, t["formats"][0], t["name"]))
    for name in runnable:
        e = art.files[name]
        if e.get("precision") not in t["precisions"] and e.get("precision") != "fp32":
            problems.append("{}: precision {} not allowed on {}".format(
                name, e.get("precision"), t["name"]))
        if e.get("format") == "onnx":
            problems += ["{}: {}".format(name, p) for p in check_onnx_model(art.file(name), t)]
    return problems


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                yield from _all_nodes(attr.g)
