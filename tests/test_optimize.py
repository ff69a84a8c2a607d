"""`edgekit optimize` on digits with a tiny space: real compress/export/quantize, real
onnxruntime/LiteRT/OpenVINO timing, a real Optuna SQLite study, a real Dask LocalCluster.

Every run uses the `tiny` CNN and ``--methods none`` (the target's finishes: fp32/fp16 exports
and int8 quantization, no training) so the whole file stays well under a minute and a half.
"""
import json
import sys
from pathlib import Path

import pytest
from sshd import sshd  # noqa: F401  (fixture: a real OpenSSH server on 127.0.0.1)

import optuna  # noqa: F401,E402  (make test installs it: a missing install fails, never skips)

TRIALS = 4
FAST = ["--methods", "none", "--formats", "onnx,tflite", "--iterations", "20", "--batch", "2",
        "--seed", "3"]
LIMIT = "12000"


def _values(out):
    """(number, state, params, val accuracy, bytes) of every trial of a study dir."""
    from edgekit.optimize.study import STUDY_FILE, STUDY_NAME
    study = optuna.load_study(study_name=STUDY_NAME,
                              storage="sqlite:///{}".format(Path(out) / STUDY_FILE))
    rows = []
    for t in study.get_trials():
        r = t.user_attrs.get("result", {})
        rows.append((t.number, t.state.name, t.params, r.get("val_accuracy"), r.get("bytes")))
    return rows


def _front(out):
    """The accuracy x bytes front (exact figures: the same in every run of a seed; the 3-D
    front with measured latency may differ by a row at the edge of the latency tolerance)."""
    f = json.loads((Path(out) / "front.json").read_text())
    rows = {r["id"]: r for r in f["rows"]}
    return [(i, rows[i]["label"], rows[i]["val_accuracy"], rows[i]["bytes"])
            for i in f["study_front"]], f


@pytest.fixture(scope="module")
def searched(tiny_artifact, tmp_path_factory):
    """One uninterrupted search: --max-bytes between the int8 and the fp32 files."""
    from edgekit.cli import main
    out = tmp_path_factory.mktemp("opt") / "run"
    try:
        main(["optimize", str(tiny_artifact.path), "--data", "digits", "-o", str(out),
              "--max-bytes", LIMIT, "--trials", str(TRIALS), *FAST])
    except SystemExit as exc:
        assert exc.code == 0
    return out


def test_search_finds_a_model_under_max_bytes_and_writes_best_and_front(searched):
    from edgekit.artifact import Artifact
    front, f = _front(searched)
    best = f["best"]
    assert best is not None and best["bytes"] <= int(LIMIT)
    # the chosen one is a normal artifact, its file's bytes on disk are what was compared
    art = Artifact.open(searched / "best")
    assert art.run_bytes(best["file"]) == best["bytes"]
    assert best["test_accuracy"] is not None and best["latency_ms"] > 0
    assert best["id"] in [r["id"] for r in f["front"]]
    for name in ("front.json", "front.png", "report.md", "report.html", "study.db"):
        assert (searched / name).is_file()
    assert (searched / "front.png").read_bytes()[:4] == b"\x89PNG"
    assert "Pareto front" in (searched / "report.md").read_text()
    # every finished candidate is an artifact with a manifest; nothing else is left behind
    cands = sorted(p.name for p in (searched / "candidates").iterdir())
    assert cands and all(Artifact.open(searched / "candidates" / c) for c in cands)
    assert not (searched / "work").exists()
    # test accuracy only where the brief says: the front and the chosen model
    assert all(r.get("test_accuracy") is None for r in f["rows"]
               if r["id"] not in {x["id"] for x in f["front"]} | {best["id"]})
    assert len(_values(searched)) == TRIALS


def test_interrupted_run_resumes_to_the_same_study_and_front(searched, tiny_artifact, tmp_path,
                                                            run_cli):
    """Half the trials, then a trial left RUNNING as a kill would leave it, then the rest."""
    from edgekit.optimize.study import STUDY_FILE, STUDY_NAME, sampler_for
    out = tmp_path / "resumed"
    args = ["optimize", tiny_artifact.path, "--data", "digits", "-o", out, "--max-bytes", LIMIT,
            *FAST]
    code, _, err = run_cli(*args, "--trials", "2")
    assert code == 0, err
    # a killed process: the next batch's first trial was proposed, never finished
    study = optuna.load_study(study_name=STUDY_NAME,
                              storage="sqlite:///{}".format(out / STUDY_FILE))
    study.sampler = sampler_for(3, 2)
    from edgekit.optimize.space import Space
    from edgekit.models import load_model
    Space.for_model(load_model(tiny_artifact.path), "laptop-cpu", kinds=["none"],
                    formats=["onnx", "tflite"]).suggest(study.ask())
    assert _values(out)[-1][1] == "RUNNING"
    code, _, err = run_cli(*args, "--trials", str(TRIALS))
    assert code == 0, err
    assert _values(out) == _values(searched)
    assert _front(out)[0] == _front(searched)[0]
    # the same -o with other settings is refused, not mixed into the study
    code, _, err = run_cli(*args[:-2], "--max-drop", "2", "--trials", str(TRIALS))
    assert code == 1 and err.startswith("error:") and "other settings" in err


