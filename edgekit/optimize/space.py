"""The search space of ``edgekit optimize``: which candidates the methods and the target allow.

A candidate is a plain, JSON-able dict (it travels to Dask workers and into the study):

``{"shrink": [steps], "finish": {...}, "label": "..."}`` where

* ``shrink`` is a chain of compress steps, each ``{"method": ..., "params": {...}}``:
  ``prune`` (structured, to a fraction of the MACs: :data:`PRUNE_MACS`), ``distill`` (to a
  student derived from the teacher -- :data:`DERIVED_STUDENTS` -- or a built-in one, see
  :data:`BUILTIN_STUDENTS`), both (prune -> distill), ``knn-slice`` (cut, int8 trunk;
  dims / prototypes / k / int8 prototypes are searched by knn-slice's own exact-bytes grid
  under the byte budget), or nothing; and two chains through a distilled student:
  ``distill+distill`` (a teacher assistant: teacher -> assistant -> student, for students
  too small to learn from the teacher directly -- Mirzadeh et al. 2020) and ``distill+knn``
  (a k-NN head on a distilled student's trunk, cut ``auto``);
* ``finish`` is how the target runs it: ``{"kind": "export", "format", "precision"}`` (fp32 /
  fp16, parity-checked by ``export``), ``{"kind": "quantize", "format", "precision": "int8"}``
  (calibrated, under the accuracy guard) or ``{"kind": "knn"}`` (the k-NN graph is the file).

Finishes come from the target's descriptor (``targets/*.toml``): its ``formats``,
``format_precisions`` and ``precisions``; int8 only where ``precisions`` lists it (never on
the NCS2 or the Jetson Nano), knn-slice's int8 options likewise; ONNX opset is the target's
(``export`` reads ``default_opset``: 13 on the Nano).

:func:`suggest` turns an Optuna trial into a candidate (conditional parameters: a student is
only sampled when the chain distills). :func:`cheap_facts` gives the exact parameter count
and MACs of a candidate's architecture and a lower bound on its bytes before any training.

Example::

    space = Space.for_model(model, "laptop-cpu", kinds=("prune", "distill"))
    cand = space.suggest(trial)          # an optuna.Trial
    facts = space.cheap_facts(cand)      # {"params", "macs", "bytes_low"}
"""
from pathlib import Path

from edgekit.errors import EdgekitError

KINDS = ("none", "prune", "distill", "prune+distill", "distill+distill", "distill+knn",
         "knn")
KNN_KINDS = {"knn", "distill+knn"}          # the ones whose file is a k-NN graph
PRUNE_MACS = (0.5, 0.25, 0.1)
# derived students: (width, depthwise, resolution)
DERIVED_STUDENTS = {"width-0.5": (0.5, False, None), "width-0.25": (0.25, False, None),
                    "width-0.125": (0.125, False, None),
                    "width-0.5-depthwise": (0.5, True, None),
                    "width-0.25-depthwise": (0.25, True, None),
                    "resolution-0.75": (1.0, False, 0.75)}
# built-in students (edgekit.models.ARCHS), some scaled: name -> distill's keyword arguments.
# The batch-norm ones start from scratch at lr 1e-2: distilled from seed-mnist-cnn on MNIST,
# gap-cnn reached 99.03% validation in 7 epochs at 1e-2, its width-0.75 version 98.15% after 4
# and 98.80% after 12 at 1e-3; micro-cnn's selection accuracy read 98.63% / 97.47% after 3
# epochs at 1e-2 / 3e-3 (BENCHMARKS.md, optimize)
BUILTIN_STUDENTS = {"tiny": {"student": "tiny"},
                    "gap-cnn": {"student": "gap-cnn", "lr": 1e-2},
                    "gap-cnn-w0.75": {"student": "gap-cnn", "width": 0.75, "lr": 1e-2},
                    "gap-cnn-w0.5": {"student": "gap-cnn", "width": 0.5, "lr": 1e-2},
                    "micro-cnn": {"student": "micro-cnn", "lr": 1e-2},
                    "wide-gap-cnn": {"student": "wide-gap-cnn", "lr": 1e-2}}
