"""int8 that keeps accuracy: choose the calibration per format on the validation split, and
keep the most sensitive layers in float when that is still not enough.

* ONNX (onnxruntime ``quantize_static``, QDQ, per-channel int8 weights): MinMax, Entropy and
  Percentile calibration are each tried with per-channel and with per-tensor int8 weights, and
  onnxruntime's own ``quantize_static`` defaults (int8 activations, per-tensor, MinMax) beside
  them; the best on validation wins, unless the default is within one standard error of it
  (then the split cannot tell them apart and the default is kept: never behind the standard
  tool by a validation fluke). On an x86 CPU without VNNI, uint8 activations are quantized
  with ``reduce_range`` (onnxruntime's guidance: its u8s8 kernels saturate there). Per-channel is not always better:
  MobileNetV2 0.35 on 32x32 MNIST lost 1.15 pt per-channel and 0.35 pt per-tensor on
  validation (test: 0.30 pt) — per-channel scales of near-dead channels after BatchNorm
  folding make bias scales ``s_in * s_w`` tiny, and the int32 biases saturate.
  If the best still loses more than ``max_drop``, a **sensitivity pass** quantizes the model
  once per Conv/Gemm/MatMul with just that node left float and ranks the nodes by how much of
  the output error (mean |p_int8 - p_fp32| on validation) that removes; the top 1, 2, 4, ...
  (at most half of them) go to ``nodes_to_exclude`` until the drop is within ``max_drop``.
* OpenVINO (NNCF): the ``performance`` (symmetric) and ``mixed`` (asymmetric activations)
  presets are tried, each with per-channel (NNCF's default) and per-tensor weights, and the
  ``performance`` ones again with the full BiasCorrection (``fast_bias_correction=False``);
  NNCF's default, ``performance`` per-channel, is kept when within one standard error of the
  best (MobileNetV2 0.35 on 32x32 MNIST: performance per-channel -0.40 pt validation / -0.87 pt
  test, per-tensor -0.30 / -0.24; ResNet-style there: the full BiasCorrection recovered fp32 on
  validation, 96.55% -> 97.10%); if the best still loses more than ``max_drop``,
  ``nncf.quantize_with_accuracy_control`` reverts the most harmful layers to float.

A file that keeps layers float is slower than a fully-int8 one (ResNet-style on 32x32 MNIST:
accuracy control kept one conv float, 0.113 ms p50 against nncf.quantize's 0.080 ms), so it
is a candidate, not the answer: :func:`keep_float` keeps it only when the fully-int8 file
fails the guard (--max-drop), loses to it by more than one validation standard error, or
loses to it and is measured slower; both are timed interleaved (not assumed) and the
manifest says which was kept and why (``float_candidate``).

Both return what was tried and what was kept in float, for the manifest.

A model with a fixed batch (``torch.onnx.export`` writes batch 1 unless told otherwise) is fed
batches of exactly that size everywhere here -- onnxruntime's calibration reader, NNCF's
calibration and validation data sets, the candidates' scoring -- the last one padded with its
last image and its extra outputs dropped. Not a dynamic-batch copy of the graph: a static
export folds the batch into constants (``Reshape`` to ``[1, 256]``), so a copy with a free
batch dimension could fail or silently compute something else.

Example::

    info = onnx_int8(float_onnx, "model.int8.onnx", rep, "input", x_val, y_val, max_drop=0.5)
    info["method"], info["float_layers"], info["candidates"]
"""
import shutil
import tempfile
from pathlib import Path

import numpy as np

ONNX_METHODS = ("MinMax", "Entropy", "Percentile")
OPENVINO_PRESETS = ("performance", "mixed")
QUANTIZABLE = ("Conv", "Gemm", "MatMul", "ConvTranspose")
# points the calibration search aims to stay within when the caller has no --max-drop of its
# own: an aim, tighter than the guard (compress.guard.DEFAULT_MAX_DROP, 1.0), never a check
DEFAULT_MAX_DROP = 0.5
VAL_SAMPLES = 2000        # validation images the search scores candidates on
SENSITIVITY_SAMPLES = 500  # ... and the per-layer sensitivity pass


