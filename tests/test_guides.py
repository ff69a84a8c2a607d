"""Every command in README.md and in docs/guides/*.md (and docs/concepts/*.md, when a page shows
one) RUNS: in order per page, in a temp directory, in-process through the CLI (`run_cli`), each
exiting 0 and printing the lines the page shows as its output. The conventions a page uses to
say what cannot run here are in docs/concepts/tested.md ("How the pages' commands are run"):

- a block with no marker runs; every `edgekit ...` line and `python3 -m edgekit.runtime ...`
  line in it must exit 0 (other lines, such as `pip install` or `make demo`, are not run here:
  tests/test_wheel.py and `make test` itself run those);
- ``<!-- needs: jetson -->`` / ``<!-- needs: ncs2 -->`` before a block: run up to the hardware
  boundary. `--host` goes to the real OpenSSH server on 127.0.0.1 (tests/sshd.py); `--setup`
  (pip installs on the device) is dropped. Each command exits 0 or stops with an `error:`
  line that names the missing hardware (no traceback); a later command that reads a file a
  stopped command would have written is parsed only;
- ``<!-- docs-test: refused: TEXT -->``: each command shows a refusal: exit 1 with TEXT;
- ``<!-- needs: WHAT -->`` for anything else (a dask cluster), or
  ``<!-- docs-test: parse: REASON -->``: parsed by the CLI's own parser (verb, options and
  their types), not run; ``<!-- docs-test: covered-by tests/FILE.py::TEST -->``: run by that
  test (checked to exist), parsed here;
- a ```console block's lines after `$ edgekit ...` and a ```text block right after a command
  block are the output of the command before them: each line must appear, numbers wildcarded;
- the files a page supposes its reader has are made by `GIVENS` (below) the first time a
  command names one that is not there.
"""
import ast
import inspect
import gzip
import re
import shlex
import shutil
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sshd import sshd  # noqa: F401  (fixture, started only by pages that deploy)
from test_readme import BOX, _shape

REPO = Path(__file__).resolve().parent.parent
MNIST_DIR = REPO.parent / "shared" / "datasets" / "mnist"
PAGES = (["README.md"] + sorted(str(p.relative_to(REPO)) for p in (REPO / "docs" / "guides").glob("*.md"))
         + sorted(str(p.relative_to(REPO)) for p in (REPO / "docs" / "concepts").glob("*.md")))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.S | re.M)
MARK = re.compile(r"^<!--\s*(needs|docs-test)\s*:\s*(.*?)\s*-->$")
# what an `error:` line must name when a command stops at a device's boundary
BOUNDARY = {"jetson": r"Jetson|nv_tegra_release|TensorRT|tensorrt|pycuda|L4T",
            "ncs2": r"MYRIAD|NCS2|Neural Compute Stick|03e7|OpenVINO 2022"}
RUNTIME = ("python3", "-m", "edgekit.runtime")


# -- reading a page ------------------------------------------------------------------------------

class Step:
    """One command of a page: argv (without `edgekit`, or the runtime's argv for
    `python3 -m edgekit.runtime`), the block's marker (kind, arg), the output lines shown."""

    def __init__(self, page, argv, runtime, mark, line):
        self.page, self.argv, self.runtime, self.mark, self.line = page, argv, runtime, mark, line
        self.shown = []

    def __repr__(self):
        return "{}: {}{}".format(self.page, "python3 -m edgekit.runtime " if self.runtime else
                                 "edgekit ", " ".join(self.argv))