# a student trained on the labels alone (distill's alpha = 1: the teacher's soft labels get no
# weight), at the learning rate of edgekit train, on randomly shifted images: a student can
# outgrow a weak teacher. On MNIST from the 99.10% seed CNN (12 epochs, BENCHMARKS.md,
# optimize): wide-gap-cnn distilled 99.05% validation / 99.19% test, on the labels 99.20 /
# 99.26%, on the labels with shifts 99.30 / 99.29% (Keras); gap-cnn 99.20% test distilled,
# 99.25% on the labels. Not a rule: micro-cnn (9k params) reached 98.88% validation distilled
# and 98.48% on the shifted labels -- the search tries both
LABELS_ONLY = {"alpha": 1.0, "lr": 1e-3, "augment": "shift"}
# the chosen candidate's distilled student trains again, after the search, on the whole
# training split for the epochs its held-out slice chose (``distill --refit-epochs``: ~10% more
# images; scikit-learn's refit of the best parameters): one more final-rung training in all
REFIT_CHOSEN = True
# bytes per weight, at least, in each precision: the lower bound on a file's size
WEIGHT_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}


def finishes(target):
    """The ways ``target`` can run a Keras candidate, as finish dicts, stable order."""
    from edgekit.compress.int8.common import FORMATS as QUANTIZE_FORMATS
    from edgekit.targets import as_target
    t = as_target(target)
    out = []
    for fmt in t["formats"]:
        for p in ("fp32", "fp16"):
            if p in t["precisions"] and p in t["format_precisions"].get(fmt, []):
                out.append({"kind": "export", "format": fmt, "precision": p})
    if "int8" in t["precisions"]:
        out += [{"kind": "quantize", "format": f, "precision": "int8"}
                for f in QUANTIZE_FORMATS if f in t["formats"]]
    return out


def finish_name(f):
    """``onnx-fp32``, ``tflite-int8`` ... (the categorical value Optuna samples)."""
    return "knn" if f["kind"] == "knn" else "{}-{}".format(f["format"], f["precision"])


def int8_allowed(target):
    from edgekit.targets import as_target
    return "int8" in as_target(target)["precisions"]


