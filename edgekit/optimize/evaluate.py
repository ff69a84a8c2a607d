"""One candidate of ``edgekit optimize``: compress, make the target's file, measure it.

:func:`evaluate` runs in the driver (``--executor local``) or on a Dask worker: everything it
needs comes in ``ctx`` (plain data) and the candidate dict, so the result depends only on
them and the trial's seed -- not on where it ran.

1. **Training steps under successive halving.** The trained steps (prune, distill) train for
   the best validation accuracy their epoch cap allows (guard target: the teacher's own
   accuracy; early stop on no improvement, best epoch kept). They first get a small cap
   (rung 0: ``1/eta^2`` of the full cap, step-budgeted or ``max_epochs``). A candidate that
   already matches the teacher is always promoted and trains on to the full cap (the search
   wants the best student the cap gives: wide-gap-cnn stopped at 4 epochs with 99.00% once it
   had matched the 98.88% teacher); one that does not goes on to the next rung
   (``1/eta``, then the full cap) only if its validation accuracy is in the top ``1/eta`` of
   what earlier trials of the same training recipe (:func:`recipe`) reached at that rung
   (``thresholds``, computed by the driver from
   finished trials, so the decision does not depend on scheduling), else it is pruned.
   Rungs compare the trained model's Keras validation accuracy; everything is written into a
   scratch dir, and only the final rung goes on. In a chain only the last trained step
   climbs the rungs; the ones before it train at the full cap. A trained step is kept in
   ``DIR/steps`` under its chain prefix (seeded by it, :func:`step_seed`): a teacher
   assistant shared by several chains, or a student tried with several finishes, trains once.
2. **Untrained steps after the last trained one** (a k-NN head on a distilled student) run
   once, on the final rung's model.
3. **The target's file**: ``export`` (fp32/fp16, parity-checked) or ``quantize`` (int8,
   calibrated, under the guard proper: fail closed) in the format the candidate names; a
   k-NN slice is its ONNX graph.
4. **Measured**: the artifact's runnable file for the target goes through the one benchmark
   protocol (:func:`edgekit.bench.bench`) -- locally for a target this machine is, or on the
   device through ``deploy --bench`` with a host -- with the **validation** split as its
   data, so its accuracy is the runtime's own on validation images. Bytes are the file's
   bytes on disk (``Artifact.run_bytes``). Without the hardware and without a host, a device
   target's file is run on this CPU for its validation accuracy and latency stays unmeasured.
5. **Guard on the whole chain**: validation accuracy against the input model's; a drop over
   ``max_drop`` is infeasible and the candidate is removed (never written).

Example::

    res = evaluate(cand, 7, ctx)   # -> {"state": "complete", "val_accuracy", "bytes", ...}
"""
import functools
import json
import math
import shutil
import time
from pathlib import Path

from edgekit.errors import EdgekitError

ETA = 3                     # successive halving: keep the top 1/ETA at each rung
RUNG_FRACTIONS = (1.0 / ETA ** 2, 1.0 / ETA, 1.0)
TRAINED = ("prune", "distill")


REFIT_SUFFIX = "-refit"      # candidates/NNN-refit: the chosen NNN refit after the search


def candidate_id(number):
    return "{:03d}".format(int(number))


def rung_epochs(method, n_train, batch_size, max_epochs=None):
    """Epoch caps of the rungs for a trained ``method`` (increasing, deduplicated)."""
    from edgekit.compress.guard import DISTILL_STEPS, FINE_TUNE_STEPS, epoch_cap
    full = int(max_epochs) if max_epochs is not None else epoch_cap(
        n_train, batch_size, None, steps=DISTILL_STEPS if method == "distill" else FINE_TUNE_STEPS)
    caps = []
    for f in RUNG_FRACTIONS:
        c = max(1, int(math.ceil(full * f)))
        if not caps or c > caps[-1]:
            caps.append(c)
    return caps


@functools.lru_cache(maxsize=2)
def _load(spec):
    from edgekit.data import load_data
    return load_data(spec)


