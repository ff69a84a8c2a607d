#!/bin/bash
# A Python with the OpenVINO 2022.3 archive's environment (the last release with the NCS2's
# MYRIAD plugin; the pip wheels have none), for NCS2 hosts that use the archive without Docker.
# Pass it as the remote Python:
#
#   scp deploy/openvino2022_python.sh USER@HOST:edgekit/      # once (it is in every bundle too)
#   edgekit deploy ART --target ncs2 --host USER@HOST --bench \
#       --remote-python '~/edgekit/openvino2022_python.sh'
#
# INTEL_OPENVINO_DIR: the archive (default /opt/intel/openvino_2022, Intel's install path);
# EDGEKIT_PYTHON: the interpreter (default python3; the 2022.3 archive ships bindings for
# Python 3.7-3.10). setupvars.sh is bash (BASH_SOURCE), hence #!/bin/bash; its banner goes to
# stderr so stdout stays the Python's. Arguments and stdin go to the Python unchanged.
OV="${INTEL_OPENVINO_DIR:-/opt/intel/openvino_2022}"
if [ ! -f "$OV/setupvars.sh" ]; then
  echo "error: no OpenVINO 2022.3 archive at $OV (no setupvars.sh): install the 2022.3 archive or set INTEL_OPENVINO_DIR" >&2
  exit 2
fi
# shellcheck disable=SC1091
source "$OV/setupvars.sh" >&2 || { echo "error: $OV/setupvars.sh failed" >&2; exit 2; }
exec "${EDGEKIT_PYTHON:-python3}" "$@"