class Space:
    """The choices for one model, data set and target (all plain lists)."""

    def __init__(self, target, kinds, finishes_, students, prune_macs, knn_cuts, knn_int8,
                 teacher=None, data_shape=None, num_classes=None):
        self.target = target
        self.kinds = list(kinds)
        self.finishes = list(finishes_)
        self.students = list(students)
        self.prune_macs = list(prune_macs)
        self.knn_cuts = list(knn_cuts)
        self.knn_int8 = list(knn_int8)
        self.teacher = teacher
        self.data_shape = data_shape
        self.num_classes = num_classes
        self._facts = {}
        self._nets = {}
        if not self.kinds or (not self.finishes and not set(self.kinds) <= KNN_KINDS):
            raise EdgekitError("the search space is empty for target {}: nothing to try".format(
                target))

    @classmethod
    def for_model(cls, model, target, kinds=None, data_shape=None, num_classes=None,
                  preprocess_unit=True, formats=None):
        """The space for a loaded Keras ``model`` on ``target``; ``kinds`` restricts the
        shrink moves (default: all of :data:`KINDS`), ``formats`` the target's file formats.
        Built-in students need edgekit's unit preprocessing (``preprocess_unit``).
        ``target``: a :class:`~edgekit.targets.Target` (or its name)."""
        from edgekit.compress.knn.cuts import candidate_cuts, flatten_nested
        from edgekit.targets import as_target
        t = as_target(target)
        target = t.name
        kinds = list(KINDS if kinds is None else kinds)
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise EdgekitError("unknown --methods {!r}; choose from: {}".format(
                ",".join(bad), ",".join(KINDS)))
        students = list(DERIVED_STUDENTS) + (list(BUILTIN_STUDENTS) if preprocess_unit else [])
        int8 = int8_allowed(t)
        cuts = []
        if "knn" in kinds:
            flat = flatten_nested(model)
            cuts = ["auto"] + [flat.layers[i].name for i in candidate_cuts(flat)]
            if len(cuts) == 1:
                kinds.remove("knn")
        fins = finishes(t)
        if formats is not None:
            allowed = t.formats
            bad = [f for f in formats if f not in allowed]
            if bad or not formats:
                raise EdgekitError("--formats {} not run by {} (it runs: {})".format(
                    ",".join(bad) or "(none)", target, ",".join(allowed)))
            fins = [f for f in fins if f["format"] in formats]
        return cls(target, kinds, fins, students, PRUNE_MACS, cuts,
                   [False, True] if int8 else [False], teacher=model,
                   data_shape=data_shape or tuple(model.input_shape[1:]),
                   num_classes=num_classes or int(model.output_shape[-1]))

    def describe(self):
        """The choices, JSON-able (recorded with the study; a resumed run must match)."""
        return {"target": self.target, "kinds": self.kinds,
                "finishes": [finish_name(f) for f in self.finishes], "students": self.students,
                "prune_macs": self.prune_macs, "knn_cuts": self.knn_cuts,
                "knn_int8": self.knn_int8, "labels_recipe": LABELS_ONLY,
                "refit_chosen": REFIT_CHOSEN}

    # -- sampling ------------------------------------------------------------------------
    def suggest(self, trial):
        """A candidate from an Optuna trial (conditional parameters)."""
        kind = trial.suggest_categorical("shrink", self.kinds)
        steps = []
        if kind in ("prune", "prune+distill"):
            macs = trial.suggest_categorical("prune_macs", self.prune_macs)
            steps.append({"method": "prune", "params": {"structured": True,
                                                        "target_macs": float(macs)}})
        if kind == "distill+distill":
            steps.append({"method": "distill", "params": student_params(
                trial.suggest_categorical("assistant", self.students))})
        if kind in ("distill", "prune+distill", "distill+distill", "distill+knn"):
            steps.append({"method": "distill",
                          "params": student_params(trial.suggest_categorical(
                              "student", self.students))})
        if kind in ("distill", "distill+knn") and trial.suggest_categorical("labels",
                                                                            [False, True]):
            steps[-1]["params"].update(LABELS_ONLY)
        if kind in ("knn", "distill+knn"):
            # a student's layers are not the teacher's: its cut is knn-slice's own choice
            cut = ("auto" if kind == "distill+knn"
                   else trial.suggest_categorical("knn_cut", self.knn_cuts))
            q = trial.suggest_categorical("knn_int8", self.knn_int8)
            params = {"cut": cut, "int8_weights": bool(q)}
            if not q:
                params["int8"] = False          # int8 prototypes only when int8 is allowed
            steps.append({"method": "knn-slice", "params": params})
            finish = {"kind": "knn"}
        else:
            names = [finish_name(f) for f in self.finishes]
            finish = self.finishes[names.index(trial.suggest_categorical("finish", names))]
        return {"shrink": steps, "finish": dict(finish), "label": label(steps, finish)}

    # -- where the search starts ---------------------------------------------------------
    def starting_points(self, limits):
        """Trials to evaluate first (Optuna ``enqueue_trial`` parameters), from cheap facts
        alone, before the sampler explores: the distilled student with the most MACs that
        fits the limits, in the finish with the fewest bytes per weight; the same student
        trained on the labels alone (:data:`LABELS_ONLY`); a k-NN head on that labels-trained
        student (``distill+knn``, the same trained net when it is the same student: the
        largest whose int8 weights fit); the student taught by a teacher assistant
        (``distill+distill``). On MNIST from the 99.10% seed CNN, k-NN heads on label-trained
        students beat the students' own softmax: gap-cnn 99.28% -> 99.42% test, wide-gap-cnn
        99.29% -> 99.31% (BENCHMARKS.md, optimize). MACs, not parameters, rank students: a
        dense layer's weights add little, convolution compute is what a small CNN's accuracy
        follows (on MNIST the `tiny` CNN, 9,098 params, reached 96.97%; `micro-cnn`, 8,978
        params and 15x its MACs, 98.9%). The assistant is one size up from the student: of the
        students with more than twice its params (and fewer than the teacher's) and at most 4x
        its MACs, the one with the most MACs -- as `gap-cnn` (5.5M MACs) is to `micro-cnn`
        (1.7M), a pair measured by hand on MNIST: 99.05% test through the assistant, 98.92%
        taught directly (BENCHMARKS.md, optimize). A resolution student is not one (its inputs
        are resized). Empty when no distillation is in the space."""
        from edgekit.optimize.study import cheap_violation
        wanted = [k for k in ("distill", "distill+distill", "distill+knn") if k in self.kinds]
        if not wanted or self.teacher is None:
            return []

        def facts(steps, finish):
            return self.cheap_facts({"shrink": steps, "finish": finish},
                                    limits.get("max_bytes"))

        def fits(steps, finish):
            return cheap_violation(facts(steps, finish), limits) is None
        from edgekit.models import count_macs, count_params
        sized = []
        for name in self.students:
            net = self._net_of({"shrink": [_distill(name)]})
            sized.append((int(count_macs(net)), int(count_params(net)), name))
        sized.sort(key=lambda x: (-x[0], -x[1]))
        out, ta, labels, knn = [], [], None, []
        fin = min(self.finishes, key=lambda f: WEIGHT_BYTES[f["precision"]], default=None)
        if fin is not None and ("distill" in wanted or "distill+distill" in wanted):
            student = next((sz for sz in sized if fits([_distill(sz[2])], fin)), None)
            if student is not None and "distill" in wanted:
                out.append({"shrink": "distill", "student": student[2], "labels": False,
                            "finish": finish_name(fin)})
                labels = {"shrink": "distill", "student": student[2], "labels": True,
                          "finish": finish_name(fin)}
            if student is not None and "distill+distill" in wanted:
                big = [sz for sz in sized if 2 * student[1] < sz[1] < self._teacher_params()
                       and sz[0] <= 4 * student[0]
                       and "resolution" not in student_params(sz[2])]
                chain = [_distill(big[0][2]), _distill(student[2])] if big else None
                if chain and fits(chain, fin):
                    ta.append({"shrink": "distill+distill", "assistant": big[0][2],
                               "student": student[2], "finish": finish_name(fin)})
        if "distill+knn" in wanted:
            # the whole student as the trunk must fit (knn-slice may cut it late)
            q = max(self.knn_int8)
            lim_b, lim_p = limits.get("max_bytes"), limits.get("max_params")
            for _, n, name in sized:
                small = ((lim_b is None or n * (1 if q else 4) <= lim_b)
                         and (lim_p is None or n <= lim_p) and n < self._teacher_params())
                if small and "resolution" not in student_params(name):
                    knn.append({"shrink": "distill+knn", "student": name, "labels": True,
                                "knn_int8": q})
                    break
        # the k-NN head is on the labels-alone student (the hand-tuned 99.28% k-NN result's
        # trunk was trained on the labels): right after it, reusing it (OUT/steps)
        return out + ([labels] if labels else []) + knn + ta

    def _teacher_params(self):
        from edgekit.models import count_params
        return int(count_params(self.teacher))

    # -- cheap, exact facts ----------------------------------------------------------------
    def cheap_facts(self, cand, max_bytes=None):
        """``{"params", "macs", "bytes_low"}`` of the candidate's final architecture, without
        training: params and MACs are exact (the pruned / student net is built, untrained);
        ``unfit`` says why the chain cannot run (a student not smaller than its teacher);
        ``bytes_low`` = params x the finish precision's bytes per weight, a lower bound on the
        file (graph, scales and any float-kept layers only add to it). For knn-slice: the
        trunk up to the cut (knn-slice checks its exact bytes itself). None when unknown.

        With ``max_bytes``, a TFLite finish whose bound is within the limit is converted once
        with random weights (:func:`tflite_file_bytes`): its size is the trained file's, so a
        student whose flatbuffer overhead breaks the limit (9.4k params -> 17 KB in int8) is
        never trained. ``bytes_low`` becomes that size, ``bytes_exact`` says so."""
        key = repr((cand["shrink"], cand["finish"]))
        if key not in self._facts:
            self._facts[key] = self._model_facts(cand)
        facts = self._facts[key]
        if max_bytes is not None and not facts.get("bytes_exact"):
            self._tflite_bytes(cand, facts, max_bytes)
        return facts

    def _model_facts(self, cand):
        from edgekit.models import count_macs, count_params
        facts = {"params": None, "macs": None, "bytes_low": None}
        if self.teacher is None:
            return facts
        nets = self._nets_of(cand)
        net = nets[-1]
        facts["params"], facts["macs"] = int(count_params(net)), int(count_macs(net))
        if cand["finish"]["kind"] == "knn":
            facts["bytes_low"] = facts["params"] * (
                1 if cand["shrink"][-1]["params"].get("int8_weights") else 4)
        else:
            facts["bytes_low"] = facts["params"] * WEIGHT_BYTES[cand["finish"]["precision"]]
        for step, before, after in zip(cand["shrink"], nets, nets[1:]):
            n_in, n_out = int(count_params(before)), int(count_params(after))
            if step["method"] == "distill" and n_out >= n_in:      # distill refuses it
                facts["unfit"] = ("its student has {:,} params, not fewer than its teacher's "
                                  "{:,} (known before training)".format(n_out, n_in))
                break
        return facts

    def _net_of(self, cand):
        """The candidate's final (untrained) architecture."""
        return self._nets_of(cand)[-1]

    def _nets_of(self, cand):
        """[input, after step 1, ...]: the chain's (untrained) architectures, built once."""
        key = repr(cand["shrink"])
        if key not in self._nets:
            nets = [self.teacher]
            for step in cand["shrink"]:
                nets.append(architecture(nets[-1], step, self.data_shape, self.num_classes))
            self._nets[key] = nets
        return self._nets[key]

    def _tflite_bytes(self, cand, facts, max_bytes):
        fin = cand["finish"]
        if (fin["kind"] == "knn" or fin.get("format") != "tflite" or facts["bytes_low"] is None
                or facts["bytes_low"] > max_bytes):
            return
        n = tflite_file_bytes(self._net_of(cand), fin["precision"], self.data_shape)
        facts["bytes_low"], facts["bytes_exact"] = max(facts["bytes_low"], n), True


