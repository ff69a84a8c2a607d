"""``demo``: the whole pipeline on one data set, as a plain list of steps.

data -> train the reference CNN (``seed-mnist-cnn``, input size follows the data) ->
evaluate the saved artifact -> export ONNX -> check ONNX against Keras on the whole test
split (top-1 agreement, max abs difference) -> benchmark on the laptop CPU with
onnxruntime (:func:`edgekit.runtime.bench.measure`) -> Markdown + PNG report.

Everything is written into a temporary sibling of ``out`` and renamed into place at the end,
so a failed or interrupted demo leaves nothing behind. :data:`STEPS` is a plain list of
functions ``step(run)``; steps that need an optional method module are wrapped with
:func:`optional_step` so the demo still completes (the step is reported as skipped) when
that module or its dependency is missing.

Example::

    summary = demo("digits", "demo-out")
    summary["onnx"]["agreement"], summary["bench"]["latency_ms"]["p50"]
"""
import importlib
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError, MissingDependency

ARCH = "seed-mnist-cnn"
# data spec kind -> (epochs, batch size). Measured: digits 30x32 -> ~98% test accuracy;
# mnist 6x128 -> 99.13% (BENCHMARKS.md).
DEFAULTS = {"digits": (30, 32), "mnist": (6, 128)}
FALLBACK_DEFAULTS = (10, 64)
SEED = 0
WARMUP = 50
ITERATIONS = 500


class DemoRun(object):
    """State shared by the steps: options, the staging dir, and the summary being built."""

    def __init__(self, data, stage, out, epochs, batch_size, iterations, progress, model=None):
        self.data = data
        self.model = model                # an existing trained artifact to use instead of training
        self.stage = Path(stage)          # where files are written now
        self.out = Path(out)              # where they will be after the final rename
        self.epochs = epochs
        self.batch_size = batch_size
        self.iterations = iterations
        self.progress = progress          # a rich Progress or None
        self.ds = None
        self.art = None
        self.onnx_name = None
        self.keras_logits = None          # Keras test-split outputs (evaluate_model)
        self.summary = {"data": data, "arch": ARCH, "out": str(out), "steps": {},
                        "skipped": {}, "files": {}}

    def final(self, rel):
        """Path a staged file will have once the demo completes."""
        return str(self.out / rel)

    def final_of(self, path):
        """Final path of a staged path (absolute or relative)."""
        rel = Path(os.path.abspath(str(path))).relative_to(os.path.abspath(str(self.stage)))
        return self.final(str(rel))

    def task(self, description, total):
        if self.progress is None:
            return None
        return self.progress.add_task(description, total=total, info="")

    def advance(self, task, n=1, **fields):
        if self.progress is not None and task is not None:
            self.progress.update(task, advance=n, **fields)


# -- steps ------------------------------------------------------------------------------


def _target():
    """The demo's target: the default one (targets/*.toml ``default = true``)."""
    from edgekit.targets import default_target
    return default_target()

def load_dataset(run):
    """Load ``--data`` and record its splits and normalisation."""
    from edgekit.data import load_data
    run.ds = ds = load_data(run.data)
    run.summary["dataset"] = {
        "spec": ds.spec, "train": len(ds.x_train), "val": len(ds.x_val), "test": len(ds.x_test),
        "input_shape": list(ds.input_shape), "classes": ds.num_classes, "norm": ds.norm}


def train_model(run):
    """Train seed-mnist-cnn on the train split (validation on val) into ``model/``.

    With ``model=`` an existing trained artifact is copied in instead (verified first).
    """
    from edgekit.models import train
    ds = run.ds
    if run.model is not None:
        _use_trained(run)
        return
    steps = int(np.ceil(len(ds.x_train) / float(run.batch_size)))
    task = run.task("train {} ({} epochs)".format(ARCH, run.epochs), run.epochs * steps)
    callbacks = [_keras_progress(run, task)] if task is not None else []
    run.art = train(ARCH, ds, run.stage / "model", epochs=run.epochs, batch_size=run.batch_size,
                    seed=SEED, progress=False, callbacks=callbacks)
    m = run.art.manifest["metrics"]
    run.summary["model"] = {"artifact": run.final("model"), "params": m["params"],
                            "macs": m["macs"], "bytes": m["bytes"],
                            "epochs": run.epochs, "batch_size": run.batch_size}
    run.summary["files"]["artifact"] = run.final("model")