def evaluate(cand, number, ctx, thresholds=(), ds=None):
    """Run one candidate; returns a JSON-able result dict (``state``: complete | pruned |
    infeasible | failed, with ``reason``; complete: ``val_accuracy``, ``bytes``, ``params``,
    ``macs``, ``latency_ms`` or None, ``runtime``, ``file``, ``artifact``, ``rungs``).
    Its training stops at ``ctx["deadline"]`` (``--budget``, :mod:`edgekit.deadline`); a
    result whose training was cut there says so (``budget_cut``)."""
    from edgekit.deadline import until, was_cut
    with until(ctx.get("deadline")):
        res = _evaluate(cand, number, ctx, thresholds, ds)
        if was_cut():
            res["budget_cut"] = True
    return res


def _evaluate(cand, number, ctx, thresholds=(), ds=None):
    from edgekit._tf import set_seed, tf
    tf().config.experimental.enable_op_determinism()   # same seed -> same weights, anywhere
    ds = ds if ds is not None else _load(ctx["data"])
    out = Path(ctx["out"])
    refit = bool(ctx.get("refit_epochs"))
    cid = candidate_id(number) + (REFIT_SUFFIX if refit else "")
    final = out / "candidates" / cid
    scratch = out / "work" / cid
    seed = int(ctx["seed"]) + int(number)
    t0 = time.time()
    head, tail = split_chain(cand["shrink"])
    trained = [s for s in head if s["method"] in TRAINED]
    n_rungs = max([len(rung_epochs(s["method"], len(ds.y_train), _batch(ds), ctx.get("max_epochs")))
                   for s in trained] or [1])
    rungs = []
    try:
        for r in range(n_rungs - 1 if refit else 0, n_rungs):   # a refit: the final rung only
            last = r == n_rungs - 1
            shutil.rmtree(scratch, ignore_errors=True)
            set_seed(seed)
            try:
                tr = time.time()
                src, passed, val = _run_shrink(head, ctx, ds, scratch, r)
                if trained:
                    rungs.append({"rung": r, "epochs": _epochs_of(src), "val_accuracy": val,
                                  "reached_teacher": passed,
                                  "seconds": round(time.time() - tr, 2)})
                cut = thresholds[r] if r < len(thresholds) else None
                if not (passed or last) and cut is not None and val < cut:   # cut off
                    return _done({"state": "pruned", "rungs": rungs, "reason": (
                        "rung {}: validation accuracy {:.2%} below the top-1/{} cut {:.2%} of "
                        "earlier trials at this rung".format(r, val, ETA, cut))}, t0)
                if not last:        # on to the next rung: a student that already matches
                    continue        # the teacher goes on too (the best the cap gives)
                src = _run_untrained(tail, len(head), ctx, ds, scratch, src)
                art = _run_finish(cand, ctx, ds, scratch, src, seed)
                res = measure(art, ctx, ds)
            except EdgekitError as exc:
                from edgekit.compress.guard import GuardFailed
                from edgekit.errors import OverBudget
                if isinstance(exc, OverBudget):     # a limit, as cheap facts would say it
                    return _done({"state": "pruned", "reason": str(exc), "rungs": rungs,
                                  "bytes_low": exc.smallest}, t0)
                state = "infeasible" if isinstance(exc, GuardFailed) else "failed"
                return _done({"state": state, "reason": str(exc), "rungs": rungs}, t0)
            break
        from edgekit.compress.guard import Guard
        guard = Guard(ctx["base_val"], ctx["max_drop"])     # the one --max-drop rule
        drop = guard.drop_pts(res["val_accuracy"])
        res["drop_pts"] = round(drop, 3)
        if not guard.within(res["val_accuracy"]):
            return _done({"state": "infeasible", "rungs": rungs, "val_accuracy":
                          res["val_accuracy"], "bytes": res["bytes"], "drop_pts": round(drop, 3),
                          "reason": (
                              "lost {:.2f} pt of validation accuracy ({:.2%} -> {:.2%}) on the "
                              "target's runtime, over --max-drop {:g}: not kept".format(
                                  drop, ctx["base_val"], res["val_accuracy"], ctx["max_drop"]))},
                         t0)
        _note_in_manifest(art, cand, res, ctx)
        _publish(art, scratch, final)
        res.update(state="complete", rungs=rungs, artifact=str(final.relative_to(out)))
        return _done(res, t0)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _done(res, t0):
    res["seconds"] = round(time.time() - t0, 2)
    return res


