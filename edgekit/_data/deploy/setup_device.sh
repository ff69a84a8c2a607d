#!/bin/sh
# edgekit device bootstrap: a venv with numpy + the target's runtime.
#
#   sh setup_device.sh TARGET VENV_DIR PYTHON HOST_ARCHES PIP_SPEC PATH_PREFIX PACKAGE...
#
# `edgekit deploy ART --target T --host H --setup` pipes this script to `sh -s` on the device
# with the target's facts from targets/T.toml: HOST_ARCHES (comma-separated `uname -m` values,
# "" = any; host_arch), PIP_SPEC (a pip to install first, e.g. 'pip<22' for Python 3.6; [setup]
# pip), PATH_PREFIX (prepended to PATH, e.g. /usr/local/cuda/bin for pycuda; [setup] path) and
# the PACKAGEs to pip-install ([setup] packages). It then uses VENV_DIR/bin/python as
# --remote-python. The venv sees the system site-packages so vendor packages that are not on
# PyPI (e.g. JetPack's TensorRT bindings) stay importable.
set -eu
USAGE="usage: setup_device.sh TARGET VENV_DIR PYTHON HOST_ARCHES PIP_SPEC PATH_PREFIX PACKAGE..."
if [ "$#" -lt 7 ]; then echo "error: $USAGE" >&2; exit 1; fi
TARGET="$1"; VENV="$2"; PY="$3"; ARCHES="$4"; PIP_SPEC="$5"; PATH_PREFIX="$6"
shift 6

if [ -n "$ARCHES" ]; then
  MACHINE="$(uname -m)"
  case ",$ARCHES," in
    *",$MACHINE,"*) ;;
    *) echo "error: $TARGET needs a host of type $ARCHES (this is $MACHINE): see targets/$TARGET.toml host_arch" >&2
       exit 1 ;;
  esac
  # a 64-bit kernel can run a 32-bit userland (32-bit Raspberry Pi OS on a Pi 4/5 says aarch64
  # in uname -m): its pip finds no onnxruntime wheel, so refuse it here, before any install
  if command -v dpkg >/dev/null 2>&1; then
    DPKG_ARCH="$(dpkg --print-architecture 2>/dev/null || true)"
    case "$MACHINE:$DPKG_ARCH" in
      aarch64:armhf|aarch64:armel|x86_64:i386)
        echo "error: $TARGET needs a 64-bit userland: this is a $MACHINE kernel with a 32-bit userland (dpkg $DPKG_ARCH): flash the 64-bit OS" >&2
        exit 1 ;;
    esac
  fi
fi
if [ -n "$PATH_PREFIX" ]; then PATH="$PATH_PREFIX:$PATH"; export PATH; fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating venv $VENV with $PY"
  "$PY" -m venv --system-site-packages "$VENV" || {
    echo "error: cannot create a venv: sudo apt-get install python3-venv" >&2; exit 1; }
fi
if [ -n "$PIP_SPEC" ]; then
  "$VENV/bin/python" -m pip install -q "$PIP_SPEC"
fi
echo "setup: installing $*"
"$VENV/bin/python" -m pip install -q "$@"
"$VENV/bin/python" -c "import numpy; print('setup: numpy', numpy.__version__)"
echo "setup: done: --remote-python $VENV/bin/python"