def evaluate_model(run):
    """Reload the saved artifact and measure its test accuracy (Keras); keeps the logits."""
    from edgekit.models import check_model_fits, load_model
    ds = run.ds
    model = load_model(run.art.path)
    check_model_fits(model, ds)
    run.keras_logits = _batched(run, "evaluate (Keras, test split)", ds.x_test,
                                lambda xb: model.predict(xb, batch_size=len(xb), verbose=0))
    acc = float(np.mean(np.argmax(run.keras_logits, axis=1) == ds.y_test))
    run.summary["keras"] = {"accuracy": acc, "val_accuracy": run.art.manifest["metrics"].get(
        "val_accuracy")}


def export_onnx(run):
    """Export ONNX into the artifact (edgekit.export when present, else tf2onnx directly)."""
    from edgekit.artifact import Artifact
    try:
        from edgekit.export import export
    except ImportError:
        export = None
    task = run.task("export ONNX", None)
    if export is not None:
        run.art = export(run.art.path, ["onnx"], target=_target(), data=run.data)
    else:
        _export_onnx_direct(run.art)
        run.art = Artifact.open(run.art.path)
    names = [n for n in run.art.find("onnx") if run.art.files[n].get("inference", True)]
    if not names:
        raise EdgekitError("ONNX export wrote no ONNX file into {}".format(run.art.path))
    run.onnx_name = names[0]
    entry = run.art.files[run.onnx_name]
    run.summary["files"]["onnx"] = run.final("model/" + run.onnx_name)
    run.summary["onnx"] = {"file": run.onnx_name, "bytes": entry["bytes"],
                           "opset": entry.get("opset")}
    if task is not None:
        run.progress.update(task, total=1, completed=1)


def check_onnx(run):
    """ONNX (onnxruntime) vs Keras on the whole test split, with the export's parity comparator
    (:func:`edgekit.export.parity.compare`): agreement, max abs diff, accuracy."""
    from edgekit.export.parity import compare
    from edgekit.runtime import open_runner
    ds = run.ds
    if run.keras_logits is None:
        evaluate_model(run)
    with open_runner("onnxruntime", run.art.file(run.onnx_name)) as r:
        got = _batched(run, "check ONNX vs Keras", ds.x_test,
                       lambda xb: np.asarray(list(r.infer(xb).values())[0]))
    fig = compare(run.keras_logits, got, ds.y_test, "fp32")
    run.summary["onnx"].update({"samples": fig["samples"], "agreement": fig["agreement"],
                                "max_abs_diff": fig["max_abs_diff"],
                                "accuracy": fig["accuracy_export"]})


def bench_cpu(run):
    """Benchmark the ONNX file on this CPU with onnxruntime (batch 1) through
    :func:`edgekit.bench.bench` (the one host-side bench), write results JSON."""
    from edgekit.bench import bench
    from edgekit.util import atomic_write_text
    task = run.task("bench {} / onnxruntime".format(_target()), run.iterations)

    def tick(done, total):
        if task is not None:
            run.progress.update(task, completed=min(done, total))
    res = bench(run.art.path, _target(), runtime="onnxruntime", batch=1, warmup=WARMUP,
                iterations=run.iterations, data=run.ds, progress=tick)[0]
    if task is not None:
        run.progress.update(task, completed=run.iterations)
    if res["file"] != run.onnx_name:
        raise EdgekitError("bench ran {} instead of the exported {}".format(res["file"],
                                                                           run.onnx_name))
    res.update({"artifact": run.final("model"), "data": run.data})
    rel = "results/{}-onnxruntime.json".format(_target())
    atomic_write_text(run.stage / rel, json.dumps(res, indent=2) + "\n")
    run.summary["bench"] = res
    run.summary["files"]["results"] = [run.final(rel)]


