"""What dropping tf2onnx's identity Reshapes is worth (``edgekit.export.onnx.drop_identity_reshapes``).

Exports a Keras model twice with ``edgekit.export.onnx.to_onnx`` — as shipped, and with the pass
switched off — checks both give the same outputs, and times them interleaved (onnxruntime,
batch 1, 1 thread; ``benchmarks/arch_compress.p50``).

    .venv/bin/python benchmarks/onnx_reshapes.py /work/cache/arch11/mobilenetv2.h5 --out /tmp/reshapes
"""
import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("model", help="a Keras model file or an artifact directory")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    import onnx
    import onnxruntime as ort
    from arch_compress import p50
    import edgekit.export.onnx as eo
    from edgekit.models import load_model
    model = load_model(a.model)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    shipped, off = out / "shipped.onnx", out / "without_pass.onnx"
    eo.to_onnx(model, shipped)
    real = eo.drop_identity_reshapes
    eo.drop_identity_reshapes = lambda proto: 0
    try:
        eo.to_onnx(model, off)
    finally:
        eo.drop_identity_reshapes = real
    x = np.random.RandomState(0).rand(*((256,) + tuple(model.input_shape[1:]))).astype(np.float32)
    outs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
            for p in (off, shipped)]
    lat = p50([off, shipped], x, rounds=9)
    res = {"model": str(a.model),
           "ops": {p.name: dict(collections.Counter(n.op_type for n in onnx.load(str(p)).graph.node)
                                .most_common(6)) for p in (off, shipped)},
           "max_abs_diff": float(np.abs(outs[0] - outs[1]).max()),
           "p50_ms_without": lat[str(off)], "p50_ms_shipped": lat[str(shipped)],
           "speedup": lat[str(off)] / lat[str(shipped)]}
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
