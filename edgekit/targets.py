"""Target descriptors (``targets/*.toml``): the single source of truth, read by code.

Each says which runtimes a target runs (preference order), which formats and precisions
(``format_precisions``: what ``edgekit export`` writes per format), its max/default ONNX opset,
the op domains/ops it rejects, its input layout, why a precision is refused, its device, the
hardware it needs (``host_arch``, ``[hardware]``: marker file, USB vendor, packages), what to
install (``[install]``), its container (``[docker]``) and the device's venv (``[setup]``).
No Python names a target: a new target is one TOML file.

Example::

    t = load_target("laptop-cpu")
    t["max_opset"]                                   # 17
    check_onnx_model("model.onnx", t)                # -> list of problems, [] when it runs
    check_artifact("out/seed", t)                    # what `edgekit doctor --target` prints
    pick_file(Artifact.open("out/seed"), t, "onnxruntime")   # (name, files entry)
    machine_check(t)                                 # can this machine run it?
"""

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (e.g. an NCS2 host's OpenVINO 2022.3 interpreter)
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

from collections.abc import MutableMapping
from dataclasses import dataclass, field, fields

from edgekit.errors import EdgekitError

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

# TensorRT 8.0.1 (JetPack 4.6) lacks what the 8.2 EA parser added (onnx-tensorrt's 8.2 changelog):
# Einsum, IsNaN, GatherND, Scatter, ScatterElements, ScatterND, Sign, Round.
TRT80_OPS = TRT82_OPS - frozenset(
    "Einsum IsNaN GatherND Scatter ScatterElements ScatterND Sign Round".split())

# (major, minor) -> the ops that TensorRT's ONNX parser converts; a version uses the newest
# entry not above it (8.4+ read at least 8.2's list).
TRT_OPS = {(8, 0): TRT80_OPS, (8, 2): TRT82_OPS}


def trt_ops(version):
    """(label, op set) of the ONNX parser of TensorRT ``version`` ('8.0.1' -> 8.0's list)."""
    import re
    nums = [int(n) for n in re.findall(r"\d+", str(version))[:2]] + [0, 0]
    key = max([k for k in TRT_OPS if k <= tuple(nums[:2])] or [min(TRT_OPS)])
    return "TensorRT {}.{}".format(*nums[:2]), TRT_OPS[key]


_DEFAULT_DOMAINS = ("", "ai.onnx")


def _targets_dir():
    from edgekit.resources import data_file
    return data_file("targets")


def target_names():
    """Names of every target descriptor in ``targets/`` (packaged as edgekit/_data/targets)."""
    return sorted(p.name[:-len(".toml")] for p in _targets_dir().iterdir()
                  if p.name.endswith(".toml"))


def default_target():
    """The target used when none is named: the descriptor with ``default = true``."""
    for name in target_names():
        if load_target(name).get("default"):
            return name
    raise EdgekitError("no target descriptor says default = true in targets/")


def load_target(name):
    """The :class:`Target` of ``name``, parsed from ``targets/NAME.toml`` and schema-checked
    (unknown names refused, naming the known ones). Called once at a command's boundary; the
    object goes down from there. A Target (or a descriptor dict) given instead is checked and
    returned as a Target (:func:`as_target`)."""
    if isinstance(name, (Target, dict)):
        return as_target(name)
    path = _targets_dir() / "{}.toml".format(name)
    if not name or "/" in str(name) or "\\" in str(name) or not path.is_file():
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
    return Target.from_dict(t, where=str(path))


def as_target(target):
    """``target`` as a :class:`Target`: itself when it is one (no parsing), a descriptor dict
    checked like a TOML file, a name loaded (:func:`load_target`)."""
    if isinstance(target, Target):
        return target
    if isinstance(target, dict):
        return Target.from_dict(target, where="target {!r}".format(target.get("name", "?")))
    return load_target(target)


_P = ("fp32", "fp16", "int8")      # a tuple: one of these values
_STRS = [str]                      # a list: every item of this type
_ANY = "*"                         # a table key: any name, its values of this type


class OneOf(tuple):
    """A spec that accepts a value fitting any of its specs (``OneOf((str, _STRS))``)."""

# targets/*.toml, key by key: what each key holds; unknown keys are refused, at the top and
# inside the fixed tables. Hand-checked (:func:`_check`), not jsonschema: the device-side
# interpreters (OpenVINO 2022.3's Python 3.10) read these files with tomli alone.
TARGET_SCHEMA = {
    "name": str,
    "default": bool,
    "runtimes": _STRS,
    "formats": _STRS,
    "precisions": [_P],
    "default_precision": _P,
    "refuse_reasons": {"fp32": str, "fp16": str, "int8": str},
    "max_opset": int,
    "default_opset": int,
    "static_batch": int,
    "forbidden_domains": _STRS,
    "forbidden_ops": _STRS,
    "check_trt82_ops": bool,
    "check_ov2022": bool,
    "device": str,
    "host_arch": _STRS,
    "format_precisions": {_ANY: [_P]},
    "runtime_formats": {_ANY: _STRS},
    "trt_python_dir": str,             # filled into [docker] run_flags
    "container_image": str,            # the Dockerfiles' base image (a test holds them equal)
    "hardware": {"what": str, "marker_file": str, "marker_text": OneOf((str, _STRS)),
                 "l4t_board": str, "not_here": str,
                 "usb_vendor": str, "requires": _STRS, "cuda_bindings": _STRS,
                 "versions": {_ANY: str}, "prefer_precision": _P, "elsewhere": str},
    "install": {_ANY: str},
    "l4t": {_ANY: {"jetpack": str, "tensorrt": str, "base_image": str}},
    "docker": {"dockerfile": str, "image": str, "default_runtime": str, "make_dirs": _STRS,
               "run_flags": _STRS, "shell_flags": str},
    "setup": {"packages": _STRS, "pip": str, "path": str},
    "description": str,                # shown by doctor
    "tensorrt": str,                   # the version whose ONNX ops are checked when the device is unknown
}


# keys only people read; tests/test_target_schema.py checks that no code reads them and that
# code reads every other key (none today: every key is read)
INFORMATIONAL = ()


def _check(value, spec, key):
    """None when ``value`` fits ``spec`` (see :data:`TARGET_SCHEMA`), else what is wrong."""
    if isinstance(spec, OneOf):
        problems = [_check(value, one, key) for one in spec]
        return None if None in problems else " or ".join(problems)
    if isinstance(spec, tuple):
        return None if value in spec else "{} is {!r}, not one of {}".format(
            key, value, ", ".join(spec))
    if isinstance(spec, list):
        if not isinstance(value, list):
            return "{} must be a list".format(key)
        return next((p for i, v in enumerate(value)
                     for p in [_check(v, spec[0], "{}[{}]".format(key, i))] if p), None)
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return "{} must be a table".format(key)
        for k, v in value.items():
            sub = spec.get(k, spec.get(_ANY))
            if sub is None:
                return "unknown key {}.{} (known: {})".format(key, k, ", ".join(spec))
            problem = _check(v, sub, "{}.{}".format(key, k))
            if problem:
                return problem
        return None
    if spec is int and (type(value) is not int or value < 1):
        return "{} must be a whole number >= 1".format(key)
    if not isinstance(value, spec):
        return "{} must be {}".format(key, {str: "a string", bool: "true or false"}.get(
            spec, spec.__name__))
    return None


@dataclass(eq=False)
class Target(MutableMapping):
    """One target descriptor (``targets/NAME.toml``), checked against :data:`TARGET_SCHEMA`
    and with its defaults filled in. Fields are typed attributes (``t.max_opset``); the
    object also reads like the descriptor dict it replaces (``t["formats"]``,
    ``t.get("l4t")``; a key the TOML left out and that has no default is absent)."""
    name: str
    runtimes: list
    formats: list
    precisions: list
    max_opset: int
    default_precision: str = None
    default_opset: int = None
    forbidden_domains: list = field(default_factory=list)
    forbidden_ops: list = field(default_factory=list)
    refuse_reasons: dict = field(default_factory=dict)
    format_precisions: dict = None
    runtime_formats: dict = field(default_factory=dict)
    hardware: dict = field(default_factory=dict)
    install: dict = field(default_factory=dict)
    host_arch: list = field(default_factory=list)
    device: str = "CPU"
    default: bool = None
    static_batch: int = None
    check_trt82_ops: bool = None
    check_ov2022: bool = None
    trt_python_dir: str = None
    container_image: str = None
    l4t: dict = None
    docker: dict = None
    setup: dict = None
    description: str = None
    tensorrt: str = None

    def __post_init__(self):
        if self.default_precision is None:
            self.default_precision = self.precisions[0]
        if self.default_opset is None:
            self.default_opset = self.max_opset
        if self.format_precisions is None:
            self.format_precisions = {f: list(self.precisions) for f in self.formats}

    @classmethod
    def from_dict(cls, d, where="target"):
        """A checked Target from a descriptor dict: one EdgekitError line for an unknown key,
        a missing or mistyped one, or a runtime/format the registry does not know."""
        from edgekit.runtime.registry import FORMATS, RUNTIMES
        missing = [k for k in REQUIRED_KEYS if k not in d]
        if missing:
            raise EdgekitError("{} lacks {}".format(where, ", ".join(missing)))
        unknown = sorted(set(d) - set(TARGET_SCHEMA))
        if unknown:
            raise EdgekitError("{}: unknown key{} {} (known: {})".format(
                where, "s" if len(unknown) > 1 else "", ", ".join(unknown),
                ", ".join(TARGET_SCHEMA)))
        problem = next((p for k, v in d.items() for p in [_check(v, TARGET_SCHEMA[k], k)] if p),
                       None)
        if problem:
            raise EdgekitError("{}: {}".format(where, problem))
        for what, names, known in (("runtime", d["runtimes"], RUNTIMES),
                                   ("runtime", d.get("runtime_formats", {}), RUNTIMES),
                                   ("format", d["formats"], FORMATS),
                                   ("format", d.get("format_precisions", {}), FORMATS)):
            bad = [n for n in names if n not in known]
            if bad:
                raise EdgekitError("{}: unknown {} {} (known: {})".format(
                    where, what, ", ".join(bad), ", ".join(known)))
        return cls(**{k: v for k, v in d.items()})

    # the descriptor-dict view: present keys only (None = left out of the TOML)
    def __getitem__(self, key):
        value = getattr(self, key, None) if key in _FIELDS else None
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key, value):
        if key not in _FIELDS:
            raise KeyError("targets have no key {!r}".format(key))
        setattr(self, key, value)

    def __delitem__(self, key):
        self[key]
        setattr(self, key, None)

    def __iter__(self):
        return (k for k in _FIELDS if getattr(self, k) is not None)

    def __len__(self):
        return sum(1 for _ in self)

    def __eq__(self, other):
        return isinstance(other, (Target, dict)) and dict(self) == dict(other)

    __hash__ = None