def write_report(run):
    """Markdown + PNG report (edgekit.report when present, else a Markdown table)."""
    from edgekit.util import atomic_write_text
    results = [run.stage / str(Path(p).relative_to(run.out)) for p in run.summary["files"]["results"]]
    try:
        from edgekit.report import report
    except ImportError:
        report = None
    rdir = run.stage / "report"
    if report is not None:
        written = report(results, rdir)
    else:
        rdir.mkdir(parents=True, exist_ok=True)
        written = [rdir / "report.md"]
        atomic_write_text(written[0], "# edgekit demo report\n\n" + summary_markdown(run.summary))
    run.summary["files"]["report"] = [run.final(str(Path(p).relative_to(run.stage)))
                                      for p in written]


def optional_step(*modules):
    """Wrap a step that needs optional modules: skipped (and reported) when one is missing.

    ``modules`` are import names checked before the step runs; a MissingDependency raised by
    the step itself also turns into a skip. Other errors still stop the demo.
    """
    def wrap(fn):
        def step(run):
            for mod in modules:
                if not _module_available(mod):
                    run.summary["skipped"][fn.__name__] = "module {} is not available".format(mod)
                    return
            try:
                fn(run)
            except MissingDependency as exc:
                run.summary["skipped"][fn.__name__] = str(exc)
        step.__name__ = fn.__name__
        step.__doc__ = fn.__doc__
        step.optional = True
        return step
    return wrap


# -- optional steps: every method and format, each reported in the table -----------------

KNN_REF_SAMPLES = 5000  # reference vectors the demo's k-NN slice starts from (seeded subsample)


@optional_step("tensorflow_model_optimization", "onnx")
def compress_model(run):
    """prune, prune --structured, quantize (int8) and distill the trained model.

    Each with its defaults (:data:`edgekit.compress.quick.QUICK`): fine-tuning budgeted to the
    data, under the accuracy guard; a refused method is a row saying why. The structured-pruned
    model is exported to ONNX so the latency step can time it.
    """
    from edgekit.compress.quick import QUICK, quick_compress
    from edgekit.export import export
    task = run.task("compress: " + ", ".join(QUICK), len(QUICK))
    rows = quick_compress(run.art.path, run.ds, run.stage / "compress",
                          on_done=lambda row: run.advance(task))
    for row in rows:
        if row["artifact"]:
            row["artifact"] = run.final_of(row["artifact"])
    if any(r["method"] == "prune-structured" and r["artifact"] for r in rows):
        export(run.stage / "compress" / "prune-structured", ["onnx"], target=_target(),
               data=run.data)
    run.summary["compress"] = rows
    run.summary["files"]["compress"] = run.final("compress")


@optional_step("sklearn", "onnx")
def knn_slice_model(run):
    """k-NN-slice the trained model: cut auto (validation sweep), int8 prototypes, ONE graph."""
    from edgekit.compress.knn.slice import knn_slice
    task = run.task("knn-slice (cut auto)", None)
    art = knn_slice(run.art.path, run.ds, run.stage / "knn-slice", cut="auto", int8=True,
                    int8_weights=True, ref_samples=KNN_REF_SAMPLES, progress=False)
    m, p = art.manifest["metrics"], art.manifest["method"]["params"]
    run.summary["knn"] = {
        "artifact": run.final("knn-slice"), "accuracy": m["accuracy"],
        "agreement": m["agreement"], "bytes": m["bytes"], "cut": p.get("cut"),
        "k": p.get("k"), "prototypes": m.get("prototypes"), "dims": m.get("dims"),
        "trunk_params": m.get("trunk_params")}
    run.summary["files"]["knn"] = run.final("knn-slice")
    if task is not None:
        run.progress.update(task, total=1, completed=1)


