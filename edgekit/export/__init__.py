"""Export an artifact to ONNX / TFLite / OpenVINO IR, each checked for parity.

``export(artifact, formats)`` writes the files into the artifact itself (so ``bench`` and
``deploy`` find them) or, with ``out=``, into a new artifact directory. Target rules come from
``targets/*.toml`` (:mod:`edgekit.targets`): allowed formats and precisions, opset, forbidden
ops, static batch. Nothing is written unless every export passes parity.

File names let several exports coexist: ``model.opset17.onnx``, ``model.opset13.b1.onnx``,
``model.fp32.tflite``/``model.fp16.tflite``/``model.int8.tflite``,
``openvino/model.fp16.xml`` + ``openvino/model.fp16.bin`` (opset/batch suffixes for IR
made at a non-default opset or batch). Each files entry records format, precision, bytes,
sha256, opset, input/output names, target(s) and the parity figures.

Example::

    export("out/seed", ["onnx", "openvino"])    # for the default target (targets/*.toml)
"""
import copy
import os
import shutil
import time
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.runtime.registry import FORMAT_RUNTIME, FORMATS


MIN_OPSET = 9  # tf2onnx's oldest supported opset; onnxruntime runs 7+


def export(artifact_dir, formats=("onnx",), target=None, precision=None, out=None, force=False,
           data=None, parity_samples=1000, batch=None, dynamic_batch=False,
           calibration_samples=200, opset=None, check_ov2022=None):
    """Export ``artifact_dir`` to ``formats`` for ``target``; returns the (re)opened Artifact.

    ``precision``: fp32|fp16|int8 (default: the target's). ``batch``: a static batch size
    (default: dynamic, or the target's ``static_batch``); ``dynamic_batch`` forces dynamic.
    ``data``: parity/calibration data spec (default: the manifest's ``source.data``).
    ``check_ov2022``: run NCS2 exports in OpenVINO 2022.3 (default: when the target asks).
    A bare ``.onnx`` file (any framework) is imported into the new artifact ``out`` (required)
    and exported from there: ONNX and OpenVINO IR only, parity on ``data`` (required).
    """
    from edgekit.onnx_model import is_onnx_file
    if is_onnx_file(artifact_dir):
        return _export_onnx_file(artifact_dir, formats, target=target, precision=precision,
                                 out=out, force=force, data=data, parity_samples=parity_samples,
                                 batch=batch, dynamic_batch=dynamic_batch,
                                 calibration_samples=calibration_samples, opset=opset,
                                 check_ov2022=check_ov2022)
    from edgekit.artifact import Artifact
    from edgekit.data import load_data
    from edgekit.targets import check_format, check_precision, load_target

    formats = parse_formats(formats)
    from edgekit.targets import default_target
    t = load_target(target or default_target())
    tname = t["name"]
    precision = precision or t["default_precision"]
    check_precision(t, precision)
    for fmt in formats:
        check_format(t, fmt, precision)
    if int(parity_samples) < 1:
        raise EdgekitError("--parity-samples must be >= 1")
    if batch is not None and dynamic_batch:
        raise EdgekitError("give either --batch N or --dynamic-batch, not both")
    if batch is not None and int(batch) < 1:
        raise EdgekitError("--batch must be >= 1")
    if batch is None and not dynamic_batch:
        batch = t.get("static_batch")
    opset = int(opset or t["default_opset"])
    if opset < MIN_OPSET:
        raise EdgekitError("--opset {} is below {}, the oldest opset edgekit exports (tf2onnx and "
                           "onnxruntime need it): use {}..{} for {}".format(
                               opset, MIN_OPSET, MIN_OPSET, t["max_opset"], tname))
    if opset > t["max_opset"]:
        raise EdgekitError("opset {} is above {}'s max opset {}".format(opset, tname, t["max_opset"]))
    if out is not None and Path(out).exists() and not force:
        raise EdgekitError("output {} already exists: choose another -o or pass --force".format(out))
    if check_ov2022 is None:
        check_ov2022 = bool(t.get("check_ov2022"))

    art = Artifact.open(artifact_dir)  # refuses no manifest / modified files
    spec = data or art.manifest.get("source", {}).get("data")
    if spec is None and art.method == "import":
        raise EdgekitError("{} was imported without a data set: pass --data SPEC (parity is "
                           "checked on its test split)".format(art.path))
    from edgekit.adapt import data_for
    ds = data_for(load_data(spec or "digits"), art.manifest.get("input"))
    n = min(int(parity_samples), len(ds.x_test))
    x, y = ds.x_test[:n].astype(np.float32), ds.y_test[:n]
    from edgekit.onnx_model import check_artifact_data, manifest_layout, to_model_layout
    check_artifact_data(art, ds)
    art.check_data_fits(ds)
    x = to_model_layout(x, manifest_layout(art.manifest))
    model, ref, src_onnx = _reference(art, x)
    if src_onnx is not None and art.files[src_onnx].get("precision") == "int8" \
            and precision != "int8":
        raise EdgekitError("{} holds only an int8 model ({}): its float weights are gone, so it "
                           "cannot be exported as {} for {}; export the float model it was "
                           "quantized from".format(art.path, src_onnx, precision, tname))

    job = _Job(art, t, precision, opset, batch, model, ref, src_onnx, x, y)
    stage = art.staging_dir() if out is None else _scratch_next_to(out)
    try:
        job.stage = stage
        if "onnx" in formats or "openvino" in formats:
            job.make_onnx(record="onnx" in formats)
        if "openvino" in formats:
            job.make_openvino()
        if "tflite" in formats:
            job.make_tflite(ds, calibration_samples)
        job.run_parity()
        if check_ov2022:
            job.check_ov2022()
        elif t.get("check_ov2022"):
            job.notes.append("OpenVINO 2022.3 check skipped")
        return job.write(out, force, spec)
    except EdgekitError as exc:  # name the file, not the staging dir it was in (removed now)
        text = str(exc).replace(str(stage) + os.sep, "")
        if text == str(exc):
            raise
        raise type(exc)(text) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def export_plan(target=None):
    """[(precision, [formats])] covering every format x precision ``target``'s descriptor
    allows (``format_precisions``), default precision first."""
    from edgekit.targets import default_target, load_target
    t = load_target(target or default_target())
    by_prec = {}
    for fmt in t["formats"]:
        for prec in t["format_precisions"].get(fmt, []):
            by_prec.setdefault(prec, []).append(fmt)
    order = sorted(by_prec, key=lambda p: (p != t["default_precision"], p))
    return [(p, by_prec[p]) for p in order]