_FIELDS = tuple(f.name for f in fields(Target))


# -- which file a runtime runs --------------------------------------------------------------

def runtime_formats(target, runtime):
    """The formats ``runtime`` reads for ``target``, best first (``[runtime_formats]``, else
    the runtime's own format, e.g. openvino -> openvino IR)."""
    from edgekit.runtime import RUNTIME_FORMATS
    t = as_target(target)
    return list(t["runtime_formats"].get(runtime) or [RUNTIME_FORMATS[runtime]])


def made_for(entry, target):
    """True when a manifest files entry was exported for ``target`` (its ``targets`` tag)."""
    tags = entry.get("targets") or entry.get("target") or []
    return as_target(target)["name"] in ([tags] if isinstance(tags, str) else tags)


def candidate_files(art, target, runtime):
    """Names of the inference files ``runtime`` can run for ``target``, best first: the
    target's preferred precision (``[hardware] prefer_precision``), files exported for the
    target before the others."""
    t = as_target(target)
    names = [n for f in runtime_formats(t, runtime) for n in art.find(f)
             if art.files[n].get("inference", True)]
    prefer = t["hardware"].get("prefer_precision")
    if prefer:
        names = sorted(names, key=lambda n: art.files[n].get("precision") != prefer)
    tagged = [n for n in names if made_for(art.files[n], t)]
    return tagged + [n for n in names if n not in tagged]


