"""`edgekit deploy --bench` of the MNIST seed CNN over a real sshd on 127.0.0.1.

Two "devices" on this machine: the project's venv (onnxruntime, laptop-cpu) and the Jetson
Nano's Python 3.6.15 + onnxruntime 1.10.0 (opset-13 ONNX). Prints bundle size, bytes sent,
wall time of first and unchanged re-deploy, and the pulled-back latency/accuracy.

    .venv/bin/python benchmarks/deploy_loopback.py [--artifact /work/cache/seed-mnist]

Trains seed-mnist-cnn itself (edgekit train) when the artifact is absent.
"""
import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--artifact", default="/work/cache/seed-mnist")
    ap.add_argument("--data", default="mnist:" + str(REPO.parent / "shared" / "datasets" / "mnist"))
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--py36", default=None)
    args = ap.parse_args()
    from devices import py36_python
    from sshd import SshServer

    from edgekit.deploy import deploy
    from edgekit.export import export
    work = Path(tempfile.mkdtemp(prefix="edgekit-deploy-bench-"))
    art = work / "seed"
    if Path(args.artifact, "manifest.json").is_file():
        shutil.copytree(args.artifact, art)
    else:
        from edgekit.models import train
        train("seed-mnist-cnn", args.data, art, epochs=3)
    names = json.loads((art / "manifest.json").read_text())["files"]
    if "model.opset17.onnx" not in names:
        export(art, ["onnx"], target="laptop-cpu")
    if "model.opset13.onnx" not in names:
        export(art, ["onnx"], target="jetson-nano")
    server = SshServer(work / "sshd").start()
    kh = work / "known_hosts"
    kh.write_text(server.known_hosts_line())
    common = dict(hosts=[server.host], identity=server.user_key, known_hosts=kh, bench=True,
                  iterations=args.iterations, warmup=20, test_samples=1000, log=lambda m: None)
    rows = []
    try:
        for label, py, mf in (("venv py3.11 + onnxruntime", sys.executable, None),
                              ("py3.6.15 + onnxruntime 1.10.0 (Nano's Python)",
                               args.py36 or py36_python(), "model.opset13.onnx")):
            rdir = str(work / ("dev-" + str(len(rows))))
            t0 = time.monotonic()
            s = deploy(art, "laptop-cpu", remote_python=py, remote_dir=rdir, model_file=mf, **common)
            first = time.monotonic() - t0
            t0 = time.monotonic()
            s2 = deploy(art, "laptop-cpu", remote_python=py, remote_dir=rdir, model_file=mf,
                        **dict(common, bench=False))
            again = time.monotonic() - t0
            d, r = s["devices"][0], s["devices"][0]["results"]
            if not d["ok"]:
                raise SystemExit("deploy failed: " + d["error"])
            rows.append({"device": label, "bundle_bytes": s["bundles"]["laptop-cpu"]["bytes"],
                         "bytes_sent": d["bytes_sent"], "deploy_bench_s": round(first, 1),
                         "redeploy_s": round(again, 1),
                         "redeploy_bytes_sent": s2["devices"][0]["bytes_sent"],
                         "file": r["file"], "runtime_version": r["runtime_version"],
                         "python": r["python"], "p50_ms": round(r["latency_ms"]["p50"], 3),
                         "p99_ms": round(r["latency_ms"]["p99"], 3),
                         "throughput_ips": round(r["throughput_ips"], 1),
                         "accuracy": r["accuracy"], "test_samples": r.get("test_samples")})
    finally:
        server.kill()
    print(json.dumps(rows, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
