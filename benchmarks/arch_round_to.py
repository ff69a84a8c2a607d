"""Issue 11: how much the channel rounding of ``prune --structured`` matters for latency.

One trained model, three ONNX files timed interleaved (onnxruntime, batch 1, 1 thread, p50 of
9 rounds): the model itself, ``--target-macs 0.5`` with ``--round-to 8`` (untuned: only the
graph matters for latency), and a written ``prune --structured`` artifact (the default
rounding, fine-tuned).

    .venv/bin/python benchmarks/arch_round_to.py --model /work/cache/ycnn3/mobilenetv2.h5 \
        --pruned /work/cache/ycnn3/runs/mobilenetv2-prune --data mnist:../shared/datasets/mnist \
        --out /work/cache/ycnn3/cmp --json benchmarks/results/arch_mnv2_round_to_8_vs_16_20261201.json
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--pruned", required=True, help="a prune --structured artifact of --model")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--target-macs", type=float, default=0.5)
    a = ap.parse_args(argv)
    from arch_compress import _fitted, p50
    from edgekit.compress.channels.prune import prune_channels
    from edgekit.data import load_data
    from edgekit.export.onnx import to_onnx
    from edgekit.models import load_model
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    base = load_model(a.model)
    r8, rep8 = prune_channels(base, target_macs=a.target_macs, round_to=8)
    files = {"base": out / "base.onnx", "r8": out / "r8.onnx", "written": out / "written.onnx"}
    to_onnx(base, files["base"])
    to_onnx(r8, files["r8"])
    to_onnx(load_model(a.pruned), files["written"])
    lat = p50(list(files.values()), _fitted(load_data(a.data), base).x_test, rounds=9)
    b = lat[str(files["base"])]
    res = {k: {"p50_ms": lat[str(p)], "speedup": b / lat[str(p)]} for k, p in files.items()}
    res["base"]["macs"], res["r8"]["macs"] = rep8["macs_before"], rep8["macs"]
    print(json.dumps(res, indent=1))
    Path(a.json).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