def pick_file(art, target, runtime, model_file=None, any_file=False):
    """(name, files entry) of the file ``runtime`` runs for ``target``: ``model_file`` if given
    (checked), else one exported for the target, else an untagged file whose ops/opset the
    target reads; ``any_file`` also accepts files exported for other targets (a host-side
    bench of e.g. a laptop export on the NCS2 path). Refuses with the export command to run.

    Example: ``pick_file(Artifact.open("out/seed"), "laptop-cpu", "onnxruntime")``."""
    t = as_target(target)
    fmt = runtime_formats(t, runtime)[0]
    names = candidate_files(art, t, runtime)
    if model_file is not None:
        if model_file not in names:
            raise EdgekitError("--model-file {!r} is not a {} file of {} that {} runs (it has: {})"
                               .format(model_file, fmt, art.path, runtime,
                                       ", ".join(names) or "none"))
        problems = (check_onnx_model(art.file(model_file), t)
                    if art.files[model_file].get("format") == "onnx" else [])
        if problems:
            raise EdgekitError("{} cannot run {}: {}".format(t["name"], model_file,
                                                            "; ".join(problems)))
        return model_file, art.files[model_file]
    usable = [n for n in names if made_for(art.files[n], t)]
    if not usable:  # untagged files: accept one whose ops/opset the target reads
        usable = [n for n in names if not art.files[n].get("targets")
                  and not art.files[n].get("target")
                  and (art.files[n].get("format") != "onnx"
                       or not check_onnx_model(art.file(n), t))]
    if not usable and any_file:
        usable = names
    if not usable:
        raise EdgekitError("{} has no {} file exported for {}: run `edgekit export {} --format {} "
                           "--target {}`".format(art.path, fmt, t["name"], art.path, fmt,
                                                 t["name"]))
    return usable[0], art.files[usable[0]]


