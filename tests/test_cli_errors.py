"""Bad input on the CLI: one `error:` line naming the problem, exit 1, no traceback, nothing
written. Each case uses real broken files."""
import json

import numpy as np

from conftest import MNIST_DIR
from test_data import write_mnist_dir


def snapshot(folder):
    """Every path under ``folder`` with its bytes: compare before/after a failed command."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def assert_one_error(code, err, needle):
    assert code == 1, err
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err


def small_mnist(folder):
    rng = np.random.RandomState(0)
    return write_mnist_dir(folder, rng.randint(0, 255, (40, 28, 28)), np.arange(40) % 10,
                           rng.randint(0, 255, (20, 28, 28)), np.arange(20) % 10)


def run_train_with(run_cli, tmp_path, spec, needle):
    """`edgekit train` on bad data: error, and neither -o nor any temp dir is left."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    before = snapshot(tmp_path)
    code, out, err = run_cli("train", "--arch", "tiny", "--data", spec, "-o", work / "out",
                             "--epochs", "1")
    assert_one_error(code, err, needle)
    assert snapshot(tmp_path) == before


def test_data_path_missing(run_cli, tmp_path):
    run_train_with(run_cli, tmp_path, "mnist:{}".format(tmp_path / "nope"), "does not exist")
    run_train_with(run_cli, tmp_path, "npz:{}".format(tmp_path / "nope.npz"), "does not exist")
    run_train_with(run_cli, tmp_path, "folder:{}".format(tmp_path / "nope"), "does not exist")


def test_unknown_spec(run_cli, tmp_path):
    run_train_with(run_cli, tmp_path, "imagenet", "unknown data spec 'imagenet'")


def test_idx_bad_magic(run_cli, tmp_path):
    folder = small_mnist(tmp_path / "m")
    bad = folder / "train-images-idx3-ubyte"
    data = bytearray(bad.read_bytes())
    data[2] = 0x0D  # type code: float, not unsigned byte
    bad.write_bytes(bytes(data))
    run_train_with(run_cli, tmp_path, "mnist:{}".format(folder), "bad magic number")


def test_idx_truncated_payload(run_cli, tmp_path):
    folder = small_mnist(tmp_path / "m")
    f = folder / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    run_train_with(run_cli, tmp_path, "mnist:{}".format(folder), "truncated IDX file")


def test_idx_truncated_gzip(run_cli, tmp_path):
    src = next(MNIST_DIR.glob("t10k-labels*.gz"))
    folder = tmp_path / "m"
    folder.mkdir()
    for p in MNIST_DIR.iterdir():
        if p.name.startswith(("train", "t10k")):
            (folder / p.name).symlink_to(p)
    (folder / src.name).unlink()
    (folder / src.name).write_bytes(src.read_bytes()[:2000])
    run_train_with(run_cli, tmp_path, "mnist:{}".format(folder), "t10k-labels")


def test_idx_missing_file(run_cli, tmp_path):
    folder = small_mnist(tmp_path / "m")
    (folder / "train-labels-idx1-ubyte").unlink()
    run_train_with(run_cli, tmp_path, "mnist:{}".format(folder), "train-labels")


def _png_folder(root, classes):
    from PIL import Image
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(4):
            Image.new("L", (8, 8), i * 50).save(root / c / "{}.png".format(i))
    return root


def test_folder_with_non_image_file(run_cli, tmp_path):
    root = _png_folder(tmp_path / "imgs", ["a", "b"])
    (root / "b" / "notes.txt").write_text("not an image")
    run_train_with(run_cli, tmp_path, "folder:{}".format(root), "not an image file: notes.txt")


def test_folder_with_corrupt_png(run_cli, tmp_path):
    root = _png_folder(tmp_path / "imgs", ["a", "b"])
    (root / "a" / "9.png").write_bytes(b"\x89PNG garbage")
    run_train_with(run_cli, tmp_path, "folder:{}".format(root), "cannot read image")


def test_folder_with_one_class(run_cli, tmp_path):
    root = _png_folder(tmp_path / "imgs", ["only"])
    run_train_with(run_cli, tmp_path, "folder:{}".format(root), "at least 2 classes")


def test_npz_without_x(run_cli, tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((10, 8, 8)), y=np.arange(10) % 2)
    run_train_with(run_cli, tmp_path, "npz:{}".format(tmp_path / "d.npz"), "no array 'x'")