def test_dask_local_cluster_gives_the_local_results(searched, tiny_artifact, tmp_path, run_cli):
    import distributed   # installed by make test (the evolve extra); missing must fail
    out = tmp_path / "dask"
    # two workers in this process (threads): fine here, nothing is trained (--methods none);
    # a cluster that trains wants one single-threaded worker per process (README)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  protocol="tcp", host="127.0.0.1", dashboard_address=None) as c:
        port = c.scheduler_address.rsplit(":", 1)[1]
        code, _, err = run_cli("optimize", tiny_artifact.path, "--data", "digits", "-o", out,
                               "--max-bytes", LIMIT, "--trials", str(TRIALS), *FAST,
                               "--executor", "dask://127.0.0.1:" + port)
    assert code == 0, err
    assert _values(out) == _values(searched)
    assert _front(out)[0] == _front(searched)[0]


def _sample(space, n, seed=0):
    from edgekit.optimize.study import sampler_for
    study = optuna.create_study(directions=["maximize", "minimize"])
    out = []
    for i in range(n):
        study.sampler = sampler_for(seed, i)
        t = study.ask()
        c = space.suggest(t)
        out.append(c)
        study.tell(t, [float(i % 7) / 7, float(1000 + 97 * (i % 11))])
    return out


def test_ncs2_never_proposes_int8_and_the_nano_keeps_onnx(tiny_artifact):
    from edgekit.models import load_model
    from edgekit.optimize.space import Space, finishes, has_int8
    net = load_model(tiny_artifact.path)
    laptop = _sample(Space.for_model(net, "laptop-cpu"), 40)
    assert any(has_int8(c) for c in laptop)          # the check can fail: laptop does int8
    ncs2 = Space.for_model(net, "ncs2")
    cands = _sample(ncs2, 40)
    assert not any(has_int8(c) for c in cands)
    assert {c["finish"]["kind"] for c in cands} >= {"export", "knn"}
    assert all(f["precision"] == "fp16" for f in finishes("ncs2"))
    nano = finishes("jetson-nano")
    assert {f["format"] for f in nano} == {"onnx"} and not any(
        f["precision"] == "int8" for f in nano)


def test_nothing_fits_names_the_closest_candidate_and_writes_no_best(tiny_artifact, tmp_path,
                                                                    run_cli):
    out = tmp_path / "tight"
    code, _, err = run_cli("optimize", tiny_artifact.path, "--data", "digits", "-o", out,
                           "--max-bytes", "100", "--trials", "3", *FAST)
    assert code == 1
    errors = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and err.rstrip().splitlines()[-1] == errors[0]
    assert "closest is candidate" in errors[0] and "--max-bytes 100" in errors[0]
    assert "Traceback" not in err and not (out / "best").exists()
    # measured, not guessed: a latency nobody can reach, the closest one is named with it
    out = tmp_path / "fast"
    code, _, err = run_cli("optimize", tiny_artifact.path, "--data", "digits", "-o", out,
                           "--max-latency-ms", "0.000001", "--trials", "1", *FAST)
    assert code == 1, err
    line = err.rstrip().splitlines()[-1]
    assert line.startswith("error:") and "ms > --max-latency-ms" in line
    assert not (out / "best").exists()


def test_budget_stops_before_a_batch_that_would_overrun_it(tiny_artifact, tmp_path, run_cli):
    out = tmp_path / "budget"
    code, _, err = run_cli("optimize", tiny_artifact.path, "--data", "digits", "-o", out,
                           "--budget", "2s", *FAST)
    assert code in (0, 1), err          # 0: something fits; 1: one error line naming why not
    assert len(_values(out)) == 2       # one batch (it took longer than the whole budget)