def tflite_file_bytes(net, precision, data_shape, seed=0):
    """Bytes of ``net``'s TFLite file in ``precision``, converted with random weights.

    A flatbuffer's size is fixed by the tensors' shapes, types and quantization arrays, not by
    the values -- except that the converter stores identical constants once (an untrained
    net's zero biases and unit batch-norm scales), so every weight is drawn at random first.
    Measured on micro-cnn: 14,920 B random and trained alike (untrained: 14,616)."""
    import tempfile

    import numpy as np

    from edgekit._tf import keras
    from edgekit.export.tflite import to_tflite
    rng = np.random.default_rng(seed)
    clone = keras().models.clone_model(net)
    clone.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(w.dtype)
                       for w in clone.get_weights()])
    rep = rng.random((4,) + tuple(data_shape), dtype=np.float32)
    with tempfile.TemporaryDirectory() as d:
        return int(to_tflite(clone, Path(d) / "m.tflite", precision, representative=rep)["bytes"])


def _distill(name):
    return {"method": "distill", "params": student_params(name)}


def student_params(name):
    """distill's keyword arguments for a student name of the space."""
    if name in BUILTIN_STUDENTS:
        return dict(BUILTIN_STUDENTS[name])
    w, dw, r = DERIVED_STUDENTS[name]
    out = {"width": w}
    if dw:
        out["depthwise"] = True
    if r is not None:
        out["resolution"] = r
    return out