def file_path(art, name):
    """The path a runner opens for files entry ``name`` (a SavedModel-like dir's ``entry``)."""
    e = art.files[name]
    p = art.file(name)
    return p / e["entry"] if (e.get("entry") and p.is_dir()) else p


# -- can this machine run the target ---------------------------------------------------------

def remote_facts(target):
    """The target's facts the device-side preflight needs (JSON-able; the device has no
    tomllib): name, runtimes, device, host_arch, hardware marker / USB vendor, install hints."""
    t = as_target(target)
    hw = t["hardware"]
    facts = {"name": t["name"], "runtimes": t["runtimes"], "device": t["device"],
             "host_arch": t["host_arch"], "install": t["install"]}
    for key in ("what", "marker_file", "marker_text", "not_here", "usb_vendor", "cuda_bindings",
                "l4t_board"):
        if key in hw:
            facts[key] = hw[key]
    flags = list((t.get("docker") or {}).get("run_flags") or [])
    if "--runtime" in flags[:-1]:  # the --docker preflight checks docker has this runtime
        facts["docker_runtime"] = flags[flags.index("--runtime") + 1]
    if t.get("trt_python_dir"):   # and that the TensorRT bindings it mounts exist on the host
        facts["trt_python_dir"] = t["trt_python_dir"]
    return facts


def hardware_problems(target, usb=True):
    """Failed hardware checks ({"name", "ok", "value", "what", "fix"}) for running ``target``
    here: host arch, marker file, USB vendor. The same checks the device preflight runs
    (``deploy/edgekit_remote.py hardware_checks``), from the same file."""
    from edgekit.resources import remote_module
    return [c for c in remote_module().hardware_checks(remote_facts(target), usb=usb)
            if not c["ok"]]


def _missing(what, install, hardware=False):
    return {"what": what, "install": install, "hardware": hardware}