def _batch(ds):
    from edgekit.compress.guard import default_batch_size
    return default_batch_size(len(ds.y_train))


def _epochs_of(art):
    from edgekit.artifact import Artifact
    return Artifact.open(art, verify=False).manifest["method"]["params"].get("epochs")


def split_chain(steps):
    """(the steps up to the last trained one, the untrained rest): only the first part is
    re-run at each rung; a knn-slice after a distilled student runs once, on the final one."""
    last = max([i for i, s in enumerate(steps) if s["method"] in TRAINED] or [-1])
    return list(steps[:last + 1]), list(steps[last + 1:])


# what sets how fast a trained step learns, so its rung accuracies compare only with the same
# recipe's: the labels alone at lr 1e-3 trail distillation at lr 1e-2 at 2 and 4 epochs of 12
# (98.13% / 98.82% vs 99.00% / 99.03% on MNIST) and beat it at the cap (99.22% vs 99.05%)
RECIPE_KEYS = ("lr", "alpha", "temperature", "augment")


def recipe(cand):
    """The training recipe of a candidate's last trained step (``None`` if nothing trains):
    successive halving compares a rung's validation accuracy only among trials of the same
    recipe -- a cosine schedule at another learning rate, or other targets, start slower or
    faster and say little about where the cap ends up."""
    head, _ = split_chain(cand.get("shrink") or [])
    if not head or head[-1]["method"] not in TRAINED:
        return None
    step = head[-1]
    params = step.get("params") or {}
    return json.dumps([step["method"]] + [params.get(k) for k in RECIPE_KEYS])


def step_seed(seed, prefix):
    """The seed a trained step uses: the study's seed and the chain up to it, not the trial
    number -- so the same step of two candidates (a teacher assistant shared by several
    students, or one student with several finishes) is the same model, trained once."""
    import zlib
    text = json.dumps(prefix, sort_keys=True)
    return int(seed) + zlib.crc32(text.encode("utf-8")) % 1000003


def _run_shrink(steps, ctx, ds, scratch, rung):
    """The trained steps of a chain into ``scratch`` at this rung's epoch caps; returns
    (last artifact path or the input's, every trained step reached the teacher, the last
    trained step's Keras validation accuracy or None).

    Each trained step's result is kept in ``DIR/steps`` under a key of the chain up to it
    (with its epoch cap and seed, :func:`step_seed`): a later candidate starting with the same
    steps copies it instead of training again. The key holds everything the step depends on
    within one study (a study's model, data and settings are fixed: :func:`study.open_study`)."""
    from edgekit.compress import compress
    src, passed, val = ctx["model"], True, None
    plan = dict((i, (params, cached)) for i, params, cached in
                _step_plan(steps, ctx, len(ds.y_train), _batch(ds), rung))
    for i, step in enumerate(steps):
        if step["method"] not in TRAINED:
            src = _run_untrained([step], i, ctx, ds, scratch, src)
            continue
        dst = scratch / "{}-{}".format(i + 1, step["method"])
        params, cached = plan[i]
        if cached.is_dir():
            shutil.copytree(cached, dst)
        else:
            compress(src, step["method"], ds, dst, force=True, progress=False, **params)
            _keep(dst, cached)
        g = _guard_of(dst)
        passed = passed and bool(g.get("passed"))
        val = g.get("accuracy", val)
        src = str(dst)
    return src, passed, val