def architecture(net, step, data_shape, num_classes):
    """The (untrained) network a step produces from ``net``: its params/MACs are exact."""
    m, p = step["method"], step["params"]
    if m == "prune":
        from edgekit.compress.channels.prune import prune_channels
        return prune_channels(net, target_macs=p["target_macs"])[0]
    if m == "distill":
        from edgekit.compress.student import derive
        if "student" in p:
            from edgekit.models import build
            net = build(p["student"], data_shape, num_classes)
            if "width" not in p and not p.get("depthwise") and "resolution" not in p:
                return net
        return derive(net, p.get("width", 1.0), bool(p.get("depthwise")), p.get("resolution"))
    if m == "knn-slice":
        from edgekit._tf import keras
        from edgekit.compress.knn.cuts import candidate_cuts, flatten_nested, layer_output
        flat = flatten_nested(net)
        if p["cut"] == "auto":      # the smallest trunk auto could choose
            idx = candidate_cuts(flat)[0]
        else:
            idx = [l.name for l in flat.layers].index(p["cut"])
        return keras().Model(flat.inputs, layer_output(flat, idx))
    raise EdgekitError("unknown step {!r}".format(m))


def label(steps, finish):
    """``prune macs 0.25 -> distill width-0.5 -> tflite-int8`` (what tables show)."""
    parts = []
    for s in steps:
        p = s["params"]
        if s["method"] == "prune":
            parts.append("prune macs {:g}".format(p["target_macs"]))
        elif s["method"] == "distill":
            parts.append("distill " + ",".join(
                str(v) if k == "student" else k if isinstance(v, bool)
                else "{}={}".format(k, v) if isinstance(v, str) else "{}={:g}".format(k, v)
                for k, v in sorted(p.items(), key=lambda kv: kv[0] != "student")))
        else:
            parts.append("knn-slice cut {}{}".format(p["cut"], " int8" if p.get("int8_weights")
                                                     else ""))
    if finish["kind"] != "knn":
        parts.append(finish_name(finish))
    return " -> ".join(parts)


def has_int8(cand):
    """True when a candidate writes anything in int8 (what the NCS2 and the Nano refuse)."""
    if cand["finish"].get("precision") == "int8":
        return True
    return any(s["method"] == "knn-slice" and (s["params"].get("int8_weights")
                                               or s["params"].get("int8") is not False)
               for s in cand["shrink"])
