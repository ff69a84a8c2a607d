"""The artifact directory: model files plus ``manifest.json`` (docs/contract.md).

Every stage reads and writes one. Writing is atomic: a new artifact is staged in a
temporary sibling directory and renamed into place; files added to an existing artifact
(exports) are written to temp names and renamed, then the manifest is replaced last.
A later stage never guesses: it reads the manifest, and refuses an artifact whose files no
longer match the sha256 recorded ("artifact modified since it was written").

Opening validates the whole manifest once (:func:`validate_manifest`): its fields against
:data:`edgekit.schemas.MANIFEST_SCHEMA`, and every file name it lists must stay inside the
artifact (relative, no ``..``, no absolute path, no symlink out), so no later step reads,
runs, packs or overwrites anything outside the directory because a manifest said so.

Example::

    with staging("out/model", force=False) as tmp:
        model.save(tmp / "model.h5")
        write_manifest(tmp, manifest)     # fills files[*].bytes/sha256
    art = Artifact.open("out/model")
"""
import contextlib
import copy
import json
import os
import shutil
import tempfile
from pathlib import Path

from edgekit import __version__
from edgekit.data import dir_sha256, file_sha256
from edgekit.util import atomic_write_text, staged_dir
from edgekit.errors import EdgekitError

MANIFEST = "manifest.json"


def new_manifest(kind, method, params, source, input_spec, classes, metrics=None):
    """A manifest skeleton with the fields docs/contract.md requires."""
    return {
        "edgekit_version": __version__,
        "kind": kind,
        "method": {"name": method, "params": dict(params or {})},
        "source": dict(source or {}),
        "input": dict(input_spec or {}),
        "classes": list(classes or []),
        "metrics": dict(metrics or {}),
        "files": {},
    }


def describe_file(path, fmt, precision, **extra):
    """A ``files`` entry: format, precision, bytes, sha256 (+ any extra keys)."""
    path = Path(path)
    if path.is_dir():
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        digest = dir_sha256(path)
    else:
        size = path.stat().st_size
        digest = file_sha256(path)
    entry = {"format": fmt, "precision": precision, "bytes": int(size), "sha256": digest}
    entry.update(extra)
    return entry


@contextlib.contextmanager
def staging(out_dir, force=False):
    """Yield a temp dir next to ``out_dir``; on success it is renamed to ``out_dir``.

    ``out_dir`` existing is refused unless ``force`` (then it is replaced only at the end).
    On any exception the temp dir is removed and nothing is left behind.
    """
    with staged_dir(out_dir, force=force) as tmp:
        yield tmp
        if not (tmp / MANIFEST).is_file():
            raise RuntimeError("staged artifact has no manifest: write_manifest() was not called")


def write_manifest(directory, manifest):
    """Write ``manifest.json`` atomically into ``directory``."""
    atomic_write_text(Path(directory) / MANIFEST, json.dumps(manifest, indent=2) + "\n")


# a user's model file, told apart from an artifact dir (the hint `edgekit import` gives)
KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")


def model_file_kind(path):
    """``"onnx"``, ``"keras"`` (file or SavedModel dir) or None for ``path``."""
    p = Path(str(path))
    if p.is_dir():
        if (p / "manifest.json").is_file():
            return None
        return "keras" if (p / "saved_model.pb").is_file() else None
    if p.suffix.lower() == ".onnx":
        return "onnx"
    if p.suffix.lower() in KERAS_SUFFIXES:
        return "keras"
    return None


def import_hint(path):
    """The sentence every "not an artifact" error ends with when ``path`` is a model file;
    '' otherwise."""
    if model_file_kind(path) is None or not Path(str(path)).exists():
        return ""
    return (": it is a model file; make it an artifact once with `edgekit import {} -o ART "
            "--data SPEC` (Python: edgekit.import_model), then pass ART".format(path))