BAD = [
    (["--budget", "abc"], "--budget"),
    (["--budget", "5x"], "--budget"),
    (["--budget", "-5m"], "--budget"),
    (["--budget", "0"], "--budget"),
    (["--executor", "dask://nohost"], "executor"),
    (["--executor", "http://127.0.0.1:8786"], "executor"),
    (["--executor", "dask://h:port"], "executor"),
    (["--max-bytes", "-1"], "--max-bytes"),
    (["--max-params", "0"], "--max-params"),
    (["--max-latency-ms", "-1"], "--max-latency-ms"),
    (["--max-latency-ms", "nan"], "--max-latency-ms"),
    (["--max-drop", "-1"], "--max-drop"),
    (["--objective", "speed"], "--objective"),
    (["--methods", "prune,magic"], "--methods"),
    (["--trials", "0"], "--trials"),
    (["--batch", "0"], "--batch"),
    (["--target", "toaster"], "toaster"),
    (["--formats", "tflite,pdf"], "--formats"),
]


@pytest.mark.parametrize("extra,word", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input_is_one_error_line_and_nothing_written(extra, word, tmp_path, run_cli):
    out = tmp_path / "out"
    code, _, err = run_cli("optimize", str(tmp_path / "whatever"), "--data", "digits", "-o", out,
                           *extra)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and word in lines[0], err
    assert not out.exists()


def test_help_does_not_import_optuna_or_tensorflow():
    import subprocess
    code = ("import sys; from edgekit.cli import app; "
            "print(any(m in sys.modules for m in ('optuna', 'tensorflow')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=str(Path(__file__).resolve().parent.parent))
    assert r.stdout.strip() == "False", r.stderr


def test_space_students_are_built_and_counted_before_training(tiny_artifact):
    """Cheap facts: every student of the space builds (a scaled built-in too) and its params
    are exact; distill accepts a built-in student at a width."""
    from edgekit.models import build, count_params, load_model
    from edgekit.optimize.space import Space, architecture, student_params
    net = load_model(tiny_artifact.path)
    space = Space.for_model(net, "laptop-cpu", kinds=["distill"])
    for name in space.students:
        step = {"method": "distill", "params": student_params(name)}
        small = architecture(net, step, (8, 8, 1), 10)
        assert count_params(small) > 0
    half = architecture(net, {"method": "distill", "params": student_params("gap-cnn-w0.5")},
                        (8, 8, 1), 10)
    assert count_params(half) < count_params(build("gap-cnn", (8, 8, 1), 10)) / 2.5


def test_host_times_candidates_on_the_device_over_ssh(tiny_artifact, sshd, tmp_path):  # noqa: F811
    from edgekit.optimize import optimize
    kh = tmp_path / "known_hosts"
    kh.write_text(sshd.known_hosts_line())
    rdir = tmp_path / "device"
    res = optimize(tiny_artifact.path, "digits", tmp_path / "remote", target="laptop-cpu",
                   host=sshd.host, trials=1, methods="none", formats="onnx", seed=3,
                   bench_iterations=20, progress=False,
                   deploy_options={"identity": str(sshd.user_key), "known_hosts": str(kh),
                                   "remote_dir": str(rdir), "remote_python": sys.executable})
    best = res["best"]
    assert best["latency_host"] == sshd.host and best["latency_ms"] > 0
    assert best["latency"]["p50"] == best["latency_ms"] and best["latency"]["max"] > 0
    installed = [p for p in rdir.iterdir() if (p / ".edgekit-complete").is_file()]
    assert len(installed) == 1          # the candidate's bundle went to the device


@pytest.mark.parametrize("case, target, message", [
    ("unknown host key", "laptop-cpu", "host key"),
    ("not the target's board", "jetson-nano", "not a Jetson Nano"),
])
def test_host_is_checked_before_any_training(tiny_artifact, sshd, tmp_path, case,  # noqa: F811
                                             target, message):
    """``optimize --host`` connects and runs the device checks first: a device it cannot use
    is refused in one error before the first candidate trains, and nothing is written."""
    from edgekit.errors import EdgekitError
    from edgekit.optimize import optimize
    kh = tmp_path / "known_hosts"
    kh.write_text("" if case == "unknown host key" else sshd.known_hosts_line())
    with pytest.raises(EdgekitError) as err:
        optimize(tiny_artifact.path, "digits", tmp_path / "opt", target=target, host=sshd.host,
                 trials=1, methods="none", seed=3, progress=False,
                 deploy_options={"identity": str(sshd.user_key), "known_hosts": str(kh),
                                 "remote_dir": str(tmp_path / "device"),
                                 "remote_python": sys.executable})
    assert message in str(err.value), str(err.value)
    assert not (tmp_path / "opt").exists() and not (tmp_path / "device").exists()


def test_tflite_bytes_known_before_training_prune_a_student_that_cannot_fit(
        seed_digits_artifact):
    """A TFLite finish is converted once with random weights: the size does not depend on the
    values (two draws agree), and under a limit between two students' files the bigger one is
    pruned with "its file has N bytes" while its params x 1 B bound alone would have passed."""
    from edgekit.models import build, load_model
    from edgekit.optimize.space import Space, tflite_file_bytes
    from edgekit.optimize.study import cheap_violation
    shape = (8, 8, 1)
    micro = build("micro-cnn", shape, 10)
    a, b = (tflite_file_bytes(micro, "int8", shape, seed=s) for s in (0, 1))
    assert a == b and a > 8674                 # 8,674 weights + the flatbuffer's overhead
    space = Space.for_model(load_model(seed_digits_artifact.path), "laptop-cpu",
                            kinds=["distill"], formats=["tflite"])
    int8 = {"kind": "quantize", "format": "tflite", "precision": "int8"}

    def cand(student):
        return {"shrink": [{"method": "distill", "params": {"student": student}}],
                "finish": dict(int8), "label": student}
    small = space.cheap_facts(cand("micro-cnn"), max_bytes=a + 1)
    assert small["bytes_exact"] and small["bytes_low"] == a
    assert cheap_violation(small, {"max_bytes": a + 1}) is None
    big = space.cheap_facts(cand("gap-cnn"), max_bytes=a + 40000)
    assert big["bytes_exact"] and big["bytes_low"] > big["params"]
    limit = (big["params"] + big["bytes_low"]) // 2     # over the bound, under the file
    why = cheap_violation(space.cheap_facts(cand("gap-cnn"), max_bytes=limit),
                          {"max_bytes": limit})
    assert why.startswith("its file has {:,} bytes".format(big["bytes_low"]))


def test_chains_through_a_distilled_student_are_sampled_and_sized(tiny_artifact):
    """distill+distill samples an assistant then a student (a derived student is derived from
    the assistant, not the teacher); distill+knn cuts the student (auto), never in int8 on the
    NCS2."""
    from edgekit.compress.student import derive
    from edgekit.models import build, count_params, load_model
    from edgekit.optimize.space import Space, architecture, has_int8
    net = load_model(tiny_artifact.path)
    space = Space.for_model(net, "laptop-cpu", kinds=["distill+distill", "distill+knn"])
    cands = _sample(space, 30)
    ta = [c for c in cands if len(c["shrink"]) == 2 and c["shrink"][1]["method"] == "distill"]
    knn = [c for c in cands if c["finish"]["kind"] == "knn"]
    assert ta and knn and len(ta) + len(knn) == len(cands)
    assert all(c["shrink"][0]["method"] == "distill" for c in cands)
    assert all(c["shrink"][1] == {"method": "knn-slice", "params": c["shrink"][1]["params"]}
               and c["shrink"][1]["params"]["cut"] == "auto" for c in knn)
    assert all(c["label"].count("distill") == 2 for c in ta)
    shape = (8, 8, 1)
    chain = [{"method": "distill", "params": {"student": "gap-cnn"}},
             {"method": "distill", "params": {"width": 0.5}}]
    a = architecture(net, chain[0], shape, 10)
    b = architecture(a, chain[1], shape, 10)
    assert count_params(b) == count_params(derive(build("gap-cnn", shape, 10), 0.5, False, None))
    assert count_params(b) != count_params(architecture(net, chain[1], shape, 10))
    ncs2 = _sample(Space.for_model(net, "ncs2", kinds=["distill+knn"]), 12)
    assert ncs2 and not any(has_int8(c) for c in ncs2)


def _ctx(art, out, seed=5):
    from edgekit.artifact import Artifact
    return {"model": str(Path(str(art.path)).resolve()), "data": "digits", "out": str(out),
            "target": "laptop-cpu", "host": None, "max_drop": 100.0,
            "base_val": Artifact.open(art.path).manifest["metrics"]["val_accuracy"],
            "seed": seed, "max_epochs": 2, "max_bytes": None,
            "bench": {"iterations": 5, "warmup": 1}, "deploy": {}}


def test_a_shared_teacher_assistant_trains_once_and_knn_heads_a_student(seed_digits_artifact,
                                                                       tmp_path, digits):
    """Two teacher-assistant chains with the same assistant: the second copies the first's
    trained assistant from DIR/steps (same weights) and trains only its own student; a
    distill -> knn-slice chain writes a k-NN graph measured on onnxruntime."""
    import hashlib
    from edgekit.optimize.evaluate import STEPS_DIR, evaluate
    from edgekit.optimize.space import label
    out = tmp_path / "run"
    ctx = _ctx(seed_digits_artifact, out)
    int8 = {"kind": "quantize", "format": "tflite", "precision": "int8"}

    def cand(steps, finish):
        return {"shrink": steps, "finish": finish, "label": label(steps, finish)}
    assistant = {"method": "distill", "params": {"student": "micro-cnn", "lr": 1e-2}}
    one = cand([assistant, {"method": "distill", "params": {"student": "tiny"}}], int8)
    two = cand([assistant, {"method": "distill", "params": {"width": 0.5}}], int8)
    r1 = evaluate(one, 0, ctx, ds=digits)
    assert r1["state"] == "complete", r1
    keys = set(p.name for p in (out / STEPS_DIR).iterdir())
    r2 = evaluate(two, 1, ctx, ds=digits)
    assert r2["state"] == "complete", r2
    new = set(p.name for p in (out / STEPS_DIR).iterdir()) - keys
    # the assistant trains once at the full cap (2 epochs); each student climbs the rungs
    # (1, then 2 epochs): the second chain adds only its own student's two
    assert [r["epochs"] for r in r1["rungs"]] == [1, 2] == [r["epochs"] for r in r2["rungs"]]
    assert len(keys) == 3 and len(new) == 2
    from edgekit.artifact import Artifact
    for cid in ("000", "001"):
        m = Artifact.open(out / "candidates" / (cid + ".steps") / "1-distill").manifest
        assert m["method"]["params"]["epochs"] == 2
        assert "refit" not in m["method"]["params"]        # an assistant is not refit
        m = Artifact.open(out / "candidates" / (cid + ".steps") / "2-distill").manifest
        assert "refit" not in m["method"]["params"]        # nor a searched student
    # the chosen candidate's refit (optimize.refit): the student alone trains again, on every
    # training image for the epochs its selection chose; the assistant is copied
    from edgekit.optimize.refit import plan
    epochs, why = plan(out, one, 0, digits)
    assert why is None and epochs == Artifact.open(
        out / "candidates" / "000.steps" / "2-distill").manifest["method"]["params"]["best_epoch"]
    before = set(p.name for p in (out / STEPS_DIR).iterdir())
    rr = evaluate(one, 0, dict(ctx, refit_epochs=epochs), ds=digits)
    assert rr["state"] == "complete" and rr["artifact"] == "candidates/000-refit", rr
    assert [r["rung"] for r in rr["rungs"]] == [1]      # the final rung only
    assert len(set(p.name for p in (out / STEPS_DIR).iterdir()) - before) == 1
    m = Artifact.open(out / "candidates" / "000-refit.steps" / "2-distill").manifest
    assert m["method"]["params"]["refit"] == {"epochs": epochs, "images": len(digits.y_train)}
    assert m["method"]["params"]["seed"] == Artifact.open(
        out / "candidates" / "000.steps" / "2-distill").manifest["method"]["params"]["seed"]
    assert plan(out, {"shrink": [{"method": "prune", "params": {}}]}, 0, digits) == (
        None, "its last trained step is not a distillation")

    def model_sha(cid):
        h5 = out / "candidates" / (cid + ".steps") / "1-distill" / "model.h5"
        return hashlib.sha256(h5.read_bytes()).hexdigest()
    assert model_sha("000") == model_sha("001")
    assert r1["params"] != r2["params"]

    knn = cand([assistant, {"method": "knn-slice", "params": {"cut": "auto",
                                                               "int8_weights": True}}],
               {"kind": "knn"})
    r3 = evaluate(knn, 2, ctx, ds=digits)
    assert r3["state"] == "complete", r3
    assert r3["runtime"] == "onnxruntime" and r3["val_accuracy"] > 0.5
    a = Artifact.open(out / r3["artifact"])
    assert a.manifest["method"]["name"] == "knn-slice"
    assert (out / "candidates" / "002.steps" / "1-distill").is_dir()


def test_a_chain_whose_student_is_not_smaller_than_its_assistant_is_never_trained(
        seed_digits_artifact):
    from edgekit.models import build, count_params, load_model
    from edgekit.optimize.space import Space
    from edgekit.optimize.study import cheap_violation
    space = Space.for_model(load_model(seed_digits_artifact.path), "laptop-cpu",
                            kinds=["distill+distill"])
    fin = dict(space.finishes[0])
    micro = {"method": "distill", "params": {"student": "micro-cnn"}}
    n_micro = count_params(build("micro-cnn", space.data_shape, space.num_classes))
    for second, fits in (("gap-cnn", False), ("micro-cnn", False), ("tiny", True)):
        facts = space.cheap_facts({"shrink": [micro, {"method": "distill", "params": {
            "student": second}}], "finish": fin})
        why = cheap_violation(facts, {})
        if fits:
            assert why is None
        else:
            assert why.startswith("its student has {:,} params, not fewer than its teacher's "
                                  "{:,}".format(facts["params"], n_micro)), why


@pytest.mark.parametrize("max_bytes", [20000])
def test_a_new_study_starts_from_the_student_with_most_macs_that_fits(seed_digits_artifact,
                                                                       tmp_path, max_bytes):
    """Starting points come from cheap facts: the fitting student with the most MACs (every
    student with more does not fit), taught directly and through an assistant larger than
    it, and enqueued once -- the first trial asked is the first point, a resumed study
    enqueues nothing again."""
    from edgekit.models import count_macs, load_model
    from edgekit.optimize.space import Space, _distill, student_params
    from edgekit.optimize.study import cheap_violation, enqueue_starts, open_study
    space = Space.for_model(load_model(seed_digits_artifact.path), "laptop-cpu",
                            kinds=["distill", "distill+distill", "distill+knn"],
                            formats=["tflite"])
    limits = {"max_bytes": max_bytes}
    int8 = {"kind": "quantize", "format": "tflite", "precision": "int8"}

    def facts(steps):
        return space.cheap_facts({"shrink": steps, "finish": int8}, max_bytes)
    starts = space.starting_points(limits)
    first = starts[0]
    assert first["shrink"] == "distill" and first["finish"] == "tflite-int8"
    macs = {n: count_macs(space._net_of({"shrink": [_distill(n)]})) for n in space.students}
    fitting = [n for n in space.students if cheap_violation(facts([_distill(n)]), limits) is None]
    assert first["student"] in fitting and len(fitting) < len(space.students)
    assert all(macs[n] <= macs[first["student"]] for n in fitting)
    ta = [p for p in starts if p["shrink"] == "distill+distill"]
    for p in ta:
        chain = facts([_distill(p["assistant"]), _distill(p["student"])])
        assert cheap_violation(chain, limits) is None and p["student"] == first["student"]
        assert facts([_distill(p["assistant"])])["params"] > 2 * facts(
            [_distill(p["student"])])["params"]
        assert macs[p["assistant"]] <= 4 * macs[p["student"]]
    # then the student on the labels alone, a k-NN head on a labels-trained student right
    # after it (it reuses the trained one), the assistant last
    assert [p["shrink"] for p in starts] == ["distill", "distill", "distill+knn"] + [
        "distill+distill"] * len(ta)
    assert first["labels"] is False and starts[1] == dict(first, labels=True)
    from edgekit.optimize.space import LABELS_ONLY
    cand = space.suggest(optuna.trial.FixedTrial(starts[1]))
    assert cand["shrink"][0]["params"] == dict(student_params(first["student"]), **LABELS_ONLY)
    knn = space.suggest(optuna.trial.FixedTrial(starts[2]))
    assert knn["shrink"][0]["params"] == dict(student_params(starts[2]["student"]),
                                              **LABELS_ONLY)
    assert knn["shrink"][1]["method"] == "knn-slice"

    study = open_study(tmp_path / "s", {"x": 1})
    assert enqueue_starts(study, space, limits) == starts
    t = study.ask()
    assert t.suggest_categorical("shrink", space.kinds) == "distill"
    assert t.suggest_categorical("student", space.students) == first["student"]
    study.tell(t, state=optuna.trial.TrialState.PRUNED)
    again = open_study(tmp_path / "s", {"x": 1})
    assert enqueue_starts(again, space, limits) == []
    waiting = again.get_trials(states=[optuna.trial.TrialState.WAITING])
    assert len(waiting) == len(starts) - 1


def test_a_run_evaluates_its_starting_points_first_and_counts_only_asked_trials(
        seed_digits_artifact, tmp_path):
    """End to end: with three trials, a new study evaluates exactly its first three starting
    points (the student distilled, on the labels alone, then the k-NN head on that same
    labels-trained student, copied from OUT/steps) and reports three trials, not the enqueued
    ones still waiting."""
    from edgekit.optimize import optimize
    out = tmp_path / "o"
    res = optimize(seed_digits_artifact.path, "digits", out, target="laptop-cpu",
                   max_bytes=20000, trials=3, methods="distill,distill+distill,distill+knn",
                   formats="tflite", max_epochs=1, bench_iterations=5, progress=False, seed=1,
                   max_drop=100)   # a 1-epoch student on shifted digits is weak: keep it
    f = json.loads((out / "front.json").read_text())
    assert f["trials"] == 3 == res["trials"]
    from edgekit.optimize.study import STUDY_FILE, STUDY_NAME
    study = optuna.load_study(study_name=STUDY_NAME,
                              storage="sqlite:///{}".format(out / STUDY_FILE))
    starts = study.user_attrs["starts"]
    assert [p["shrink"] for p in starts[:3]] == ["distill", "distill", "distill+knn"]
    assert starts[1]["student"] == starts[2]["student"]
    rows = _values(out)
    assert [r[2] for r in rows[:3]] == [{k: v for k, v in p.items()} for p in starts[:3]]
    assert [r[1] for r in rows[:3]] == ["COMPLETE"] * 3
    assert [r[1] for r in rows[3:]] == ["WAITING"] * (len(starts) - 3)
    # one rung (1 epoch): two students (distilled, labels), each trained once, and the
    # chosen candidate's student refit on every training image (its own step)
    assert len(list((out / "steps").iterdir())) == 3
    best, refit = f["best"], f["refit"]
    assert refit["state"] == "complete" and refit["epochs"] == 1
    assert best["id"] == refit["of"] + "-refit" and best["refit_of"] == refit["of"]
    assert best["id"] in [r["id"] for r in f["rows"]] and best["test_accuracy"] is not None
    from edgekit.artifact import Artifact
    from edgekit.data import load_data
    steps = out / "candidates" / (best["id"] + ".steps")
    m = Artifact.open(steps / "1-distill").manifest if steps.is_dir() else \
        Artifact.open(out / "best").manifest
    assert m["method"]["params"]["refit"] == {"epochs": 1,
                                              "images": len(load_data("digits").y_train)}
    assert Artifact.open(out / "best").manifest["files"] == Artifact.open(
        out / best["artifact"]).manifest["files"]
    # --budget keeps back the longest final rung of a distilled student for the refit
    from edgekit.optimize.refit import reserve
    finals = [t.user_attrs["result"]["rungs"][-1]["seconds"] for t in study.get_trials()
              if t.state.name == "COMPLETE" and "same_as" not in t.user_attrs["result"]]
    assert reserve(study) == max(finals) > 0
    # the budget rule's prediction: the k-NN head (trial 002) trained nothing of its own; the
    # assistant chain waiting as trial 003 has its assistant to train
    from edgekit.models import load_model
    from edgekit.optimize.evaluate import _batch, steps_to_train
    from edgekit.optimize.space import Space
    from edgekit.optimize.study import _enqueued, _untrained_seconds
    ds = load_data("digits")
    ctx = {"model": str(Path(seed_digits_artifact.path).resolve()), "data": ds.spec,
           "out": str(out.resolve()), "seed": 1, "max_epochs": 1}
    cands = {t.number: t.user_attrs["candidate"] for t in study.get_trials()
             if t.state.name == "COMPLETE"}
    assert [steps_to_train(cands[k], ctx, len(ds.y_train), _batch(ds)) for k in (0, 1, 2)] == [
        0] * 3                                        # all in OUT/steps now
    space = Space.for_model(load_model(seed_digits_artifact.path), "laptop-cpu",
                            kinds=["distill", "distill+distill", "distill+knn"],
                            formats=["tflite"])
    nxt = _enqueued(study, space, 3, 4)
    assert nxt[0]["shrink"][0]["method"] == nxt[0]["shrink"][1]["method"] == "distill"
    assert steps_to_train(nxt[0], ctx, len(ds.y_train), _batch(ds)) == 2   # assistant, student
    assert _enqueued(study, space, 2, 3) is None          # asked already: not waiting
    knn_total = study.get_trials()[2].user_attrs["result"]["seconds"]
    assert 0 < _untrained_seconds(study, None) >= knn_total - 1e-6
    # no --budget time left for the refit: skipped, said why; the same -o resumed with time
    # does it then (a finished refit of the same choice would be reused, not redone)
    from edgekit.optimize.refit import ATTR, refit_chosen
    study.set_user_attr(ATTR, None)
    rec = refit_chosen(study, ctx, None, {"max_bytes": 20000}, "accuracy", ds, time_left=0.0)
    assert rec["state"] == "skipped" and "--budget has 0 s left" in rec["reason"]
    again = optimize(seed_digits_artifact.path, "digits", out, target="laptop-cpu",
                     max_bytes=20000, trials=3, methods="distill,distill+distill,distill+knn",
                     formats="tflite", max_epochs=1, bench_iterations=5, progress=False, seed=1,
                     max_drop=100)
    assert again["best"]["id"] == best["id"] and again["best"]["val_accuracy"] == best[
        "val_accuracy"]                            # the same refit, seeded
    by_id = {r["id"]: r["label"] for r in f["rows"]}
    assert by_id["002"] == by_id["001"][:-len(" -> tflite-int8")] + " -> knn-slice cut auto int8"
    assert "alpha=1" in by_id["002"] and "augment=shift" in by_id["002"]


def test_a_knn_head_that_cannot_fit_the_bytes_is_pruned_with_its_smallest_size(tiny_artifact,
                                                                               tmp_path,
                                                                               digits):
    """knn-slice's own search finds nothing under --max-bytes: the trial is pruned (a limit,
    with the smallest size it could reach as its bound for the sampler), not failed."""
    from edgekit.optimize.evaluate import evaluate
    from edgekit.optimize.study import constraints
    ctx = dict(_ctx(tiny_artifact, tmp_path / "run"), max_bytes=600)
    cand = {"shrink": [{"method": "knn-slice", "params": {"cut": "auto",
                                                          "int8_weights": True}}],
            "finish": {"kind": "knn"}, "label": "knn"}
    r = evaluate(cand, 0, ctx, ds=digits)
    assert r["state"] == "pruned" and r["reason"].startswith("no cut meets --max-bytes 600")
    assert r["bytes_low"] > 600 and "{:,}".format(r["bytes_low"]) in r["reason"]
    assert constraints(r, {"max_bytes": 600})["max_bytes"] > 0
    assert not (tmp_path / "run" / "candidates").exists()


def _distill(student, lr, alpha=0.1):
    return {"shrink": [{"method": "distill", "params": {"student": student, "lr": lr,
                                                         "alpha": alpha, "temperature": 4.0}}],
            "finish": {"format": "tflite", "precision": "int8"}}


@pytest.mark.parametrize("of, want", [
    # four KD trials at lr 1e-2 reached rung 0 (cut: the 2nd best, top ceil(4/3)), three
    # rung 1 and the cap (the best)
    (_distill("x", 1e-2), [0.985, 0.995, 0.996]),
    # the labels-alone recipe has two trials: no cut yet, however far ahead KD was
    (_distill("x", 1e-3, alpha=1.0), [None, None, None]),
    # another student, same recipe: the same cuts (students are what the rungs compare)
    (_distill("y", 1e-2), [0.985, 0.995, 0.996]),
    # KD at another learning rate: a recipe of its own
    (_distill("x", 3e-3), []),
    # nothing trains (an export): no rungs at all
    ({"shrink": [], "finish": {"format": "onnx", "precision": "fp32"}}, []),
])
def test_successive_halving_compares_rungs_within_a_training_recipe(of, want):
    from optuna.trial import TrialState, create_trial
    from edgekit.optimize.evaluate import recipe
    from edgekit.optimize.study import thresholds
    study = optuna.create_study(directions=["maximize", "minimize"])

    def add(cand, accs, state=TrialState.COMPLETE):
        rungs = [{"rung": i, "val_accuracy": a} for i, a in enumerate(accs)]
        study.add_trial(create_trial(
            state=state, values=[accs[-1], 1000] if state == TrialState.COMPLETE else None,
            user_attrs={"candidate": cand, "result": {"rungs": rungs}}))

    add(_distill("a", 1e-2), [0.98, 0.992, 0.993])
    add(_distill("b", 1e-2), [0.99, 0.991, 0.994])
    add(_distill("c", 1e-2), [0.97], state=TrialState.PRUNED)
    add(_distill("d", 1e-2), [0.985, 0.995, 0.996])
    add(_distill("a", 1e-3, alpha=1.0), [0.95, 0.97, 0.996])
    add(_distill("b", 1e-3, alpha=1.0), [0.96])
    assert (recipe(of) is None) == (not of["shrink"])
    assert thresholds(study, 3, recipe(of)) == want