def export_all(artifact_dir, target=None, out=None, force=False, **options):
    """Every format x precision ``target`` allows (one :func:`export` per precision, each
    parity-checked); returns the Artifact. TFLite is skipped for ONNX-only artifacts (no
    ONNX->TFLite converter). What ``edgekit demo`` shows for the default target."""
    from edgekit.artifact import Artifact
    art = Artifact.open(artifact_dir)
    has_keras = any(art.files[n].get("inference", True) for n in art.find("keras"))
    src = artifact_dir
    for prec, fmts in export_plan(target):
        fmts = [f for f in fmts if has_keras or f != "tflite"]
        if not fmts:
            continue
        art = export(src, fmts, target=target, precision=prec, out=out, force=force, **options)
        if out is not None:  # the first export made the new dir; the rest go into it
            src, out, force = art.path, None, False
    return art


def _export_onnx_file(path, formats, out=None, force=False, data=None, **options):
    """Import the ONNX file at ``path`` into the artifact ``out`` and export it there, in one
    staged step: nothing is written unless every export passes parity."""
    from edgekit.artifact import Artifact, staging
    from edgekit.onnx_model import write_import
    if "tflite" in parse_formats(formats):
        raise EdgekitError("TFLite export needs the Keras model (there is no ONNX->TFLite "
                           "converter here): export {} --format onnx,openvino".format(path))
    if out is None:
        raise EdgekitError("{} is a bare ONNX file: give -o DIR for the artifact that will hold "
                           "it and its exports".format(path))
    if data is None:
        raise EdgekitError("{} carries no data set: pass --data SPEC (parity is checked on its "
                           "test split)".format(path))
    with staging(out, force=force) as tmp:
        write_import(tmp, path, data)
        export(tmp, formats, **options)
    return Artifact.open(out)


def parse_formats(formats):
    """``"onnx,tflite"`` or a list -> validated list of unique formats."""
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    formats = [str(f).strip().lower() for f in (formats or [])]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise EdgekitError("unknown export format {!r}; choose from: {}".format(
            ",".join(bad), ", ".join(FORMATS)))
    return list(dict.fromkeys(formats))