@optional_step("tensorflow", "openvino")
def export_formats(run):
    """Export TFLite and OpenVINO IR beside the ONNX file, each parity-checked."""
    from edgekit.export import export
    task = run.task("export TFLite + OpenVINO IR (parity-checked)", None)
    run.art = export(run.art.path, ["tflite", "openvino"], target=_target(), data=run.data)
    run.summary["formats"] = {
        name: {"format": e.get("format"), "bytes": run.art.run_bytes(name),  # IR: .xml + .bin
               "agreement": (e.get("parity") or {}).get("agreement")}
        for name, e in run.art.files.items() if e.get("inference", True)}
    if task is not None:
        run.progress.update(task, total=1, completed=1)


def bench_all(run):
    """Time every runtime on its file, and the compressed / k-NN models with onnxruntime.

    One results file per artifact (``results/<default target>-*.json``), all in the report.
    """
    from edgekit.bench import bench, installed
    from edgekit.util import atomic_write_text
    # the model's other runtimes (bench_cpu timed onnxruntime), on the files export_formats wrote
    jobs = [("model", run.art.path, rt) for rt, fmt in (("openvino", "openvino"),
                                                         ("litert", "tflite"))
            if run.art.find(fmt)]
    comp = {r["method"]: r for r in run.summary.get("compress", []) if r.get("artifact")}
    if "quantize" in comp:
        jobs.append(("quantize", run.stage / "compress" / "quantize", "onnxruntime"))
    if "prune-structured" in comp:
        jobs.append(("prune-structured", run.stage / "compress" / "prune-structured",
                     "onnxruntime"))
    if "knn" in run.summary:
        jobs.append(("knn-slice", run.stage / "knn-slice", "onnxruntime"))
    task = run.task("bench {}: every runtime and model".format(_target()), None)
    rows = []
    for name, path, runtime in jobs:
        if not installed(runtime):
            continue
        results = bench(path, _target(), runtime=runtime, warmup=WARMUP,
                        iterations=run.iterations, data=run.ds)
        for r in results:
            r["data"] = run.data
            r["artifact"] = run.final_of(r["artifact"])
            rel = "results/{}-{}-{}.json".format(_target(), name, r["runtime"])
            atomic_write_text(run.stage / rel, json.dumps(r, indent=2) + "\n")
            run.summary["files"]["results"].append(run.final(rel))
            rows.append({"model": name, "runtime": r["runtime"],
                         "precision": r.get("precision"), "bytes": r.get("bytes"),
                         "accuracy": r.get("accuracy"), "p50_ms": r["latency_ms"]["p50"]})
    run.summary["bench_all"] = rows
    if task is not None:
        run.progress.update(task, total=1, completed=1)


# The demo, in order.
STEPS = [load_dataset, train_model, evaluate_model, export_onnx, check_onnx, bench_cpu,
         compress_model, knn_slice_model, export_formats, bench_all, write_report]


# -- driver ------------------------------------------------------------------------------

def demo_defaults(data):
    """(epochs, batch size) the demo uses for a data spec."""
    return DEFAULTS.get(str(data).partition(":")[0], FALLBACK_DEFAULTS)