class _Reader(object):
    """onnxruntime CalibrationDataReader over images, ``batch`` at a time (1, or the model's
    fixed batch; the last chunk padded with repeats of its last image)."""

    def __init__(self, name, x, batch=1):
        self.name, self.x, self.i, self.batch = name, x, 0, int(batch)

    def get_next(self):
        if self.i >= len(self.x):
            return None
        chunk = pad_batch(self.x[self.i:self.i + self.batch], self.batch)
        self.i += self.batch
        return {self.name: chunk}

    def rewind(self):
        self.i = 0


def fixed_batch(shape):
    """The static batch size of an input ``shape`` (ints, None/str/-1 for dynamic), or None."""
    b = shape[0] if shape else None
    return b if isinstance(b, int) and b > 0 else None


def pad_batch(chunk, batch):
    """``chunk`` padded to ``batch`` rows with repeats of its last row (for a fixed-batch
    model); a full chunk as it is."""
    n = len(chunk)
    if n >= batch:
        return chunk
    return np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])


def _ort_session(path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _ort_outputs(path, x, batch=256):
    """First output of the ONNX file on all of ``x``: batches of ``batch``, or of the model's
    fixed batch (torch.onnx.export writes batch 1 unless told otherwise), padded and trimmed."""
    s = _ort_session(path)
    inp = s.get_inputs()[0]
    step = fixed_batch(inp.shape) or batch
    out = []
    for i in range(0, len(x), step):
        chunk = x[i:i + step]
        out.append(s.run(None, {inp.name: pad_batch(chunk, step) if fixed_batch(inp.shape)
                                else chunk})[0][:len(chunk)])
    return np.concatenate(out)


def model_batch(path):
    """The fixed batch of an ONNX file's input (onnxruntime's view), or None when dynamic."""
    return fixed_batch(_ort_session(path).get_inputs()[0].shape)


def _acc(out, y):
    return float(np.mean(np.argmax(out.reshape(len(out), -1), axis=1) == y))


def _subset(x, y, n, seed=0):
    if len(x) <= n:
        return x.astype(np.float32), y
    from edgekit.calibration import seeded_rows
    idx = seeded_rows(len(x), n, seed)
    return x[idx].astype(np.float32), y[idx]


ORT_DEFAULT = "ort-default"  # onnxruntime quantize_static's own defaults, always a candidate


def x86_without_vnni(cpuinfo="/proc/cpuinfo"):
    """True on an x86 CPU without VNNI (``avx512_vnni`` / ``avx_vnni``): onnxruntime's u8s8
    kernels there can saturate (pmaddubsw sums two u8*s8 products into int16), so its own
    guidance is int8 activations or ``reduce_range`` (7-bit weights). Elsewhere False."""
    import platform
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    try:
        with open(cpuinfo) as f:
            flags = next((l for l in f if l.startswith("flags")), "")
    except OSError:
        return False
    return not ({"avx512_vnni", "avx_vnni"} & set(flags.split()))


def standard_error(p, n):
    """Standard error of an accuracy ``p`` measured on ``n`` images (binomial)."""
    return float(np.sqrt(max(p * (1.0 - p), 0.0) / max(1, n)))


def choose(cands, order, n, prefer):
    """The candidate to keep: the best on validation, unless ``prefer`` (the standard tool's
    default) is within one standard error of it -- then the validation split cannot tell
    them apart and the default wins. Returns ``(name, why)``."""
    best = max(order, key=lambda c: (cands[c], -order.index(c)))
    se = standard_error(cands[best], n)
    if prefer in cands and prefer != best and cands[best] - cands[prefer] <= se:
        return prefer, ("within one standard error ({:.2f} pt on {} images) of the best ({}): "
                        "the standard default kept".format(100 * se, n, best))
    return best, "best on validation"


def keep_float(all_int8, partly, base, n, guard_drop, layers, p50=None):
    """Whether the candidate that keeps ``layers`` layers float (validation accuracy
    ``partly``) replaces the best fully-int8 one (``all_int8``; fp32 ``base``, ``n`` images).

    A user wants the fully-int8 file -- every layer on the int8 kernels, so usually faster and
    smaller -- unless it is not good enough: the partly-float one is kept only when the
    fully-int8 one fails the guard (loses more than ``guard_drop`` points) and the float layers
    help, or when it is more accurate by more than one standard error of the validation split,
    or when it is more accurate and measured faster (``p50``: ``(all_int8_ms,
    partly_float_ms)`` timed interleaved; on a one-layer model the Q/DQ pair can cost more than
    the int8 kernel saves). Returns ``(keep, why)``, ``why`` for the manifest."""
    se = standard_error(partly, n)
    lost, gain = 100.0 * (base - all_int8), partly - all_int8
    if lost > guard_drop and gain > 0:
        return True, ("the fully-int8 candidate loses {:.2f} pt on {} validation images, over "
                      "the guard's --max-drop {:g}; {} layer(s) float recover {:.2f} pt".format(
                          lost, n, guard_drop, layers, 100 * gain))
    if gain > se:
        return True, ("{} layer(s) float are {:.2f} pt more accurate on {} validation images, "
                      "more than one standard error ({:.2f} pt)".format(
                          layers, 100 * gain, n, 100 * se))
    if p50 is not None and gain > 0 and p50[1] < p50[0]:
        return True, ("{} layer(s) float are {:.2f} pt more accurate on {} validation images "
                      "and measured faster ({:.4f} vs {:.4f} ms p50)".format(
                          layers, 100 * gain, n, p50[1], p50[0]))
    return False, ("the fully-int8 candidate passes the guard ({:.2f} pt lost, --max-drop {:g}) "
                   "and is within one standard error ({:.2f} pt on {} images) of the one with "
                   "{} layer(s) float ({:+.2f} pt){}: fully int8 kept".format(
                       lost, guard_drop, 100 * se, n, layers, 100 * gain,
                       "" if p50 is None else ", {:.4f} vs {:.4f} ms p50".format(p50[0], p50[1])))


def interleaved_p50(files, x, batch=1, rounds=3, warmup=10, iterations=100):
    """{key: p50 ms} of ``files`` ({key: (runtime, path)}): batch ``batch``, one thread,
    :func:`edgekit.runtime.bench.measure` (``edgekit bench``'s protocol) on each file in turn,
    ``rounds`` times, the median of the rounds' p50s -- interleaved, so a load change on the
    machine hits every file alike."""
    from edgekit.runtime import open_runner
    from edgekit.runtime.bench import measure
    xs = x[:max(50, batch)].astype(np.float32)
    got = {k: [] for k in files}
    for _ in range(rounds):
        for k, (runtime, path) in files.items():
            r = open_runner(runtime, path, threads=1)
            try:
                got[k].append(measure(r, xs, batch=batch, warmup=warmup,
                                      iterations=iterations)["latency_ms"]["p50"])
            finally:
                r.close()
    return {k: float(np.median(v)) for k, v in got.items()}


def onnx_int8(float_onnx, path, rep, input_name, x_val, y_val, max_drop=DEFAULT_MAX_DROP,
              activations="uint8", per_channel=True, work=None, say=None, no_vnni=None,
              guard_drop=None):
    """Write the best int8 QDQ ONNX found to ``path``; returns the search record.

    Candidates: each calibration method with per-channel and per-tensor weights (activations as
    asked; ``reduce_range`` for uint8 activations on an x86 CPU without VNNI, ``no_vnni``
    overriding the detection), plus onnxruntime's own ``quantize_static`` defaults (int8
    activations, per-tensor, MinMax), so the result is never behind what the user gets
    without edgekit -- chosen by :func:`choose`. When the best still loses more than
    ``max_drop`` (the search's aim), the sensitivity pass builds a partly-float candidate; it
    replaces the fully-int8 one only as :func:`keep_float` says (``guard_drop``: the guard's
    --max-drop, default 1.0), both timed interleaved for the manifest (``float_candidate``)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    say = say or (lambda m: None)
    guard_drop = _guard_drop(guard_drop)
    work = Path(work)
    pre = _preprocess(float_onnx, work)
    xv, yv = _subset(x_val, y_val, VAL_SAMPLES)
    ref_out = _ort_outputs(float_onnx, xv)
    base = _acc(ref_out, yv)
    no_vnni = x86_without_vnni() if no_vnni is None else bool(no_vnni)
    reduce = no_vnni and activations == "uint8"
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    feed = model_batch(float_onnx) or 1    # calibration batches the model accepts

    def quant(dst, setting, exclude=()):
        quantize_static(str(pre), str(dst), _Reader(input_name, rep, feed),
                        quant_format=QuantFormat.QDQ, activation_type=types[setting["activations"]],
                        weight_type=QuantType.QInt8, per_channel=setting["per_channel"],
                        reduce_range=setting["reduce_range"],
                        calibrate_method=getattr(CalibrationMethod, setting["method"]),
                        nodes_to_exclude=list(exclude))
        return dst

    def key(method, channel):
        return method if channel == bool(per_channel) else "{}/{}".format(
            method, "per-channel" if channel else "per-tensor")
    settings = {key(m, c): {"method": m, "per_channel": c, "activations": activations,
                            "reduce_range": reduce}
                for c in (bool(per_channel), not per_channel) for m in ONNX_METHODS}
    default = {"method": "MinMax", "per_channel": False, "activations": "int8",
               "reduce_range": False}
    if default not in settings.values():
        settings[ORT_DEFAULT] = default
    cands, order = {}, list(settings)
    for k in order:
        dst = quant(work / "cand.{}.onnx".format(k.replace("/", "-")), settings[k])
        cands[k] = _acc(_ort_outputs(dst, xv), yv)
    same = [k for k in order if settings[k] == default]
    best, why = choose(cands, order, len(xv), same[0])
    chosen_setting = settings[best]
    say("  onnx calibration on {} validation images (fp32 {:.2%}): {}; chose {} ({})".format(
        len(xv), base, ", ".join("{} {:.2%}".format(m, a) for m, a in cands.items()), best, why))
    rec = {"method": chosen_setting["method"], "per_channel": bool(chosen_setting["per_channel"]),
           "activations": chosen_setting["activations"],
           "reduce_range": bool(chosen_setting["reduce_range"]), "cpu_without_vnni": no_vnni,
           "validation_fp32": base, "candidates": cands, "chosen": best, "chosen_by": why,
           "validation_samples": int(len(xv)), "float_layers": [],
           "validation_standard_error": standard_error(cands[best], len(xv)),
           "validation_accuracy": cands[best], "max_drop": float(max_drop)}
    chosen = all_int8 = work / "cand.{}.onnx".format(best.replace("/", "-"))
    if 100 * (base - cands[best]) > max_drop:
        ranked = _onnx_sensitivity(pre, quant, chosen_setting, work, x_val, y_val, float_onnx,
                                   chosen)
        say("  onnx: {:.2f} pt over --max-drop {:g}; most sensitive layers: {}".format(
            100 * (base - cands[best]), max_drop, ", ".join(n for n, _ in ranked[:5])))
        rec["sensitivity"] = [[n, s] for n, s in ranked]
        # at most half the layers float: beyond that the file is not an int8 model any more
        # (per-channel MobileNetV2 0.35 on 32x32 MNIST needed all 53 float to recover, before
        # per-tensor weights were tried: no conv alone carried the loss), and the guard decides
        cap = max(1, len(ranked) // 2)
        steps = sorted({min(2 ** i, cap) for i in range(cap.bit_length() + 1)})
        part = None                                   # (names, accuracy, file): the best one
        for k in steps:
            names = [n for n, _ in ranked[:k]]
            dst = quant(work / "cand.exclude{}.onnx".format(k), chosen_setting, names)
            acc = _acc(_ort_outputs(dst, xv), yv)
            say("  onnx with {} layer(s) float: {:.2%}".format(k, acc))
            if part is None or acc > part[1]:
                part = (names, acc, dst)
            if 100 * (base - acc) <= max_drop:
                break
        lat = interleaved_p50({"p50_ms_all_int8": ("onnxruntime", all_int8),
                               "p50_ms_partly_float": ("onnxruntime", part[2])}, x_val,
                              batch=feed)
        keep, why = keep_float(cands[best], part[1], base, len(xv), guard_drop, len(part[0]),
                               (lat["p50_ms_all_int8"], lat["p50_ms_partly_float"]))
        say("  onnx: " + why)
        rec["float_candidate"] = dict(float_layers=part[0], validation_accuracy=part[1],
                                      kept=keep, why=why, **lat)
        rec["float_cost"] = dict(bytes=int(part[2].stat().st_size - all_int8.stat().st_size),
                                 **lat)
        if keep:
            rec.update(float_layers=part[0], validation_accuracy=part[1], chosen_by=why)
            chosen = part[2]
        else:
            rec["chosen_by"] = "{}; {}".format(rec["chosen_by"], why)
    shutil.copyfile(str(chosen), str(path))
    return rec


def _preprocess(float_onnx, work):
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process
        pre = Path(work) / "model.pre.onnx"
        quant_pre_process(str(float_onnx), str(pre), skip_symbolic_shape=True)
        return pre
    except Exception:  # pre-processing is an optimisation; quantize the plain graph instead
        return Path(float_onnx)


def _onnx_sensitivity(pre, quant, setting, work, x_val, y_val, float_onnx, all_int8):
    """Nodes ranked by how much output error leaving just that node float removes."""
    import onnx
    xs, _ = _subset(x_val, y_val, SENSITIVITY_SAMPLES, seed=1)
    ref = _ort_outputs(float_onnx, xs)
    full_err = float(np.mean(np.abs(_ort_outputs(all_int8, xs) - ref)))
    nodes = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type in QUANTIZABLE and n.name]
    scores = []
    for name in nodes:
        dst = quant(work / "sens.onnx", setting, [name])
        err = float(np.mean(np.abs(_ort_outputs(dst, xs) - ref)))
        scores.append((name, round(full_err - err, 8)))
    scores.sort(key=lambda t: -t[1])
    return scores


def _guard_drop(drop):
    """The guard's --max-drop (points), its default when the caller has none."""
    if drop is None:
        from edgekit.compress.guard import DEFAULT_MAX_DROP as GUARD_DEFAULT
        return float(GUARD_DEFAULT)
    return float(drop)


# -- OpenVINO --------------------------------------------------------------------------------
def openvino_int8(float_onnx, xml, rep, x_val, y_val, max_drop=DEFAULT_MAX_DROP, say=None,
                  guard_drop=None):
    """Write the best int8 OpenVINO IR found to ``xml``; returns the search record.

    The fully-int8 candidates (presets x per-channel/per-tensor weights) are chosen by
    :func:`choose`; when the best still loses more than ``max_drop`` (the search's aim),
    ``nncf.quantize_with_accuracy_control`` builds one that keeps layers float, which replaces
    it only as :func:`keep_float` says (``guard_drop``: the guard's --max-drop, default 1.0),
    both timed interleaved for the manifest (``float_candidate``)."""
    import openvino as ov

    from edgekit.runtime.openvino import CPU_F32
    try:
        import nncf
    except ImportError:
        from edgekit.errors import MissingDependency
        raise MissingDependency("nncf is not installed: pip install 'edgekit[openvino]'") from None
    say = say or (lambda m: None)
    xv, yv = _subset(x_val, y_val, VAL_SAMPLES)
    core = ov.Core()
    m = ov.convert_model(str(float_onnx))
    name = m.inputs[0].get_any_name()
    # batches the model accepts: 100 for a dynamic batch, else its fixed batch (the last one
    # padded; the labels say how many rows count)
    dim0 = m.inputs[0].get_partial_shape()[0]
    fixed = dim0.get_length() if dim0.is_static else None
    feed, step = fixed or 1, fixed or 100
    calib = nncf.Dataset([pad_batch(rep[i:i + feed], feed) for i in range(0, len(rep), feed)],
                         lambda x: {name: x})
    batches = [(pad_batch(xv[i:i + step], step) if fixed else xv[i:i + step], yv[i:i + step])
               for i in range(0, len(xv), step)]

    def validate(compiled, data):
        hits = n = 0
        for x, y in data:
            out = compiled({name: x})[compiled.output(0)][:len(y)]
            hits += int(np.sum(np.argmax(out.reshape(len(out), -1), axis=1) == y))
            n += len(y)
        return hits / float(max(1, n))
    base = validate(core.compile_model(m, "CPU", CPU_F32), batches)
    presets = {"performance": nncf.QuantizationPreset.PERFORMANCE,
               "mixed": nncf.QuantizationPreset.MIXED}
    from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters,
                                                       QuantizationParameters)
    per_tensor = AdvancedQuantizationParameters(
        weights_quantization_params=QuantizationParameters(per_channel=False))
    # (key, preset, per-channel weights, fast bias correction): NNCF's default first, then
    # the other preset, per-tensor weights, and the full BiasCorrection (``/bias-correction``,
    # the default preset only: ResNet-style on 32x32 MNIST, validation 96.55% -> 97.10% = fp32)
    settings = [(p + w + b, p, not w, not b) for b in ("", "/bias-correction")
                for w in ("", "/per-tensor") for p in OPENVINO_PRESETS
                if not (b and p != "performance")]
    cands, models, order = {}, {}, []
    for key, p, channel, fast in settings:
        kw = {"fast_bias_correction": fast}
        if not channel:
            kw["advanced_parameters"] = per_tensor
        q = nncf.quantize(ov.convert_model(str(float_onnx)), calib, preset=presets[p],
                          subset_size=len(calib_items(rep, feed)), **kw)
        cands[key] = validate(core.compile_model(q, "CPU", CPU_F32), batches)
        models[key] = (q, p, kw)
        order.append(key)
    best, why = choose(cands, order, len(xv), "performance")  # nncf.quantize's default preset
    say("  openvino presets on {} validation images (fp32 {:.2%}): {}; chose {}".format(
        len(xv), base, ", ".join("{} {:.2%}".format(p, a) for p, a in cands.items()), best))
    q, preset, kw = models[best]
    rec = {"preset": preset, "per_channel": "advanced_parameters" not in kw,
           "fast_bias_correction": kw["fast_bias_correction"], "validation_fp32": base, "candidates": cands, "chosen_by": why,
           "validation_samples": int(len(xv)), "validation_accuracy": cands[best],
           "max_drop": float(max_drop)}
    if 100 * (base - cands[best]) > max_drop:
        say("  openvino: {:.2f} pt over --max-drop {:g}: nncf.quantize_with_accuracy_control"
            .format(100 * (base - cands[best]), max_drop))
        qa = nncf.quantize_with_accuracy_control(
            ov.convert_model(str(float_onnx)), calib, nncf.Dataset(batches),
            lambda compiled, data: validate(compiled, data), max_drop=max_drop / 100.0,
            drop_type=nncf.DropType.ABSOLUTE, preset=presets[preset],
            subset_size=len(calib_items(rep, feed)),
            fast_bias_correction=kw["fast_bias_correction"],
            advanced_quantization_parameters=kw.get("advanced_parameters"))
        rec["accuracy_control"] = True
        acc, floats = validate(core.compile_model(qa, "CPU", CPU_F32), batches), float_ops(qa)
        if not floats:               # accuracy control reverted nothing: one more int8 file
            keep, why = acc > cands[best], "accuracy control, no layer float"
        else:
            with tempfile.TemporaryDirectory() as tmp:
                both = {"p50_ms_all_int8": q, "p50_ms_partly_float": qa}
                for k, model in both.items():
                    ov.save_model(model, str(Path(tmp) / (k + ".xml")), compress_to_fp16=False)
                lat = interleaved_p50({k: ("openvino", Path(tmp) / (k + ".xml")) for k in both},
                                      xv, batch=feed)
            keep, why = keep_float(cands[best], acc, base, len(xv), _guard_drop(guard_drop),
                                   len(floats), (lat["p50_ms_all_int8"],
                                                 lat["p50_ms_partly_float"]))
            rec["float_candidate"] = dict(float_layers=floats, validation_accuracy=acc,
                                          kept=keep, why=why, **lat)
        say("  openvino: " + why)
        if keep:
            q = qa
            rec.update(validation_accuracy=acc, chosen_by=why)
        else:
            rec["chosen_by"] = "{}; {}".format(rec["chosen_by"], why)
    rec["float_layers"] = float_ops(q)
    xml = Path(xml)
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(q, str(xml), compress_to_fp16=False)
    return rec


def calib_items(rep, feed):
    """The calibration batches NNCF draws (``subset_size`` counts batches, not images)."""
    return range(0, len(rep), feed)


def float_ops(model):
    """Convolution / MatMul ops of an OpenVINO model whose weights are not quantized (neither a
    FakeQuantize nor an int8 constant on their weight input)."""
    out = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul") and \
                not _quantized(op.input_value(1).get_node()):
            out.append(op.get_friendly_name())
    return out


def _quantized(node, depth=0):
    kind = node.get_type_name()
    if kind == "FakeQuantize":
        return True
    if kind == "Constant":
        return node.get_element_type().get_type_name() in ("i8", "u8", "i4", "u4")
    if depth > 6 or node.get_input_size() == 0:
        return False
    return any(_quantized(node.input_value(i).get_node(), depth + 1)
               for i in range(node.get_input_size()))


__all__ = ["onnx_int8", "openvino_int8", "float_ops", "choose", "keep_float", "interleaved_p50",
           "standard_error", "x86_without_vnni", "ONNX_METHODS", "OPENVINO_PRESETS", "ORT_DEFAULT"]
