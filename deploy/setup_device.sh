#!/bin/sh
# edgekit device bootstrap: a venv with numpy + the target's runtime.
#
#   sh setup_device.sh TARGET VENV_DIR [PYTHON]
#
# `edgekit deploy ART --target T --host H --setup` pipes this script to `sh -s` on the device,
# then uses VENV_DIR/bin/python as --remote-python. The venv sees the system site-packages so
# JetPack's TensorRT (python3-libnvinfer, not on PyPI) stays importable on the Jetson Nano.
#
#   jetson-nano  numpy<1.20 (1.19.5: the last for Python 3.6) + pycuda; TensorRT from JetPack
#   laptop-cpu   numpy + onnxruntime
#   ncs2         numpy<2 + openvino==2022.3.1 (the pip wheel has no MYRIAD plugin: use
#                `edgekit deploy --docker` with Dockerfile.ncs2 for the stick itself);
#                x86-64 hosts only: there is no aarch64 build of OpenVINO 2022.3
set -eu
TARGET="${1:?usage: setup_device.sh TARGET VENV_DIR [PYTHON]}"
VENV="${2:?usage: setup_device.sh TARGET VENV_DIR [PYTHON]}"
PY="${3:-python3}"

case "$TARGET" in
  jetson-nano) PKGS="numpy<1.20 pycuda" ;;
  laptop-cpu)  PKGS="numpy onnxruntime" ;;
  ncs2)        PKGS="numpy<2 openvino==2022.3.1"
               if [ "$(uname -m)" != "x86_64" ]; then
                 echo "error: the NCS2 needs an x86-64 host (this is $(uname -m)): OpenVINO 2022.3, the last with MYRIAD, has no ARM build" >&2
                 exit 1
               fi ;;
  *) echo "error: unknown target $TARGET (jetson-nano, laptop-cpu, ncs2)" >&2; exit 1 ;;
esac

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating venv $VENV with $PY"
  "$PY" -m venv --system-site-packages "$VENV" || {
    echo "error: cannot create a venv: sudo apt-get install python3-venv" >&2; exit 1; }
fi
if [ "$TARGET" = "jetson-nano" ]; then
  # pycuda builds against CUDA 10.2 from JetPack; pip 21.x is the last for Python 3.6
  PATH="/usr/local/cuda/bin:$PATH"; export PATH
  "$VENV/bin/python" -m pip install -q 'pip<22'
fi
echo "setup: installing $PKGS"
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install -q $PKGS
"$VENV/bin/python" -c "import numpy; print('setup: numpy', numpy.__version__)"
echo "setup: done: --remote-python $VENV/bin/python"