def demo(data="digits", out="demo-out", epochs=None, batch_size=None, iterations=ITERATIONS,
         force=False, progress=True, console=None, steps=None, model=None):
    """Run :data:`STEPS` on ``data``; write everything to ``out``; return the summary dict.

    ``model``: an artifact already trained on ``data`` to use instead of training one.
    """
    out = Path(out)
    if out.exists() and not force:
        raise EdgekitError("output {} already exists: choose another -o or pass --force".format(out))
    d_epochs, d_batch = demo_defaults(data)
    epochs = d_epochs if epochs is None else int(epochs)
    batch_size = d_batch if batch_size is None else int(batch_size)
    if epochs < 1:
        raise EdgekitError("--epochs must be >= 1")
    if batch_size < 1:
        raise EdgekitError("--batch-size must be >= 1")
    if iterations < 1:
        raise EdgekitError("--iterations must be >= 1")
    from edgekit.util import stage_dir_next_to
    stage = stage_dir_next_to(out)
    bar = _progress(console) if progress else None
    run = DemoRun(data, stage, out, epochs, batch_size, iterations, bar, model=model)
    t_all = time.perf_counter()
    try:
        if bar is not None:
            bar.start()
        try:
            for step in (STEPS if steps is None else steps):
                t0 = time.perf_counter()
                step(run)
                run.summary["steps"][step.__name__] = round(time.perf_counter() - t0, 2)
        finally:
            if bar is not None:
                bar.stop()
        run.summary["total_s"] = round(time.perf_counter() - t_all, 2)
        run.summary["files"]["summary"] = run.final("demo.json")
        from edgekit.util import atomic_write_text
        atomic_write_text(stage / "demo.json", json.dumps(run.summary, indent=2, default=str) + "\n")
        _move_into_place(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return run.summary


def summary_rows(s):
    """(what, value) rows of the demo table, from a summary dict."""
    rows = []
    d = s.get("dataset")
    if d:
        rows.append(("data", "{}: {:,} train / {:,} val / {:,} test, {} images, {} classes".format(
            d["spec"], d["train"], d["val"], d["test"], "x".join(str(v) for v in d["input_shape"]),
            d["classes"])))
    m = s.get("model")
    if m:
        rows.append(("model", "{}: {:,} params, {:,} MACs, {} (.h5), {} epochs x batch {}".format(
            s["arch"], m["params"], m.get("macs") or 0, _kib(m["bytes"]), m["epochs"], m["batch_size"])))
        if m.get("trained_from"):
            rows.append(("trained model used", m["trained_from"]))
    k = s.get("keras")
    if k:
        rows.append(("Keras test accuracy", _pct(k["accuracy"])))
    o = s.get("onnx")
    if o:
        rows.append(("ONNX file", "{} (opset {}, {})".format(o["file"], o.get("opset"), _kib(o["bytes"]))))
        if "agreement" in o:
            rows.append(("ONNX test accuracy (onnxruntime)", _pct(o["accuracy"])))
            rows.append(("ONNX vs Keras top-1 agreement", "{} of {:,} test images".format(
                _pct(o["agreement"]), o["samples"])))
            rows.append(("ONNX vs Keras max abs diff", "{:.2e}".format(o["max_abs_diff"])))
    b = s.get("bench")
    if b:
        L = b["latency_ms"]
        rows.append(("latency, {} / onnxruntime {}".format(_target(), b["runtime_version"]),
                     "p50 {:.3f} ms, mean {:.3f} ± {:.3f} ms, p99 {:.3f} ms (batch 1, {} runs)".format(
                         L["p50"], L["mean"], L["std"], L["p99"], b["iterations"])))
        rows.append(("throughput / cold start", "{:,.0f} img/s / {:.1f} ms".format(
            b["throughput_ips"], b["cold_start_ms"] or 0.0)))
        rows.append(("peak RSS", "{:.0f} MiB".format(b["peak_rss_mb"] or 0.0)))
    for r in s.get("compress", []):
        if r.get("refused"):
            rows.append(("compress: " + r["method"], "refused by the accuracy guard: " + r["refused"]))
            continue
        rows.append(("compress: " + r["method"], "accuracy {} -> {}, params {:,} -> {:,}, {} -> {}"
                     .format(_pct(r["before_accuracy"]), _pct(r["accuracy"]),
                             r["before_params"] or 0, r["params"] or 0, _kib(r["before_bytes"]),
                             _kib(r["bytes"]))))
    kn = s.get("knn")
    if kn:
        rows.append(("knn-slice (cut {}, k={}, {} prototypes x {} dims)".format(
            kn["cut"], kn["k"], kn["prototypes"], kn["dims"]),
            "accuracy {}, {} total (one ONNX graph), graph = Python head on {}".format(
                _pct(kn["accuracy"]), _kib(kn["bytes"]), _pct(kn["agreement"]))))
    for name, f in sorted(s.get("formats", {}).items()):
        if f.get("agreement") is not None:
            rows.append(("export " + name, "{} ({}), top-1 agreement with Keras {}".format(
                f["format"], _kib(f["bytes"]), _pct(f["agreement"]))))
    for r in s.get("bench_all", []):
        rows.append(("latency {} / {} ({})".format(r["model"], r["runtime"], r["precision"]),
                     "p50 {:.3f} ms, {}, accuracy {}".format(
                         r["p50_ms"], _kib(r["bytes"]), _pct(r["accuracy"]))))
    for name, why in s.get("skipped", {}).items():
        rows.append(("skipped: " + name, why))
    if "total_s" in s:
        rows.append(("time", "{:.0f} s ({})".format(s["total_s"], ", ".join(
            "{} {:.0f}s".format(k, v) for k, v in s["steps"].items()))))
    return rows


def summary_markdown(s):
    lines = ["| step | result |", "|---|---|"]
    lines += ["| {} | {} |".format(a, b.replace("|", "/")) for a, b in summary_rows(s)]
    return "\n".join(lines) + "\n"


# -- helpers -----------------------------------------------------------------------------

def _move_into_place(stage, out):
    from edgekit.util import publish_dir
    publish_dir(stage, out)


def _batched(run, description, x, fn, step=256):
    """Concatenated ``fn(batch)`` over ``x`` with a progress bar."""
    task = run.task(description, len(x))
    out = []
    for i in range(0, len(x), step):
        xb = x[i:i + step]
        out.append(fn(xb))
        run.advance(task, len(xb))
    return np.concatenate(out)


def _module_available(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _progress(console):
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                               TextColumn, TimeElapsedColumn, TimeRemainingColumn)
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                    TextColumn("{task.fields[info]}"),
                    console=console or Console(stderr=True), transient=False)