def _step_plan(steps, ctx, n_train, batch_size, rung):
    """``[(index, compress params, DIR/steps key dir)]`` of a chain's trained steps at ``rung``."""
    plan, prefix = [], []
    last = len(steps) - 1           # steps end at the chain's last trained one (split_chain)
    for i, step in enumerate(steps):
        if step["method"] not in TRAINED:
            continue
        params = dict(step["params"])
        caps = rung_epochs(step["method"], n_train, batch_size, ctx.get("max_epochs"))
        # trained for the best validation accuracy the cap allows (the guard's target is
        # the teacher itself); --max-drop is held end to end, on the target's file. Only a
        # chain's last trained step climbs the rungs: the ones before it (a pruned net or a
        # teacher assistant another chain may share) are trained once, at the full cap
        params.update(epochs=caps[min(rung, len(caps) - 1)] if i == last else caps[-1],
                      max_drop=0.0, allow_drop=True)
        if step["method"] == "distill":
            # the search wants the best student the cap gives, not the first to reach the
            # teacher: gap-cnn stopped at epoch 7 of 12 once it had (99.14% test)
            params["settle"] = False
        prefix.append({"method": step["method"], "params": dict(params)})
        params["seed"] = step_seed(ctx["seed"], prefix)
        if i == last and ctx.get("refit_epochs") and step["method"] == "distill":
            # the chosen candidate's refit (optimize.refit_chosen): the same student from the
            # same start (seed), on every training image for the epochs its selection chose
            params["refit_epochs"] = int(ctx["refit_epochs"])
            prefix[-1] = {"method": step["method"], "params": dict(
                prefix[-1]["params"], refit_epochs=params["refit_epochs"])}
        plan.append((i, params, _cache_dir(ctx, prefix)))
    return plan


def steps_to_train(cand, ctx, n_train, batch_size):
    """How many of this candidate's trained steps are not in ``DIR/steps`` yet at every rung
    (0: a k-NN head on a student an earlier trial trained; 2: a student and its new teacher
    assistant); None when it trains nothing (its cost is not a training's). What the budget
    rule predicts a next candidate's time from (:func:`study.run`)."""
    head, _ = split_chain(cand.get("shrink") or [])
    trained = [s for s in head if s["method"] in TRAINED]
    if not trained:
        return None
    n_rungs = max(len(rung_epochs(s["method"], n_train, batch_size, ctx.get("max_epochs")))
                  for s in trained)
    missing = set()
    for r in range(n_rungs):
        for i, _, cached in _step_plan(head, ctx, n_train, batch_size, r):
            if not cached.is_dir():
                missing.add(i)
    return len(missing)


STEPS_DIR = "steps"


def _cache_dir(ctx, prefix):
    import hashlib
    key = json.dumps({"model": str(ctx["model"]), "data": ctx["data"], "seed": int(ctx["seed"]),
                      "chain": prefix}, sort_keys=True)
    return Path(ctx["out"]) / STEPS_DIR / hashlib.sha256(key.encode("utf-8")).hexdigest()[:20]


def _keep(art, cached):
    """A copy of a trained step's artifact at ``cached`` (staged, renamed into place; when
    another worker got there first its copy -- the same model -- stays)."""
    import os

    from edgekit.util import stage_dir_next_to
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = stage_dir_next_to(cached)
    shutil.rmtree(tmp)
    shutil.copytree(art, tmp)
    try:
        os.rename(str(tmp), str(cached))
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_untrained(steps, start, ctx, ds, scratch, src):
    """The untrained steps after a chain's last trained one (a knn-slice), once."""
    from edgekit.compress import compress
    for i, step in enumerate(steps):
        dst = scratch / "{}-{}".format(start + i + 1, step["method"])
        params = dict(step["params"])
        if step["method"] == "knn-slice":
            params.setdefault("max_bytes", ctx.get("max_bytes") or "none")
            params.update(max_drop=ctx["max_drop"])
        compress(src, step["method"], ds, dst, force=True, progress=False, **params)
        src = str(dst)
    return src


