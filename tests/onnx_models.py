"""ONNX models as another framework would hand them over, built with onnx.helper (no tensorflow).

``centroid_onnx`` writes a nearest-class-mean classifier of a data set as one ONNX graph: a
Conv whose kernels are the class-mean images (NCHW, as PyTorch exports it) and whose bias is
``-|mean|^2 / 2``, so its argmax is the nearest mean. Its accuracy is known in closed form
(:func:`centroid_accuracy`), so a test can tell whether edgekit fed it the right layout.
Nodes are named as torch.onnx.export names them (``/means/Conv``).
``layout="NHWC"`` puts a Transpose 0,3,1,2 in front (what tf2onnx writes); ``softmax=True``
ends the graph in a Softmax node.

``rgb_digits_npz`` writes scikit-learn's digits as 8x8x3 images whose three channels differ
(the image, its transpose, its upside-down copy): feeding NHWC data to an NCHW model without
transposing it would scramble them.

Example::

    path = rgb_digits_npz(tmp_path / "rgb.npz")
    ds = load_data("npz:" + str(path))
    centroid_onnx(ds, tmp_path / "nc.onnx", layout="NCHW", softmax=True)
"""
import numpy as np


def rgb_digits_npz(path):
    from sklearn.datasets import load_digits
    d = load_digits()
    img = (d.images * 15).astype(np.uint8)                       # 0..240
    x = np.stack([img, img.transpose(0, 2, 1), img[:, ::-1, :]], axis=-1)
    np.savez(str(path), x=x, y=d.target.astype(np.int64))
    return path


def class_means(ds):
    """(C, H, W, Ch) class-mean images of the training split."""
    return np.stack([ds.x_train[ds.y_train == c].mean(axis=0) for c in range(ds.num_classes)])


def centroid_accuracy(ds):
    """Test accuracy of the nearest-class-mean classifier, computed with numpy."""
    mu = class_means(ds).reshape(ds.num_classes, -1)
    x = ds.x_test.reshape(len(ds.x_test), -1)
    scores = x @ mu.T - 0.5 * (mu ** 2).sum(axis=1)
    return float(np.mean(np.argmax(scores, axis=1) == ds.y_test))