def _keras_progress(run, task):
    """A Keras callback advancing the rich task per batch and showing val accuracy per epoch."""
    from edgekit._tf import keras
    k = keras()
    run.progress.update(task, info="")

    class _Bar(k.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            run.advance(task)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            info = "epoch {}/{} val_acc {:.4f}".format(
                epoch + 1, run.epochs, logs.get("val_accuracy", float("nan")))
            run.progress.update(task, info=info)
            if not run.progress.console.is_terminal:  # logs/CI: one line per epoch
                run.progress.console.print("train: " + info)
    return _Bar()


def _use_trained(run):
    from edgekit.artifact import Artifact
    src = Artifact.open(run.model)
    src.keras_path()  # refuses an artifact without a Keras model
    shutil.copytree(str(src.path), str(run.stage / "model"))
    run.art = Artifact.open(run.stage / "model")
    m, p = run.art.manifest["metrics"], run.art.manifest["method"]["params"]
    run.epochs, run.batch_size = p.get("epochs"), p.get("batch_size")
    run.summary["arch"] = p.get("arch", "?")
    run.summary["model"] = {"artifact": run.final("model"), "params": m["params"],
                            "macs": m.get("macs"), "bytes": m["bytes"], "epochs": run.epochs,
                            "batch_size": run.batch_size, "trained_from": str(src.path)}
    run.summary["files"]["artifact"] = run.final("model")


def _export_onnx_direct(art):
    from edgekit.artifact import describe_file
    from edgekit.export.onnx import to_onnx
    from edgekit.models import load_model
    stage = art.staging_dir()
    try:
        info = to_onnx(load_model(art.path), stage / "model.onnx")
        entry = describe_file(stage / "model.onnx", "onnx", "fp32", opset=info["opset"],
                              input_name=info["input_name"], output_names=info["output_names"])
        art.add_files(stage, {"model.onnx": entry})
    finally:
        shutil.rmtree(str(stage), ignore_errors=True)


def _pct(x):
    return "-" if x is None else "{:.2f}%".format(100.0 * x)


def _kib(n):
    return "-" if n is None else "{:,.1f} KiB".format(n / 1024.0)