def test_npz_corrupt(run_cli, tmp_path):
    (tmp_path / "d.npz").write_bytes(b"PK\x03\x04 not really a zip")
    run_train_with(run_cli, tmp_path, "npz:{}".format(tmp_path / "d.npz"), "not a readable .npz")


def test_output_exists(run_cli, tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "out").mkdir()
    (tmp_path / "work" / "out" / "keep.txt").write_text("mine")
    before = snapshot(tmp_path)
    code, _, err = run_cli("train", "--arch", "tiny", "--data", "digits", "-o",
                           tmp_path / "work" / "out")
    assert_one_error(code, err, "already exists")
    code, _, err = run_cli("demo", "-o", tmp_path / "work" / "out")
    assert_one_error(code, err, "already exists")
    assert snapshot(tmp_path) == before


def test_model_missing(run_cli, tmp_path):
    code, _, err = run_cli("eval", tmp_path / "nope", "--data", "digits")
    assert_one_error(code, err, "does not exist")


def test_model_file_tampered(run_cli, tiny_artifact, artifact_copy):
    path = artifact_copy(tiny_artifact)
    (path / "model.h5").write_bytes(b"garbage")
    before = snapshot(path)
    code, _, err = run_cli("eval", path, "--data", "digits")
    assert_one_error(code, err, "artifact modified since it was written")
    assert snapshot(path) == before


def test_model_file_corrupt(run_cli, tiny_artifact, artifact_copy):
    """A corrupt .h5 whose manifest sha256 matches (written corrupt): cannot load."""
    import hashlib
    path = artifact_copy(tiny_artifact)
    blob = (path / "model.h5").read_bytes()[:4096]
    (path / "model.h5").write_bytes(blob)
    m = json.loads((path / "manifest.json").read_text())
    m["files"]["model.h5"].update(sha256=hashlib.sha256(blob).hexdigest(), bytes=len(blob))
    (path / "manifest.json").write_text(json.dumps(m))
    code, _, err = run_cli("eval", path, "--data", "digits")
    assert_one_error(code, err, "cannot load model")


def test_not_an_artifact(run_cli, tmp_path):
    (tmp_path / "model.h5").write_bytes(b"x")  # eval takes a bare .h5: this one is junk
    code, _, err = run_cli("eval", tmp_path / "model.h5", "--data", "digits")
    assert_one_error(code, err, "cannot load model")
    (tmp_path / "model.txt").write_bytes(b"x")
    code, _, err = run_cli("eval", tmp_path / "model.txt", "--data", "digits")
    assert_one_error(code, err, "not an artifact directory")
    code, _, err = run_cli("eval", tmp_path, "--data", "digits")
    assert_one_error(code, err, "no manifest.json")


def test_shapes_do_not_match_model(run_cli, tiny_artifact, tmp_path):
    rng = np.random.RandomState(0)
    # another size is resized to fit the model (edgekit.adapt); 2 channels cannot be adapted
    np.savez(tmp_path / "m28.npz", x=rng.randint(0, 255, (50, 28, 28, 2)).astype(np.uint8),
             y=np.arange(50) % 10)
    before = snapshot(tiny_artifact.path)
    code, _, err = run_cli("eval", tiny_artifact.path, "--data", "npz:{}".format(tmp_path / "m28.npz"))
    assert_one_error(code, err, "has 2-channel images but the model expects 1 channels")
    assert snapshot(tiny_artifact.path) == before


def test_class_count_does_not_match_model(run_cli, tiny_artifact, tmp_path):
    rng = np.random.RandomState(0)
    np.savez(tmp_path / "c3.npz", x=rng.randint(0, 16, (30, 8, 8)).astype(np.uint8),
             y=np.arange(30) % 3)
    code, _, err = run_cli("eval", tiny_artifact.path, "--data", "npz:{}".format(tmp_path / "c3.npz"))
    assert_one_error(code, err, "the model has 10 outputs")


def test_usage_errors_are_one_line(run_cli):
    code, _, err = run_cli("train", "--data", "digits")
    assert code == 1 and err.count("error:") == 1 and "--arch" in err
    code, _, err = run_cli("no-such-command")
    assert code == 1 and err.count("error:") == 1