def _run_finish(cand, ctx, ds, scratch, src, seed):
    """The target's file for the shrunk model (once, for the final rung): int8 under the
    guard proper (fail closed), or an fp32/fp16 export (parity-checked)."""
    from edgekit.artifact import Artifact
    from edgekit.compress import compress
    fin = cand["finish"]
    n = len(cand["shrink"])
    if fin["kind"] == "quantize":
        dst = scratch / "{}-quantize".format(n + 1)
        compress(src, "quantize", ds, dst, force=True, progress=False, precision=fin["precision"],
                 formats=[fin["format"]], max_drop=ctx["max_drop"], seed=seed,
                 target=ctx["target"])
        src = str(dst)
    elif fin["kind"] == "export":
        if not n:                   # the input itself, exported: a copy to add files to
            dst = scratch / "1-export"
            shutil.copytree(src, dst)
            src = str(dst)
        from edgekit.export import export
        export(src, [fin["format"]], target=ctx["target"], precision=fin["precision"],
               data=ctx["data"], parity_samples=min(1000, len(ds.y_val)))
    Artifact.open(src)              # every file checks out against its sha256
    return Path(src)


def _guard_of(art_dir):
    from edgekit.artifact import Artifact
    return Artifact.open(art_dir, verify=False).manifest["metrics"].get("guard") or {}


def _note_in_manifest(art, cand, res, ctx):
    """The candidate's own record of the end-to-end guard (its steps' guard records compare
    each step with its input; trained steps aimed at the teacher's accuracy)."""
    from edgekit.artifact import Artifact, write_manifest
    a = Artifact.open(art, verify=False)
    m = dict(a.manifest)
    m["optimize"] = {"candidate": cand["label"], "steps": cand["shrink"], "finish": cand["finish"],
                     "split": "validation", "base_accuracy": float(ctx["base_val"]),
                     "accuracy": res["val_accuracy"], "runtime": res.get("runtime"),
                     "drop_pts": res["drop_pts"], "max_drop_pts": float(ctx["max_drop"]),
                     "passed": True,
                     "note": "trained steps aim at the teacher's own validation accuracy (their "
                             "guard records use --max-drop 0 with allow_drop); --max-drop {:g} "
                             "is held on the whole chain, measured on the target's file".format(
                                 float(ctx["max_drop"]))}
    write_manifest(art, m)


def _publish(art, scratch, final):
    """The candidate's artifact (and a chain's earlier steps beside it) into place."""
    from edgekit.util import publish_dir, stage_dir_next_to
    tmp = stage_dir_next_to(final)
    shutil.rmtree(tmp)
    shutil.copytree(art, tmp)
    publish_dir(tmp, final)
    steps = [p for p in sorted(scratch.iterdir()) if p != art] if scratch.exists() else []
    if steps:
        sdir = final.parent / (final.name + ".steps")
        shutil.rmtree(sdir, ignore_errors=True)
        sdir.mkdir(parents=True)
        for p in steps:
            shutil.move(str(p), str(sdir / p.name))


# -- measurement -------------------------------------------------------------------------------
def validation_as_test(ds):
    """``ds`` with its validation split in the test slots: what a candidate is measured on
    (the test split is looked at once, for the chosen model and the front)."""
    return _with_test(ds, ds.x_val, ds.y_val)