def steps_of(page):
    """The page's commands in order, with markers and the output each is shown to print."""
    text = (REPO / page).read_text()
    steps, prev_end, prev_steps = [], 0, []
    for m in FENCE.finditer(text):
        lang, body = m.group(1), m.group(2)
        between = text[prev_end:m.start()]
        before = text[:m.start()].rstrip().splitlines()
        mark = MARK.match(before[-1].strip()) if before else None
        mark = (mark.group(1), mark.group(2)) if mark else None
        prev_end = m.end()
        if lang == "text":  # the output of the block right before it
            if prev_steps and not between.strip():
                prev_steps[-1].shown += [ln for ln in body.splitlines() if set(ln) - BOX]
            continue
        if lang in ("mermaid", "python"):
            prev_steps = []
            continue
        block = []
        joined = re.sub(r"\\\n\s*", " ", body)
        for line in joined.splitlines():
            bare = line.strip()
            if lang == "console":
                if not bare.startswith("$ "):
                    if block and set(line) - BOX:
                        block[-1].shown.append(line)
                    continue
                bare = bare[2:]
            if bare.startswith("edgekit "):
                block.append(Step(page, shlex.split(bare, comments=True)[1:], False, mark, bare))
            elif bare.startswith(" ".join(RUNTIME) + " "):
                block.append(Step(page, shlex.split(bare, comments=True)[3:], True, mark, bare))
        steps += block
        prev_steps = block
    return steps


def python_blocks(page):
    text = (REPO / page).read_text()
    return [body for lang, body in FENCE.findall(text) if lang == "python"]


# -- what a reader is supposed to have -----------------------------------------------------------