def machine_check(target, runtimes=None, device=None, versions=None):
    """Can this machine run ``target``? ``{"name", "ready", "runtimes", "missing", "notes"}``
    (``missing``: [{"what", "install", "hardware"}], what to install or attach for each).

    Checks, all from targets/T.toml: the hardware (:func:`hardware_problems`; the L4T release
    against ``[l4t]``), then packages: ``[hardware] requires`` (all of them, at the pinned
    ``versions``), or at least one of ``runtimes``; and for OpenVINO on a device other than
    the CPU, that OpenVINO lists it. ``runtimes``: only those (what ``bench`` will run);
    ``device``: an OpenVINO device chosen by the user (``CPU`` skips the hardware checks).
    The one checker behind ``edgekit doctor --target``, ``bench`` and (on the device, from
    the same facts) the deploy preflight.
    """
    from edgekit.packages import install_hint, package_version
    t = as_target(target)
    hw, hints = t["hardware"], t["install"]
    ver = versions if versions is not None else {}

    def version(pkg):
        if pkg not in ver:
            ver[pkg] = package_version(pkg)
        return ver[pkg]
    missing, notes = [], []
    on_own_device = device is None or str(device).split(".")[0] == t["device"]
    if on_own_device:
        for c in hardware_problems(t):
            missing.append(_missing(c["what"], c["fix"], hardware=True))
            if c["name"] == "arch":
                return _report(t, [], missing, notes)  # nothing else matters on this machine
        if t.get("l4t") and not any(m["hardware"] for m in missing):
            from edgekit.errors import HardwareMissing
            from edgekit.resources import remote_module
            rel = remote_module().l4t_release()  # /etc/nv_tegra_release
            try:
                info = l4t_release_info(t, rel)
                notes.append("L4T {} = {} (TensorRT {})".format(rel, info["jetpack"],
                                                               info["tensorrt"]))
            except HardwareMissing as exc:
                missing.append(_missing("a supported L4T release ({})".format(rel), str(exc),
                                        hardware=True))
        if hw.get("usb_vendor"):
            notes.append("USB vendor {} ({}) {}".format(
                hw["usb_vendor"], hw.get("what", t["name"]),
                "not found" if any("USB" in m["what"] for m in missing) else "found"))
    wanted = list(runtimes or t["runtimes"])
    requires = [p for p in hw.get("requires", []) if runtimes is None or
                any(rt in hw["requires"] for rt in wanted)]
    pins = hw.get("versions", {}) if on_own_device else {}  # pinned for the device's plugin

    def pkg_problem(pkg):
        v = version(pkg)
        hint = hints.get(pkg) or install_hint(pkg)
        if not v:
            return _missing("{}{}".format(pkg, " " + pins[pkg] if pkg in pins else ""), hint)
        if pkg in pins and not v.startswith(pins[pkg]):
            return _missing("{} {} (installed {} {})".format(
                pkg, pins[pkg], v, hints.get(pkg + "_version", "is another release")), hint)
        return None
    if requires:
        missing += [p for p in map(pkg_problem, requires) if p]
        usable = [rt for rt in wanted if not pkg_problem(rt)]
    else:
        usable = [rt for rt in wanted if not pkg_problem(rt)]
        if not usable:
            missing.append(_missing("an inference runtime ({})".format(" or ".join(wanted)),
                                    hints.get(wanted[0]) or install_hint(wanted[0])))
    notes.append("runtimes available: " + (", ".join(usable) or "none"))
    for rt in [r for r in t["runtimes"] if r not in wanted and r != "openvino"]:
        if version(rt):
            notes.append("{} {} is installed (another runtime of {})".format(
                rt, version(rt), t["name"]))
    want_dev = device or t["device"]
    if "openvino" in usable and want_dev.split(".")[0] not in ("CPU", "GPU") and \
            not any(m["what"].startswith("openvino") for m in missing):
        devices = _openvino_devices()
        notes.append("OpenVINO devices: " + (", ".join(devices) or "none"))
        if not any(d == want_dev or d.startswith(want_dev + ".") for d in devices):
            missing.append(_missing("a {} device ({})".format(want_dev, hw.get("what", t["name"])),
                                    hints.get("device", "attach the device"), hardware=True))
    if any(m["hardware"] for m in missing):  # the USB check first, then the OpenVINO devices:
        hw_missing = [m for m in missing if m["hardware"]]  # report only the first hardware gap
        if len(hw_missing) > 1 and "USB" in hw_missing[0]["what"]:
            missing.remove(hw_missing[0])
    return _report(t, [] if missing else usable, missing, notes)


def _report(t, runtimes, missing, notes):
    return {"name": t["name"], "description": t.get("description"), "ready": not missing,
            "runtimes": runtimes, "missing": missing, "notes": notes}


def _openvino_devices():
    """Devices OpenVINO (2022.3 API) sees; imports openvino, never tensorflow."""
    try:
        from openvino.runtime import Core
        return list(Core().available_devices)
    except Exception as exc:  # a broken install: report it as "no device" with the reason
        return ["(cannot query devices: {})".format(str(exc).splitlines()[0] if str(exc) else
                                                     type(exc).__name__)]