def measure(art, ctx, ds):
    """Bytes, validation accuracy (the target's runtime) and latency of an artifact."""
    from edgekit.artifact import Artifact
    from edgekit.bench import bench
    from edgekit.errors import HardwareMissing, MissingDependency
    a = Artifact.open(art, verify=False)
    m = a.manifest["metrics"]
    vds = validation_as_test(ds)
    b = ctx.get("bench") or {}
    out = {"params": m.get("params"), "macs": m.get("macs"), "latency_ms": None,
           "latency": None}
    if m.get("params") is None and m.get("trunk_params") is not None:
        out["params"] = m.get("trunk_params")
    if ctx.get("host"):
        r = host_accuracy(art, ctx["target"], vds.x_test, vds.y_test, ds)
        out.update(r)
        out["latency"] = remote_latency(art, ctx)
        out["latency_host"] = ctx["host"]
    else:
        try:
            r = bench(str(art), ctx["target"], data=vds, iterations=int(b.get("iterations", 100)),
                      warmup=int(b.get("warmup", 10)))[0]
        except (HardwareMissing, MissingDependency):
            out.update(host_accuracy(art, ctx["target"], vds.x_test, vds.y_test, ds))
            out["latency_note"] = "not measured: {} is not this machine (give --host)".format(
                ctx["target"])
            return out
        out.update(val_accuracy=float(r["accuracy"]), bytes=int(r["bytes"]),
                   runtime=r["runtime"], file=r["file"], latency=r["latency_ms"],
                   cold_start_ms=r.get("cold_start_ms"))
    if out["latency"]:
        out["latency_ms"] = float(out["latency"]["p50"])
    return out


def host_accuracy(art, target, x, y, ds):
    """Accuracy of the artifact's file for ``target`` on ``(x, y)``, run on this machine's CPU
    by the first of the target's runtimes installed here: ``{"val_accuracy", "bytes",
    "runtime", "file"}``."""
    import numpy as np
    from edgekit.adapt import data_for
    from edgekit.artifact import Artifact
    from edgekit.bench import installed
    from edgekit.onnx_model import manifest_layout, to_model_layout
    from edgekit.runtime import runner_class
    from edgekit.runtime.bench import accuracy
    from edgekit.targets import as_target, candidate_files, file_path, pick_file
    a = Artifact.open(art, verify=False)
    t = as_target(target)
    for rt in t["runtimes"]:
        if rt == "tensorrt" or not installed(rt) or not candidate_files(a, t, rt):
            continue
        name, entry = pick_file(a, t, rt, any_file=True)
        opts = {"device": "CPU"} if rt == "openvino" else {}
        if rt == "litert":
            opts["allow_tf"] = True
        prepared = data_for(_with_test(ds, x, y), a.manifest.get("input"))
        xx = to_model_layout(prepared.x_test, manifest_layout(a.manifest))
        r = runner_class(rt)(file_path(a, name), **opts)
        try:
            r.load()
            acc = accuracy(r, xx.astype(np.float32), prepared.y_test, batch=256)
        finally:
            r.close()
        return {"val_accuracy": float(acc), "bytes": int(a.run_bytes(name)), "runtime": rt,
                "file": name}
    raise EdgekitError("none of {}'s runtimes ({}) is installed here to measure {}".format(
        t["name"], ", ".join(t["runtimes"]), art))


def _with_test(ds, x, y):
    from edgekit.data import Dataset
    v = Dataset(ds.spec, ds.x_train, ds.y_train, ds.x_val, ds.y_val, x, y, ds.classes, ds.norm)
    v.adapt = ds.adapt
    return v


def remote_latency(art, ctx):
    """Latency dict of the artifact timed on the device (``deploy --bench``, over SSH)."""
    from edgekit.deploy import deploy
    d = ctx.get("deploy") or {}
    b = ctx.get("bench") or {}
    s = deploy(str(art), ctx["target"], hosts=[ctx["host"]], bench=True, data=ctx["data"],
               test_samples=int(d.get("test_samples", 100)),
               iterations=int(b.get("iterations", 100)), warmup=int(b.get("warmup", 10)),
               log=lambda *a, **k: None,
               **{k: v for k, v in d.items() if k != "test_samples"})
    row = s["devices"][0]
    if not row.get("ok") or not s["results"]:
        raise EdgekitError("deploy --bench of {} on {} failed: {}".format(
            art, ctx["host"], row.get("error") or "no result"))
    res = s["results"][0]
    res = res[0] if isinstance(res, list) else res
    return res["latency_ms"]


def test_accuracy(art, target, ds):
    """Test-split accuracy of a candidate's runnable file (the chosen one and the front)."""
    return host_accuracy(art, target, ds.x_test, ds.y_test, ds)["val_accuracy"]