class _Job:
    """One export run: staged files, their entries and parity figures."""

    def __init__(self, art, t, precision, opset, batch, model, ref, src_onnx, x, y):
        self.art, self.t, self.precision, self.opset, self.batch = art, t, precision, opset, batch
        self.model, self.ref, self.src_onnx, self.x, self.y = model, ref, src_onnx, x, y
        self.entries = {}        # new file name -> files entry (file staged)
        self.updates = {}        # existing file name -> entry keys to merge (no new file)
        self.onnx_path = None    # the ONNX the IR is made from
        self.onnx_name = None
        self.onnx_entry = None
        self.notes = []

    # -- ONNX ---------------------------------------------------------------------------
    def make_onnx(self, record):
        from edgekit.artifact import describe_file
        from edgekit.targets import check_onnx_model
        t = self.t
        if self.model is None:  # ONNX-only artifact (k-NN slice): the ONNX is the source
            name = self.src_onnx
            self.onnx_path, self.onnx_name = self.art.file(name), name
            self.opset = _file_opset(self.onnx_path)  # the file's, not the one asked for
            # the opset limit is for an ONNX the target runs itself: IR alone (--format
            # openvino) is read by OpenVINO here (and checked in 2022.3 where the target asks);
            # forbidden ops still refuse
            problems = [p for p in check_onnx_model(self.onnx_path, t)
                        if record or not p.startswith("opset ")]
            if problems:
                raise EdgekitError("{} cannot run {}: {}".format(t["name"], name, "; ".join(problems)))
            if record:
                self.updates[name] = {"targets": _union(self.art.files[name], t["name"])}
            return
        from edgekit.export.onnx import onnx_name, to_onnx
        name = onnx_name(self.opset, self.batch)
        path = self.stage / name
        info = to_onnx(self.model, path, opset=self.opset, batch=self.batch)
        problems = check_onnx_model(path, t)
        if problems:
            raise EdgekitError("{} cannot run this ONNX: {}".format(t["name"], "; ".join(problems)))
        entry = describe_file(path, "onnx", "fp32", opset=info["opset"],
                              input_name=info["input_name"], output_names=info["output_names"],
                              batch=self.batch, inference=True)
        if self.precision != "fp32":  # weights stay fp32: the device runs them at this precision
            entry["target_precision"] = self.precision
        self.onnx_path, self.onnx_name, self.onnx_entry = path, name, entry
        if record:
            self._add(name, entry)

    # -- OpenVINO -------------------------------------------------------------------------
    def make_openvino(self):
        from edgekit.artifact import describe_file
        from edgekit.export.openvino import to_openvino
        prec = self.precision
        suffix = "" if self.opset == self.t["default_opset"] or self.model is None \
            else ".opset{}".format(self.opset)
        if self.batch is not None:
            suffix += ".b{}".format(self.batch)
        xml = "openvino/model.{}{}.xml".format(prec, suffix)
        binf = xml[:-4] + ".bin"
        to_openvino(self.onnx_path, self.stage / xml, fp16=(prec == "fp16"), batch=self.batch)
        info = _ov_io(self.stage / xml)
        entry = describe_file(self.stage / xml, "openvino", prec, weights=binf,
                              opset=self.onnx_entry["opset"] if self.onnx_entry else
                              self.art.files[self.onnx_name].get("opset"),
                              from_onnx=self.onnx_name, batch=self.batch, inference=True, **info)
        self._add(xml, entry)
        self._add(binf, describe_file(self.stage / binf, "openvino", prec, role="weights",
                                      of=xml, inference=False))

    # -- TFLite -------------------------------------------------------------------------
    def make_tflite(self, ds, calibration_samples):
        if self.model is None:
            raise EdgekitError("TFLite export needs the Keras model and {} has none (a k-NN "
                               "sliced artifact ships one ONNX graph, and there is no ONNX->TFLite "
                               "converter here): export onnx/openvino instead".format(self.art.path))
        from edgekit.artifact import describe_file
        from edgekit.export.tflite import to_tflite
        name = "model.{}.tflite".format(self.precision)
        rep = None
        if self.precision == "int8":
            from edgekit.calibration import calibration_images
            rep = calibration_images(ds, calibration_samples, self.model.input_shape[1:])
        to_tflite(self.model, self.stage / name, self.precision, representative=rep)
        extra = {"calibration_samples": int(len(rep))} if rep is not None else {}
        self._add(name, describe_file(self.stage / name, "tflite", self.precision,
                                      input_name="input", output_names=[], inference=True, **extra))

    # -- parity / NCS2 ------------------------------------------------------------------
    def run_parity(self):
        from edgekit.export.parity import check_file, raise_on_failures
        results = {}
        for name, e in self.entries.items():
            if not e.get("inference"):
                continue
            rt = FORMAT_RUNTIME[e["format"]]
            opts = {"allow_tf": True} if rt == "litert" else {}
            prec = e["precision"] if e["format"] != "onnx" else "fp32"
            results[name] = check_file(rt, self.stage / name, self.ref, self.x, self.y, prec, **opts)
        raise_on_failures(results)
        for name, fig in results.items():
            fig.pop("failures", None)
            self.entries[name]["parity"] = fig
            if self.entries[name]["format"] == "tflite" and not self.entries[name]["output_names"]:
                self.entries[name]["output_names"] = _tflite_outputs(self.stage / name)

    def check_ov2022(self):
        """Every file for the NCS2 must load and predict in OpenVINO 2022.3; what it cannot read
        falls back to ONNX opset 13 (written if needed), recorded in the manifest."""
        from edgekit.export.openvino import check_ov2022
        from edgekit.export.parity import compare
        m = min(len(self.x), 200)
        xs, ys = self.x[:m], self.y[:m]
        files = [n for n, e in self.entries.items() if e.get("inference")]
        files += [n for n in self.updates]
        fallback_needed = []
        for name in files:
            path = self.stage / name if name in self.entries else self.art.file(name)
            res = check_ov2022(path, xs)
            entry = self.entries.get(name) or self.updates[name]
            if not res["readable"]:
                entry["ov2022"] = {"readable": False, "version": res.get("version"),
                                   "error": res.get("error")}
                fallback_needed.append(name)
                continue
            cur = self.entries.get(name, {}).get("parity")
            fig = compare(self.ref[:m], res["outputs"], ys, "fp16")
            entry["ov2022"] = {"readable": True, "version": res.get("version"), "samples": m,
                               "agreement_vs_reference": fig["agreement"],
                               "max_abs_diff": fig["max_abs_diff"],
                               "accuracy": fig["accuracy_export"]}
            if cur is not None and entry.get("format") == "openvino":
                from edgekit.export.parity import run_file
                now = run_file("openvino", path, xs)
                agree = compare(now, res["outputs"], ys, "fp16")
                entry["ov2022"]["agreement_vs_current_openvino"] = agree["agreement"]
                entry["ov2022"]["max_abs_diff_vs_current_openvino"] = agree["max_abs_diff"]
                if agree["failures"]:
                    raise EdgekitError("OpenVINO 2022.3 and the current OpenVINO disagree on {}: "
                                       "{}".format(name, "; ".join(agree["failures"])))
            if fig["failures"]:
                raise EdgekitError("OpenVINO 2022.3 runs {} but parity fails: {}".format(
                    name, "; ".join(fig["failures"])))
        if not fallback_needed:
            self.ov2022_fallback = None
            return
        # the fallback: ONNX opset 13 for what 2022.3 cannot read
        if self.onnx_name is None or self.onnx_name in fallback_needed:
            raise EdgekitError("OpenVINO 2022.3 (the NCS2's last release) cannot read {}: {}".format(
                ", ".join(fallback_needed),
                (self.entries.get(fallback_needed[0]) or self.updates[fallback_needed[0]])
                ["ov2022"].get("error")))
        if self.onnx_name not in self.entries and self.onnx_name not in self.updates:
            if self.onnx_entry is None:  # ONNX-only artifact: its own ONNX is the fallback
                entry = self.updates[self.onnx_name] = {
                    "targets": _union(self.art.files[self.onnx_name], self.t["name"])}
            else:
                from edgekit.export.parity import check_file
                entry = self.onnx_entry
                fig = check_file("onnxruntime", self.onnx_path, self.ref, self.x, self.y, "fp32")
                if fig["failures"]:
                    raise EdgekitError("parity check failed, nothing written: {}: {}".format(
                        self.onnx_name, "; ".join(fig["failures"])))
                fig.pop("failures", None)
                entry["parity"] = fig
                self._add(self.onnx_name, entry)
            res = check_ov2022(self.onnx_path, xs)
            if not res["readable"]:
                raise EdgekitError("OpenVINO 2022.3 reads neither the IR nor {}: {}".format(
                    self.onnx_name, res.get("error")))
            f2 = compare(self.ref[:m], res["outputs"], ys, "fp16")
            entry["ov2022"] = {"readable": True, "version": res.get("version"), "samples": m,
                               "agreement_vs_reference": f2["agreement"],
                               "max_abs_diff": f2["max_abs_diff"]}
        for name in fallback_needed:
            (self.entries.get(name) or self.updates[name])["ov2022_fallback"] = self.onnx_name
        self.ov2022_fallback = {"files": fallback_needed, "use": self.onnx_name}

    # -- writing ---------------------------------------------------------------------------
    def write(self, out, force, spec):
        from edgekit.artifact import Artifact, staging, write_manifest
        tname = self.t["name"]
        for name, e in self.entries.items():
            e["target"] = tname
            e["targets"] = _union(self.art.files.get(name, {}), tname) \
                if self.art.files.get(name, {}).get("sha256") == e["sha256"] else [tname]
        record = {"target": tname, "precision": self.precision, "opset": self.opset,
                  "batch": self.batch, "data": spec,
                  "files": sorted(n for n, e in self.entries.items() if e.get("inference"))
                  + sorted(self.updates),
                  "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        checked = {n: e["ov2022"]["readable"] for n, e in list(self.entries.items())
                   + list(self.updates.items()) if "ov2022" in e}
        if checked:
            record["ov2022_readable"] = checked
            record["ov2022_fallback"] = getattr(self, "ov2022_fallback", None)
        if self.notes:
            record["notes"] = list(self.notes)
        key = "{}:{}".format(tname, self.precision)
        updates = {"exports": {key: record}, "files": copy.deepcopy(self.updates)}
        if out is None:
            if any("/" in n for n in self.entries):
                for n in self.entries:
                    (self.art.path / n).parent.mkdir(parents=True, exist_ok=True)
            self.art.add_files(self.stage, self.entries, updates)
            return self.art
        from edgekit.artifact import _merge
        with staging(out, force=force) as tmp:
            manifest = copy.deepcopy(self.art.manifest)
            manifest["kind"] = "export"
            manifest.setdefault("source", {})["artifact"] = str(self.art.path)
            for name in list(manifest["files"]):
                dst = tmp / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                _copy(self.art.file(name), dst)
            for name in self.entries:
                dst = tmp / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(self.stage / name), str(dst))
            manifest["files"].update(self.entries)
            _merge(manifest, updates)
            write_manifest(tmp, manifest)
        return Artifact.open(out)

    def _add(self, name, entry):
        self.entries[name] = entry


