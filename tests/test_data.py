"""Every --data spec on real files: digits, MNIST IDX (gz and plain), Fashion-like IDX,
folder of PNGs, npz with and without a test split; splits disjoint, seeded, stratified;
normalisation recorded and reproducible."""
import gzip
import struct

import numpy as np
import pytest

from conftest import MNIST_DIR
from edgekit.data import _stratified_split, load_data, normalize, read_idx
from edgekit.errors import EdgekitError


def write_idx(path, array, gz=False):
    """Write a uint8 array as an IDX file (magic 0x0000 08 ndim, big-endian dims)."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    data = bytes([0, 0, 8, a.ndim]) + struct.pack(">" + "I" * a.ndim, *a.shape) + a.tobytes()
    opener = gzip.open if gz else open
    with opener(str(path), "wb") as fh:
        fh.write(data)


def write_mnist_dir(folder, x_tr, y_tr, x_te, y_te, gz=False):
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    write_idx(folder / ("train-images-idx3-ubyte" + ext), x_tr, gz)
    write_idx(folder / ("train-labels-idx1-ubyte" + ext), y_tr, gz)
    write_idx(folder / ("t10k-images-idx3-ubyte" + ext), x_te, gz)
    write_idx(folder / ("t10k-labels-idx1-ubyte" + ext), y_te, gz)
    return folder


def indexed_images(n, h=6, w=6, classes=4):
    """Images whose first two pixels encode their index: lets tests see which rows went where."""
    x = np.zeros((n, h, w), dtype=np.uint8)
    x[:, 0, 0] = np.arange(n) % 256
    x[:, 0, 1] = np.arange(n) // 256
    y = np.arange(n) % classes
    return x, y


def ids(ds_x):
    raw = np.rint(ds_x[..., 0] * 255.0).astype(np.int64)
    return set((raw[:, 0, 0] + 256 * raw[:, 0, 1]).tolist())


def test_digits(digits):
    ds = digits
    assert ds.input_shape == (8, 8, 1) and ds.num_classes == 10
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 1797
    assert ds.x_train.dtype == np.float32
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert ds.norm == {"scale": 1.0 / 16.0, "mean": [0.0], "std": [1.0]}
    assert abs(len(ds.x_test) / 1797.0 - 0.2) < 0.01
    spec = ds.input_spec()
    assert spec["shape"] == [None, 8, 8, 1] and spec["layout"] == "NHWC"
    assert spec["scale"] == ds.norm["scale"]


def test_digits_is_seeded():
    a, b = load_data("digits"), load_data("digits")
    assert np.array_equal(a.x_test, b.x_test) and np.array_equal(a.y_val, b.y_val)
    assert a.fingerprint() == b.fingerprint()


def test_mnist_real_gz():
    ds = load_data("mnist:{}".format(MNIST_DIR))
    assert len(ds.x_test) == 10000 and len(ds.x_train) + len(ds.x_val) == 60000
    assert abs(len(ds.x_val) - 6000) <= 10   # 10% per class, rounded per class
    assert ds.input_shape == (28, 28, 1) and ds.classes == [str(i) for i in range(10)]
    assert ds.norm["scale"] == pytest.approx(1.0 / 255.0)
    assert float(ds.x_test.max()) == pytest.approx(1.0)
    # validation is stratified: every digit is ~10% of its training images
    counts_val = np.bincount(ds.y_val, minlength=10)
    counts_all = counts_val + np.bincount(ds.y_train, minlength=10)
    assert np.all(np.abs(counts_val / counts_all - 0.1) < 0.002)


def test_mnist_plain_idx_matches_gz(tmp_path):
    tr_x = read_idx(next(MNIST_DIR.glob("train-images*")))[:300]
    tr_y = read_idx(next(MNIST_DIR.glob("train-labels*")))[:300]
    te_x = read_idx(next(MNIST_DIR.glob("t10k-images*")))[:100]
    te_y = read_idx(next(MNIST_DIR.glob("t10k-labels*")))[:100]
    folder = write_mnist_dir(tmp_path / "small", tr_x, tr_y, te_x, te_y, gz=False)
    ds = load_data("mnist:{}".format(folder))
    assert len(ds.x_test) == 100 and len(ds.x_train) + len(ds.x_val) == 300
    assert np.array_equal(ds.y_test, te_y)
    assert np.allclose(ds.x_test[..., 0], te_x / 255.0)


def test_fashion_like_idx(tmp_path):
    rng = np.random.RandomState(1)
    y_tr, y_te = np.arange(200) % 10, np.arange(50) % 10
    # class c: a bright band at row 2c (clothes-like blocks, not digits)
    def imgs(y):
        x = rng.randint(0, 40, size=(len(y), 28, 28)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, 2 * c:2 * c + 3, 4:24] = 230
        return x
    folder = write_mnist_dir(tmp_path / "fashion", imgs(y_tr), y_tr, imgs(y_te), y_te, gz=True)
    ds = load_data("mnist:{}".format(folder))
    assert ds.input_shape == (28, 28, 1) and len(ds.x_test) == 50
    assert np.array_equal(np.sort(np.unique(ds.y_train)), np.arange(10))


def test_folder_of_pngs(tmp_path):
    from PIL import Image
    root = tmp_path / "imgs"
    rng = np.random.RandomState(0)
    for cls in ("cat", "dog", "emu"):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.randint(0, 255, (12, 10), dtype=np.uint8)).save(
                root / cls / "{}.png".format(i))
    ds = load_data("folder:{}".format(root))
    assert ds.classes == ["cat", "dog", "emu"]
    assert ds.input_shape == (12, 10, 1)
    assert len(ds.x_test) == 6 and np.array_equal(np.bincount(ds.y_test), [2, 2, 2])
    assert ds.norm["scale"] == pytest.approx(1.0 / 255.0)


def test_folder_rgb(tmp_path):
    from PIL import Image
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.new("RGB", (7, 7), (i * 40, 10, 200)).save(tmp_path / cls / "{}.png".format(i))
    ds = load_data("folder:{}".format(tmp_path))
    assert ds.input_shape == (7, 7, 3)


def test_npz_without_test_split_is_disjoint_and_stratified(tmp_path):
    x, y = indexed_images(400, classes=4)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_data("npz:{}".format(tmp_path / "d.npz"))
    tr, va, te = ids(ds.x_train), ids(ds.x_val), ids(ds.x_test)
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert tr | va | te == set(range(400))
    assert np.array_equal(np.bincount(ds.y_test), [20, 20, 20, 20])
    # 320 training images: validation sized to the data (a quarter, short of 1,000 images)
    assert np.array_equal(np.bincount(ds.y_val), [20, 20, 20, 20])
    # labels travel with their images
    for xs, ys in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        idx = np.rint(xs[:, 0, 0, 0] * 255).astype(int) + 256 * np.rint(xs[:, 0, 1, 0] * 255).astype(int)
        assert np.array_equal(idx % 4, ys)


def test_npz_with_test_split_and_classes(tmp_path):
    x, y = indexed_images(100, classes=2)
    xt, yt = indexed_images(30, classes=2)
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=xt, y_test=yt, classes=np.array(["no", "yes"]))
    ds = load_data("npz:{}".format(tmp_path / "d.npz"))
    assert ds.classes == ["no", "yes"]
    assert len(ds.x_test) == 30 and np.array_equal(ds.y_test, yt)
    assert len(ds.x_train) + len(ds.x_val) == 100


def test_npz_float_unit_range_is_not_rescaled(tmp_path):
    rng = np.random.RandomState(0)
    np.savez(tmp_path / "f.npz", x=rng.rand(40, 5, 5).astype(np.float32), y=np.arange(40) % 2)
    ds = load_data("npz:{}".format(tmp_path / "f.npz"))
    assert ds.norm["scale"] == 1.0


def test_split_helper_is_seeded_disjoint_stratified():
    y = np.repeat(np.arange(5), [10, 20, 30, 40, 50])
    keep, held = _stratified_split(y, 0.2, 7)
    keep2, held2 = _stratified_split(y, 0.2, 7)
    _, held3 = _stratified_split(y, 0.2, 8)
    assert np.array_equal(held, held2) and np.array_equal(keep, keep2)
    assert not np.array_equal(held, held3)
    assert not set(keep) & set(held) and len(keep) + len(held) == len(y)
    assert np.array_equal(np.bincount(y[held]), [2, 4, 6, 8, 10])


def test_normalize_reproduces_dataset(digits):
    from sklearn.datasets import load_digits
    raw = load_digits().images[:5]
    got = normalize(raw, digits.norm)
    assert np.allclose(got, raw / 16.0)


@pytest.mark.parametrize("spec,needle", [
    ("nonsense", "unknown data spec"),
    ("mnist:/no/such/dir", "does not exist"),
    ("folder:/no/such/dir", "does not exist"),
    ("npz:/no/such/file.npz", "does not exist"),
])
def test_bad_specs(spec, needle):
    with pytest.raises(EdgekitError, match=needle):
        load_data(spec)


def test_npz_x_test_without_y_test(tmp_path):
    x, y = indexed_images(20, classes=2)
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x)
    with pytest.raises(EdgekitError, match="y_test"):
        load_data("npz:{}".format(tmp_path / "d.npz"))


@pytest.mark.parametrize("sizes, modes, shape", [
    ([(20, 20), (20, 20), (31, 17)], ["L", "L", "L"], (20, 20, 1)),       # one odd size
    ([(16, 16), (16, 16), (16, 16)], ["L", "RGB", "L"], (16, 16, 3)),     # one colour image
    ([(12, 10), (40, 40), (12, 10)], ["RGB", "L", "L"], (10, 12, 3)),     # PIL size is (w, h)
])
def test_folder_of_assorted_images_is_made_one_size_and_said_once(tmp_path, capfd, sizes,
                                                                  modes, shape):
    """JPEGs/PNGs of several sizes and modes: resized to the most common size, colour wins."""
    from PIL import Image
    rng = np.random.RandomState(0)
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(6):
            size, mode = sizes[i % len(sizes)], modes[i % len(modes)]
            chans = 3 if mode == "RGB" else 1
            a = rng.randint(0, 255, (size[1], size[0], chans)).astype(np.uint8)
            Image.fromarray(a if chans == 3 else a[:, :, 0], mode).save(
                tmp_path / c / "{}.png".format(i))
    capfd.readouterr()
    ds = load_data("folder:{}".format(tmp_path))
    assert ds.input_shape == shape
    n = len(ds.y_train) + len(ds.y_val) + len(ds.y_test)
    assert n == 12
    err = capfd.readouterr().err
    assert err.count("note: folder:") == 1
    assert ("resized to {}x{}".format(shape[0], shape[1]) in err) == (len(set(sizes)) > 1)
    assert ("given 3 channels" in err) == (len(set(modes)) > 1)