def centroid_onnx(ds, path, layout="NCHW", softmax=False, opset=13, batch=None, residual=False):
    """Write the nearest-class-mean classifier of ``ds`` as an ONNX file; returns ``path``.
    ``residual``: an identity residual block in front (see :func:`residual_onnx`)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    mu = class_means(ds).astype(np.float32)                     # (C, H, W, Ch)
    n_cls, h, w, ch = mu.shape
    weight = np.ascontiguousarray(mu.transpose(0, 3, 1, 2))     # OIHW
    bias = (-0.5 * (mu.reshape(n_cls, -1) ** 2).sum(axis=1)).astype(np.float32)
    nodes, x_name = [], "image"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["image"], ["image_nchw"], perm=[0, 3, 1, 2],
                                     name="/Transpose"))
        x_name = "image_nchw"
        in_shape = [batch or "N", h, w, ch]
    else:
        in_shape = [batch or "N", ch, h, w]
    extra = []
    if residual:
        eye = np.eye(ch, dtype=np.float32).reshape(ch, ch, 1, 1)
        nodes += [helper.make_node("Conv", [x_name, "eye", "zb"], ["c1"], kernel_shape=[1, 1],
                                   name="/stem/Conv"),
                  helper.make_node("Relu", ["c1"], ["r1"], name="/stem/Relu"),
                  helper.make_node("Conv", ["r1", "zeros", "zb"], ["c2"], kernel_shape=[1, 1],
                                   name="/block/Conv"),
                  helper.make_node("Add", ["r1", "c2"], ["a1"], name="/block/Add")]
        extra = [numpy_helper.from_array(eye, "eye"),
                 numpy_helper.from_array(np.zeros_like(eye), "zeros"),
                 numpy_helper.from_array(np.zeros(ch, np.float32), "zb")]
        x_name = "a1"
    nodes += [helper.make_node("Conv", [x_name, "W", "B"], ["scores4d"], kernel_shape=[h, w],
                               name="/means/Conv"),
              helper.make_node("Flatten", ["scores4d"], ["logits" if not softmax else "scores"],
                               name="/Flatten")]
    out = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["scores"], ["probs"], axis=1, name="/Softmax"))
        out = "probs"
    graph = helper.make_graph(
        nodes, "nearest_mean",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch or "N", n_cls])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")]
        + extra)
    model = helper.make_model(graph, producer_name="pytorch", producer_version="2.1.0",
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def rgb_digits32_npz(path):
    """The RGB digits upsampled 4x to 32x32x3 (MobileNetV2's smallest input)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    img = (d.images * 15).astype(np.uint8).repeat(4, axis=1).repeat(4, axis=2)
    x = np.stack([img, img.transpose(0, 2, 1), img[:, ::-1, :]], axis=-1)
    np.savez(str(path), x=x, y=d.target.astype(np.int64))
    return path


def mobilenetv2_onnx(out_dir, epochs=3, seed=0):
    """Train ``keras.applications.MobileNetV2`` (alpha 0.35, 32x32x3, softmax head; the zoo's)
    with plain Keras on the 32x32 RGB digits and save it as ONNX with tf2onnx, as a user of
    another framework hands it over. BatchNorm momentum is set to 0.9 first (what users do:
    with the shipped 0.999 the moving statistics lag for epochs and inference reads chance).

    Returns ``{"onnx": path, "npz": path, "spec": "npz:...", "keras_accuracy": float}``.
    Run as ``python tests/onnx_models.py OUT_DIR`` to make the files the BENCHMARKS.md
    commands use.
    """
    import os
    import sys
    from pathlib import Path
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import zoo
    from edgekit.data import load_data
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    npz = rgb_digits32_npz(out / "rgb32.npz")
    ds = load_data("npz:" + str(npz))
    model = zoo.build("mobilenetv2", (32, 32, 3), ds.num_classes, head="softmax", seed=seed)
    _set_bn_momentum(model, 0.9)
    zoo.train_plain(model, ds.x_train, ds.y_train, epochs=epochs, batch_size=32, lr=3e-3,
                    seed=seed)
    pred = np.argmax(model.predict(ds.x_test, verbose=0), axis=1)
    paths = zoo.save_all(model, out / "mobilenetv2", formats=("onnx", "h5"))
    return {"onnx": paths["onnx"], "h5": paths["h5"], "npz": npz, "spec": "npz:" + str(npz),
            "keras_accuracy": float(np.mean(pred == ds.y_test))}


def _set_bn_momentum(model, momentum):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            _set_bn_momentum(layer, momentum)
        elif type(layer).__name__ == "BatchNormalization":
            layer.momentum = momentum


if __name__ == "__main__":
    import json
    import sys
    info = mobilenetv2_onnx(sys.argv[1])
    print(json.dumps({k: str(v) for k, v in info.items()}, indent=2))



def residual_onnx(ds, path, layout="NCHW", softmax=False, opset=13, batch=None):
    """A residual block in front of the nearest-class-mean classifier, as PyTorch exports it:
    ``Conv 1x1 (identity) -> Relu -> Add(x, Conv 1x1 (zeros)(x)) -> /means/Conv -> Flatten``.
    On 0..1 images the block is the identity, so the accuracy is :func:`centroid_accuracy`;
    its cut points are the ``Relu`` and the ``Add`` (a block end), both NCHW 4-D tensors."""
    return centroid_onnx(ds, path, layout, softmax, opset, batch, residual=True)


# -- ONNX files as PyTorch writes them ------------------------------------------------------------
# Committed files written once by tests/fixtures/make_torch_onnx.py (torch 2.13 CPU; PyTorch is
# not an edgekit dependency). Each entry: what the file states (inspect_onnx must read it), the
# data spec it was trained on and the pixel values it takes. Test accuracy on digits ~94-96%.
from pathlib import Path as _Path

FIXTURES = _Path(__file__).resolve().parent / "fixtures"


def _torch(opset, output="logits", batch=1, preprocess=None, external=(), functions=0,
           input_name="input.1", how="classic"):
    return {"data": "digits", "opset": opset, "output": output, "batch": batch,
            "preprocess": preprocess, "external": list(external), "functions": functions,
            "input_name": input_name, "how": how}


TORCH_FIXTURES = {
    "torch_digits_op13_b1.onnx": _torch(13),
    "torch_digits_op17_b1.onnx": _torch(17),
    "torch_digits_dynamo.onnx": _torch(18, input_name="input", how="dynamo"),
    "torch_digits_dynamo21_ls.onnx": _torch(21, "log_softmax", input_name="input",
                                            how="dynamo, optimize=False"),
    "torch_digits_functions.onnx": _torch(17, functions=2, how="export_modules_as_functions"),
    "torch_digits_external.onnx": _torch(17, external=["torch_digits_external.onnx.data"]),
    "torch_digits_logsoftmax.onnx": _torch(17, "log_softmax"),
    "torch_digits_dynbatch.onnx": _torch(17, "softmax", batch=None, how="dynamic_axes"),
    "torch_digits_raw255.onnx": _torch(17, preprocess="raw"),
}
# the done-when model: LeNet trained 1 epoch on MNIST with torchvision's
# Normalize((0.1307,), (0.3081,)) -- a preprocessing the file cannot tell
TORCH_MNIST = "torch_mnist_lenet_b1.onnx"
MNIST_NORMALIZE = ["--scale", "0.00392157", "--mean", "0.1307", "--std", "0.3081"]


def torch_fixture(name):
    """Path of a committed PyTorch ONNX fixture."""
    return FIXTURES / name


def ort_reference_accuracy(path, ds, raw=False):
    """Test accuracy of the ONNX file run directly by onnxruntime one image at a time on the
    data set's NHWC images put into NCHW (x255 for a model that takes raw pixels): what every
    edgekit verb must reproduce, computed without edgekit's feeding code."""
    import onnxruntime as ort
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    x = np.asarray(ds.x_test, np.float32).transpose(0, 3, 1, 2) * (255.0 if raw else 1.0)
    pred = [int(np.argmax(s.run(None, {name: x[i:i + 1]})[0])) for i in range(len(x))]
    return float(np.mean(np.asarray(pred) == ds.y_test))