def _scratch_next_to(out):
    """A temp dir beside ``out`` (same filesystem, the source artifact stays untouched)."""
    from edgekit.util import stage_dir_next_to
    return stage_dir_next_to(Path(out).resolve(), kind="export")


def _union(entry, tname):
    have = list(entry.get("targets") or ([entry["target"]] if entry.get("target") else []))
    return have + ([tname] if tname not in have else [])


def _file_opset(path):
    """The default-domain opset an ONNX file was written with."""
    import onnx
    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _reference(art, x):
    """(keras model or None, reference first output on x, name of the source ONNX or None)."""
    keras_files = [n for n in art.find("keras") if art.files[n].get("inference", True)]
    if keras_files:
        from edgekit.models import load_model
        model = load_model(art.file(keras_files[0]))
        want = tuple(model.input_shape[1:])
        if want != tuple(x.shape[1:]):
            raise EdgekitError("the model expects input {} but the data has {}: pass the --data "
                               "it was trained on".format(want, tuple(x.shape[1:])))
        return model, np.asarray(model.predict(x, batch_size=256, verbose=0)), None
    onnx = [n for n in art.find("onnx") if art.files[n].get("inference", True)]
    if not onnx:
        raise EdgekitError("{} holds neither a Keras model nor an ONNX graph to export".format(art.path))
    from edgekit.export.parity import run_file
    return None, run_file("onnxruntime", art.file(onnx[0]), x), onnx[0]


def _ov_io(xml):
    try:
        import openvino as ov
        m = ov.Core().read_model(str(xml))
        names = []
        for i, o in enumerate(m.outputs):
            try:
                names.append(o.get_any_name())
            except RuntimeError:
                names.append("output_{}".format(i))
        return {"input_name": m.inputs[0].get_any_name(), "output_names": names}
    except Exception:  # names are informative only; a model without names still runs
        return {}


def _tflite_outputs(path):
    from edgekit.runtime import open_runner
    with open_runner("litert", path, allow_tf=True) as r:
        return list(r.output_names)


def _copy(src, dst):
    if Path(src).is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)


__all__ = ["export", "parse_formats", "FORMATS"]