class Artifact:
    """An artifact directory and its manifest."""

    def __init__(self, path, manifest):
        self.path = Path(path)
        self.manifest = manifest

    @classmethod
    def open(cls, path, verify=True):
        """Open an artifact dir; refuse a missing/corrupt manifest or modified files."""
        path = Path(path)
        if not path.exists():
            raise EdgekitError("artifact {} does not exist".format(path))
        if not path.is_dir():
            raise EdgekitError("{} is not an artifact directory (expected a folder with {}){}"
                               .format(path, MANIFEST, import_hint(path)))
        mpath = path / MANIFEST
        if not mpath.is_file() and not (mpath.exists() and not mpath.is_dir()):
            raise EdgekitError("{} has no {}: not an edgekit artifact{}".format(
                path, MANIFEST, import_hint(path)))
        if mpath.is_symlink() and os.path.dirname(os.path.realpath(str(mpath))) != \
                os.path.realpath(str(path)):  # like file names: nothing is read from outside
            raise EdgekitError("{} is a symlink out of the artifact (to {}): refused, a manifest "
                               "must be the artifact's own file".format(
                                   mpath, os.path.realpath(str(mpath))))
        from edgekit.schemas import load_json
        from edgekit.util import dir_lock
        with dir_lock(path, shared=True):  # not between an export's renames and its manifest
            manifest = validate_manifest(load_json(mpath, "an edgekit manifest"), path)
            art = cls(path, manifest)
            if verify:
                art.verify()
        return art

    def verify(self):
        """Check every listed file exists and matches its recorded sha256."""
        for name, entry in self.manifest["files"].items():
            p = self.path / name
            if p.is_dir():
                for inner in p.rglob("*"):  # a SavedModel/IR dir: no symlink out of it either
                    inside(self.path, str(inner.relative_to(self.path)), "file")
            if not p.exists():
                raise EdgekitError("artifact modified since it was written: {} is missing".format(p))
            digest = dir_sha256(p) if p.is_dir() else file_sha256(p)
            if digest != entry.get("sha256"):
                raise EdgekitError("artifact modified since it was written: {} no longer "
                                   "matches its sha256 in the manifest".format(p))

    # -- lookups --------------------------------------------------------------
    @property
    def kind(self):
        return self.manifest["kind"]

    @property
    def method(self):
        return self.manifest["method"]["name"]

    @property
    def files(self):
        return self.manifest["files"]

    def file(self, name):
        """Path of a listed file (names were checked to stay inside the artifact on open)."""
        if name not in self.files:
            raise EdgekitError("{} lists no file {!r}".format(self.path / MANIFEST, name))
        return self.path / name

    def find(self, fmt, precision=None, **match):
        """Names of files with this format (and precision / extra keys), in manifest order."""
        out = []
        for name, e in self.files.items():
            if e.get("format") != fmt:
                continue
            if precision is not None and e.get("precision") != precision:
                continue
            if any(e.get(k) != v for k, v in match.items()):
                continue
            out.append(name)
        return out

    def keras_path(self):
        """Path of the artifact's Keras inference model (refuses if it has none: a k-NN
        slice's ``trunk.h5`` is part of its ONNX, not a model that classifies)."""
        names = [n for n in self.find("keras") if self.files[n].get("inference", True)]
        if not names:
            raise EdgekitError("{} holds no Keras model (it is a {} artifact)".format(
                self.path, self.kind))
        return self.path / names[0]

    def run_bytes(self, name):
        """Bytes on disk needed to run file ``name``: the file (a directory's total) plus the
        weights file it names (an OpenVINO IR's ``.bin``). Every table, manifest and report
        uses this, so an IR is never counted as its ``.xml`` alone."""
        entry = self.files[name]
        total = int(entry.get("bytes") or 0)
        weights = entry.get("weights")
        if entry.get("format") == "openvino" and weights in self.files:
            total += int(self.files[weights].get("bytes") or 0)
        return total

    def check_data_fits(self, ds):
        """Refuse a data set whose class count (or image shape) is not the one this artifact
        was made for: a 10-class model scored on 3-class data gives a number, not an answer."""
        classes = self.manifest.get("classes") or []
        if classes and len(classes) != ds.num_classes:
            raise EdgekitError("{} was made for {} classes but {} has {}: pass the --data it was "
                               "trained on (or one with the same classes)".format(
                                   self.path, len(classes), ds.spec, ds.num_classes))
        inp = self.manifest.get("input") or {}
        shape = inp.get("shape") or []
        if len(shape) == 4 and inp.get("layout") in ("NHWC", "NCHW"):
            want = shape[1:] if inp["layout"] == "NHWC" else [shape[2], shape[3], shape[1]]
            if any(w is not None and w != g for w, g in zip(want, ds.input_shape)):
                raise EdgekitError("{} expects {} images but {} has {}".format(
                    self.path, "x".join("?" if w is None else str(w) for w in want), ds.spec,
                    "x".join(str(g) for g in ds.input_shape)))

    # -- in-place additions (exports) ------------------------------------------
    def add_files(self, staged, entries, manifest_updates=None):
        """Move files from ``staged`` dir into the artifact and record them, atomically-ish.

        Under an exclusive lock on the artifact (:func:`edgekit.util.dir_lock`) the manifest
        is read again (another export may have added files since this one opened it), the
        new one is written into ``staged`` first -- a full disk stops here, before any file of
        the artifact changed -- then each file is renamed into place (same filesystem, no new
        space needed) and the manifest replaced last. ``entries`` maps file name -> files
        entry; ``manifest_updates`` is deep-merged.
        """
        from edgekit.schemas import load_json
        from edgekit.util import dir_lock
        staged = Path(staged)
        with dir_lock(self.path):
            current = validate_manifest(load_json(self.path / MANIFEST, "an edgekit manifest"),
                                        self.path)
            manifest = copy.deepcopy(current)
            manifest["files"].update(entries)
            _merge(manifest, manifest_updates or {})
            write_manifest(staged, manifest)
            for name in entries:
                src, dst = staged / name, self.path / name
                if dst.is_dir():
                    shutil.rmtree(dst)
                os.replace(src, dst)
            os.replace(staged / MANIFEST, self.path / MANIFEST)
        self.manifest = manifest

    def staging_dir(self):
        """A temp dir inside the artifact (same filesystem) for files about to be added."""
        from edgekit.util import clean_stale
        clean_stale(self.path, "export")
        return Path(tempfile.mkdtemp(prefix=".export.staging-{}-".format(os.getpid()),
                                     dir=str(self.path)))