def require_machine(target, runtimes, device=None):
    """Raise (exit 2) unless this machine can run ``runtimes`` of ``target``: HardwareMissing
    naming where to run it instead (``[hardware] elsewhere``), or MissingDependency with what
    to install. ``bench`` calls this so no number is ever labelled with hardware it was not
    measured on."""
    from edgekit.errors import HardwareMissing, MissingDependency
    rep = machine_check(target, runtimes=runtimes, device=device)
    if rep["ready"]:
        return rep
    t = as_target(target)
    what = "; ".join("{} -> {}".format(m["what"], m["install"]) for m in rep["missing"])
    if any(m["hardware"] for m in rep["missing"]):
        where = t["hardware"].get("elsewhere")
        raise HardwareMissing("{} cannot run here: {}{}".format(
            t["name"], what, "; run it there: `{}`".format(where) if where else ""))
    raise MissingDependency("{} cannot run here: {}".format(t["name"], what))


def l4t_release_info(target, l4t):
    """``{"jetpack", "tensorrt", "base_image"}`` for a device's L4T release (``'R32.7.1'``, as
    ``edgekit_remote.py identity`` reads /etc/nv_tegra_release), from the target's ``[l4t]``
    table; a key ``R32.7`` covers every R32.7.x. An unlisted release is refused (HardwareMissing,
    exit 2) with the releases this target supports.

    Example: ``l4t_release_info("jetson-nano", "R32.6.1")["tensorrt"]`` -> ``'8.0.1'``.
    """
    from edgekit.errors import HardwareMissing
    t = as_target(target)
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
    t = as_target(target)
    if precision not in ("fp32", "fp16", "int8"):
        raise EdgekitError("unknown precision {!r}; choose fp32, fp16 or int8".format(precision))
    if precision not in t["precisions"]:
        why = t["refuse_reasons"].get(precision)
        raise EdgekitError("target {} refuses {}{} (allowed: {})".format(
            t["name"], precision, ": " + why if why else "", ", ".join(t["precisions"])))


def check_format(target, fmt, precision):
    """Refuse a format (or format x precision) the target's descriptor does not list."""
    t = as_target(target)
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


def check_onnx_model(onnx_path, target, tensorrt=None):
    """Problems (sorted list of one-line str) that stop ``target`` from running this ONNX file
    (a path, or the file's bytes): opset above the target's max, forbidden domains/ops, and for
    TensorRT targets any default-domain op outside the parser list of TensorRT ``tensorrt``
    (default: the target's ``tensorrt``; deploy passes the device's, from its L4T release) or
    a TopK whose K is not constant."""
    import onnx
    t = as_target(target)
    try:
        if isinstance(onnx_path, bytes):
            model = onnx.load_from_string(onnx_path)
        else:
            model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError / OSError for junk
        return ["{} is not a readable ONNX file ({})".format(
            "the model" if isinstance(onnx_path, bytes) else onnx_path, type(exc).__name__)]
    trt_label, trt_ops_ok = trt_ops(tensorrt or t.get("tensorrt") or "8.2")
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
        elif trt and node.domain in _DEFAULT_DOMAINS and node.op_type not in trt_ops_ok:
            problems.append("op {} is outside {}'s ONNX parser{}".format(
                node.op_type, trt_label, " (added in TensorRT 8.2: JetPack 4.6.1+)"
                if node.op_type in TRT82_OPS else ""))
        elif trt and node.op_type == "TopK" and len(node.input) > 1 \
                and not _is_constant(graph, node.input[1]):
            problems.append("op TopK needs a constant K for {} (node {})".format(
                trt_label, node.name or node.output[0]))
    return sorted(set(problems))


def check_artifact(artifact, target):
    """Problems (list of str) for running an artifact on ``target``; [] when it can run.

    Looks at the inference files the target's runtimes read: their precisions, their ONNX ops
    and opset, and for the NCS2 whether OpenVINO 2022.3 could read them (recorded at export).
    This is what ``edgekit doctor --target T ARTIFACT`` prints.
    """
    from edgekit.artifact import Artifact
    art = artifact if hasattr(artifact, "manifest") else Artifact.open(artifact)
    t = as_target(target)
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
        if e.get("format") == "openvino" and prec and prec not in t["precisions"]:
            mine.append("{}: {} needs a {} IR (this one is {})".format(
                name, t["name"], "/".join(t["precisions"]).upper(), prec))
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