def _write_idx(path, arr):
    dims = arr.shape
    magic = struct.pack(">HBB", 0, 0x08, len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    with gzip.open(str(path), "wb") as fh:
        fh.write(magic + np.ascontiguousarray(arr, dtype=np.uint8).tobytes())


def _mnist_small(dst, n_train=600, n_test=200):
    """data/mnist: the first 600 training and 200 test images of the repo's real MNIST, as the
    four IDX files (a page's MNIST commands run on this slice; the figures they quote are from
    the full set: BENCHMARKS.md)."""
    from edgekit.data import read_idx
    dst.mkdir(parents=True)
    for name, n in (("train-images-idx3-ubyte", n_train), ("train-labels-idx1-ubyte", n_train),
                    ("t10k-images-idx3-ubyte", n_test), ("t10k-labels-idx1-ubyte", n_test)):
        _write_idx(dst / (name + ".gz"), read_idx(MNIST_DIR / (name + ".gz"))[:n])


def _digits_raw():
    from sklearn.datasets import load_digits
    d = load_digits()
    return (d.images * 16).clip(0, 255).astype(np.uint8), d.target.astype(np.int64)


def _photos(dst):
    """folder:photos/: scikit-learn's digits as 8x8 PNGs, one sub-folder per class."""
    from PIL import Image
    x, y = _digits_raw()
    for i, (img, label) in enumerate(zip(x, y)):
        d = dst / str(label)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(str(d / "{:04d}.png".format(i)))


def _npz(dst):
    """npz:data.npz: the digits as x (N, 8, 8) uint8 and y."""
    x, y = _digits_raw()
    np.savez(str(dst), x=x, y=y)


def _test_npz(dst):
    """test.npz, as a deploy bundle ships it: the test split, preprocessed, x and y."""
    from edgekit.data import load_data
    d = load_data("digits")
    np.savez(str(dst), x=d.x_test.astype(np.float32), y=d.y_test)


@pytest.fixture(scope="module")
def quickstart_seed(seed_digits_artifact, tmp_path_factory):
    """What the README's quickstart leaves in runs/seed: seed-mnist-cnn trained on digits,
    exported to ONNX and TFLite (the session's seed_digits_artifact, exported once here)."""
    from edgekit.artifact import Artifact
    from edgekit.export import export
    dst = tmp_path_factory.mktemp("quickstart") / "seed"
    shutil.copytree(str(seed_digits_artifact.path), str(dst))
    export(dst, ["onnx", "tflite"], target="laptop-cpu")
    return Artifact.open(dst)


def _copy_dir(fixture):
    def make(dst, request):
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(str(request.getfixturevalue(fixture).path), str(dst))
    return make


def _copy_file(fixture, name):
    def make(dst, request):
        shutil.copy(str(Path(request.getfixturevalue(fixture).path) / name), str(dst))
    return make


def _fleet(dst, request):
    """deploy/fleet.example.toml, its devices pointed at the test's sshd (done by _hosts)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(str(REPO / "deploy" / "fleet.example.toml"), str(dst))


# name as a page writes it -> how the test makes it (documented in docs/concepts/tested.md)
GIVENS = {
    "runs/seed": _copy_dir("quickstart_seed"),   # the quickstart's runs/seed
    "out/seed": _copy_dir("quickstart_seed"),
    "my_model.h5": _copy_file("tiny_artifact", "model.h5"),   # "your" Keras model, on digits
    "model.h5": _copy_file("tiny_artifact", "model.h5"),
    "model.onnx": _copy_file("tiny_onnx", "model.opset17.onnx"),  # "your" ONNX model
    "photos": lambda dst, request: _photos(dst),
    "data.npz": lambda dst, request: _npz(dst),
    "test.npz": lambda dst, request: _test_npz(dst),
    "data/mnist": lambda dst, request: _mnist_small(dst),
    "deploy/fleet.example.toml": _fleet,
}


def _paths_named(argv):
    """Paths a command reads (not what follows -o / --json: those it writes)."""
    for i, tok in enumerate(argv):
        if i and argv[i - 1] in ("-o", "--out", "--json"):
            continue
        for part in (tok, tok.split(":", 1)[-1]):
            yield part.rstrip("/")


def provide_givens(argv, request):
    for name in _paths_named(argv):
        if name in GIVENS and not Path(name).exists():
            GIVENS[name](Path(name), request)


# -- hosts: the page's device -> the test's sshd on 127.0.0.1 ------------------------------------

def _hosts(argv, request, tmp_path, needs):
    """`--host X` -> the real sshd on 127.0.0.1 with its key, known_hosts and a temp remote dir;
    an inventory's hosts likewise; `--setup` dropped (it pip-installs on the device)."""
    if "--host" not in argv and "--inventory" not in argv:
        return argv
    server = request.getfixturevalue("sshd")
    kh = tmp_path / "known_hosts"
    kh.write_text(server.known_hosts_line())
    out, skip = [], False
    for i, tok in enumerate(argv):
        if skip:
            skip = False
            continue
        if tok == "--host":
            out += ["--host", server.host]
            skip = True
        elif tok == "--setup" and needs:
            continue
        elif tok == "--inventory":
            inv = Path(argv[i + 1])
            text = re.sub(r'(?m)^host = "[^"]*"', 'host = "{}"'.format(server.host), inv.read_text())
            text = re.sub(r'(?m)^remote_python = "[^"]*"', 'remote_python = "{}"'.format(
                sys.executable), text)
            inv.write_text(text)
            out.append(tok)
        else:
            out.append(tok)
    if "--dry-run" in out:
        return out
    return out + ["--identity", str(server.user_key), "--known-hosts", str(kh),
                  "--remote-dir", str(tmp_path / "remote"), "--remote-python", sys.executable]


# -- running -------------------------------------------------------------------------------------

def _parse(step):
    """The CLI's own parser accepts the command (verb, options, their types)."""
    if step.runtime:
        from edgekit.runtime.__main__ import _parser
        _parser().parse_args(step.argv)
        return
    import click
    import typer.main
    from edgekit.cli import app
    group = typer.main.get_command(app)
    cmd = group.commands.get(step.argv[0])
    assert cmd is not None, "{!r}: no such verb".format(step)
    try:
        cmd.make_context(step.argv[0], list(step.argv[1:]))
    except click.exceptions.ClickException as exc:
        pytest.fail("{!r} does not parse: {}".format(step, exc.format_message()))


def _run_runtime(argv, capfd):
    from edgekit.runtime.__main__ import main
    capfd.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capfd.readouterr()
    return code or 0, out, err


def _outputs(argv):
    return {argv[i + 1] for i, tok in enumerate(argv[:-1]) if tok in ("--json", "-o", "--out")}


def run_page(page, request, tmp_path, run_cli, capfd):
    steps = steps_of(page)
    stopped_outputs, timings, ran, notes = set(), [], 0, []
    for step in steps:
        kind, arg = step.mark or ("", "")
        needs = arg.split() if kind == "needs" else []
        if kind == "docs-test" and arg.startswith("covered-by"):
            ref = arg.split()[1]
            path, _, test = ref.partition("::")
            assert re.search(r"^def {}\(".format(re.escape(test)), (REPO / path).read_text(),
                             flags=re.M), "{!r}: {} does not exist".format(step, ref)
            _parse(step)
            continue
        if (kind == "docs-test" and arg.startswith("parse")) or (needs and not set(needs) <= set(BOUNDARY)):
            assert kind == "needs" or ":" in arg and arg.split(":", 1)[1].strip(), \
                "{!r}: a parse-only block must say why (<!-- docs-test: parse: REASON -->)".format(step)
            _parse(step)
            continue
        if any(tok in stopped_outputs for tok in step.argv):  # reads what the device would write
            _parse(step)
            continue
        provide_givens(step.argv, request)
        argv = _hosts(step.argv, request, tmp_path, needs)
        t0 = time.monotonic()
        if step.runtime:
            code, out, err = _run_runtime(argv, capfd)
        else:
            code, out, err = run_cli(*argv)
        timings.append((round(time.monotonic() - t0, 1), step.line))
        notes.append("  exit {} {:6.1f} s  {}".format(code, timings[-1][0], step.line[:110]))
        ran += 1
        assert "Traceback" not in err, "{!r}:\n{}".format(step, err[-3000:])
        if kind == "docs-test" and arg.startswith("refused:"):
            want = arg.split(":", 1)[1].strip()
            assert code == 1 and want in err, "{!r}: exit {}, not refused with {!r}:\n{}".format(
                step, code, want, err[-2000:])
            notes.append("    refused as the page says: " + want)
            continue
        if needs and code != 0:
            # the error line, or for several devices the per-device lines of the summary
            errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
            boundary = "|".join(BOUNDARY[n] for n in needs)
            assert errors and re.search(boundary, out + "\n" + err), \
                "{!r} exit {} without naming the missing {}:\n{}".format(step, code, needs, err[-2000:])
            notes.append("    stopped at the boundary: " + errors[-1][:150])
            stopped_outputs |= _outputs(step.argv)
            continue
        assert code == 0, "{!r} exit {}:\n{}".format(step, code, err[-3000:])
        got = {_shape(ln) for ln in (out + "\n" + err).splitlines()}
        for line in step.shown:
            assert _shape(line) in got, "{!r} did not print a line like\n{}\ngot:\n{}".format(
                step, line, out[-3000:])
    with capfd.disabled():  # what ran, for `pytest -s`: exit codes, seconds, boundary stops
        print("\n{}: {} of {} commands run in {:.0f} s".format(
            page, ran, len(steps), sum(t for t, _ in timings)))
        print("\n".join(notes))
    return steps


@pytest.mark.parametrize("page", PAGES)
def test_every_command_of_the_page_runs(page, request, tmp_path, monkeypatch, run_cli, capfd):
    monkeypatch.chdir(tmp_path)
    steps = run_page(page, request, tmp_path, run_cli, capfd)
    if page == "README.md":
        assert [s.argv[0] for s in steps if s.shown][:3] == ["train", "compress", "export"]
        assert (tmp_path / "runs" / "report" / "report.html").is_file()
        assert (tmp_path / "runs" / "knn" / "manifest.json").is_file()


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)])
def test_python_examples_call_real_functions_with_real_keywords(page):
    """A ```python block's imports exist and every keyword it passes is a parameter of the
    function it calls (the blocks are signatures with the reader's data, not scripts)."""
    import importlib
    for body in python_blocks(page):
        tree = ast.parse(body)
        names = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                mod = importlib.import_module(node.module)
                for a in node.names:
                    names[a.asname or a.name] = getattr(mod, a.name)
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Name) and n.func.id in names]
        assert calls, page
        sigs = {name: inspect.signature(fn).parameters for name, fn in names.items()
                if callable(fn)}
        for call in calls:
            params = sigs[call.func.id]
            # a function taking **kwargs passes them on: then the keyword must be a parameter
            # of another function the block imports (evolve -> evolve_trunk)
            forwards = any(p.kind == p.VAR_KEYWORD for p in params.values())
            for kw in call.keywords:
                assert kw.arg in params or forwards and any(
                    kw.arg in other for name, other in sigs.items() if name != call.func.id), \
                    "{}: {}() has no parameter {}".format(page, call.func.id, kw.arg)