def inside(root, name, what="file"):
    """``root / name``, refusing a name that is not a plain relative path inside ``root``.

    Refused: non-strings, empty names, absolute paths, ``~``, backslashes, NUL, any ``..``
    component, ``.``/the manifest itself, and names that resolve (through symlinks) outside.
    """
    root = Path(root)
    bad = None
    if not isinstance(name, str) or not name.strip():
        bad = "is empty or not a string"
    elif "\x00" in name or "\\" in name:
        bad = "contains a NUL or backslash"
    elif name.startswith(("/", "~")) or os.path.isabs(name):
        bad = "is an absolute or home-relative path"
    elif ".." in name.split("/"):
        bad = "contains '..'"
    elif os.path.normpath(name) in (".", MANIFEST):
        bad = "names the artifact itself or its manifest"
    if bad is None:
        real_root = os.path.realpath(str(root))
        real = os.path.realpath(os.path.join(real_root, name))
        if os.path.commonpath([real_root, real]) != real_root or real == real_root:
            bad = "resolves outside the artifact (symlink)"
    if bad is not None:
        raise EdgekitError("{}: {} name {!r} {}: names must stay inside the artifact".format(
            root / MANIFEST, what, name if isinstance(name, str) else type(name).__name__, bad))
    return root / name


def validate_manifest(manifest, root):
    """Check a manifest's fields (schema) and that every file name it holds stays inside
    ``root``; returns it, or raises EdgekitError naming the first problem."""
    from edgekit.schemas import MANIFEST_SCHEMA, check
    check(manifest, MANIFEST_SCHEMA, "{} is not an edgekit manifest".format(Path(root) / MANIFEST))
    check_input_shape((manifest.get("input") or {}).get("shape"),
                      "{}: input.shape".format(Path(root) / MANIFEST))
    for name, entry in manifest["files"].items():
        inside(root, name)
        if entry.get("format") == "openvino" and "weights" in entry:  # an IR's .bin
            inside(root, entry["weights"], "weights")
            if entry["weights"] not in manifest["files"]:
                raise EdgekitError("{}: files[{!r}].weights {!r} is not a file of the artifact"
                                   .format(Path(root) / MANIFEST, name, entry["weights"]))
        if "entry" in entry:
            inside(root, name + "/" + entry["entry"], "entry")
    return manifest


MAX_INPUT_ELEMENTS = 1 << 26  # one input image: 64 Mi values (256 MiB as float32)


def check_input_shape(shape, where):
    """Refuse an input shape whose one image (the dims after the batch) has more than
    :data:`MAX_INPUT_ELEMENTS` values, before anything allocates it: a manifest or model
    declaring 100000x100000 would otherwise end in a multi-TiB allocation error."""
    dims = [d for d in list(shape or [])[1:] if isinstance(d, int) and not isinstance(d, bool)]
    n = 1
    for d in dims:
        n *= max(int(d), 1)
    if n > MAX_INPUT_ELEMENTS:
        raise EdgekitError("{} {} has {:,} values per image (limit {:,}): not an image model "
                           "edgekit can feed".format(where, list(shape), n, MAX_INPUT_ELEMENTS))


def _merge(dst, src):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v
