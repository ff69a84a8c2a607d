"""``deploy``: bundle an exported artifact, push it over SSH atomically, check the device,
run the benchmark there and pull the results home.

Steps per device (in parallel over devices, one failure never stops the others):

1. connect with paramiko: ``~/.ssh/config`` aliases (HostName/User/Port/IdentityFile), the
   SSH agent, ``identity``; the host key is checked against ``known_hosts``: unknown ->
   refused unless ``accept_new_host_key`` (then recorded), changed -> always refused;
2. ``setup`` (optional): ``deploy/setup_device.sh`` makes a venv with numpy + the runtime;
3. preflight: ``deploy/edgekit_remote.py preflight`` fed to the remote Python on stdin;
4. upload: skipped when ``REMOTE/<sha>/.edgekit-complete`` exists; else the bundle tar goes
   by SFTP into ``REMOTE/.tmp-XXXX/``, is verified (sha256) and extracted there (members with
   ``..``/absolute paths/links refused), SHA256SUMS checked, then renamed to ``REMOTE/<sha>``;
   stale ``.tmp-*`` dirs from dropped connections are removed;
5. bench (optional): ``python -m edgekit.runtime bench`` (the protocol of ``edgekit bench``)
   inside the bundle, progress streamed, results JSON pulled back and stamped with the
   device identity. ``docker=True`` runs it in the target's image (targets/T.toml [docker]).

The bundle is a deterministic tar (sorted entries, mtime 0, uid/gid 0): the model file the
target runs, manifest.json, edgekit/__init__.py + edgekit/runtime, deploy/edgekit_remote.py,
a test subset as data/test.npz (in the model's input layout, e.g. NCHW for a PyTorch-style
ONNX), bundle.json and SHA256SUMS. ``<sha>`` is its sha256. A bare ``.onnx`` file deploys as
it is (wrapped as an imported artifact while the bundle is built).

Example::

    results = deploy("out/seed", target_name, hosts=["me@192.168.1.50"], bench=True,
                     remote_python="~/edgekit/venv/bin/python")

The package, one job per module: :mod:`~edgekit.deploy.hosts` (host specs, inventory),
:mod:`~edgekit.deploy.bundle` (the tar), :mod:`~edgekit.deploy.ssh` (the session),
:mod:`~edgekit.deploy.steps` (setup, preflight, upload, docker, remote bench) and
:mod:`~edgekit.deploy.verb` (:func:`deploy`).
"""
from edgekit.deploy.hosts import HostSpec, parse_host, read_inventory, resolve_host  # noqa: F401
from edgekit.deploy.bundle import REMOTE_SCRIPT, SETUP_SCRIPT, Bundle, build_bundle  # noqa: F401
from edgekit.deploy.ssh import Remote, check_known_hosts, fingerprint  # noqa: F401
from edgekit.deploy.steps import (COMPLETE, DAEMON_JSON_FIX, DEFAULT_REMOTE_DIR,  # noqa: F401
                                  board_identity, check_device_ops,
                                  check_docker_default_runtime, device_args, stamp_board,
                                  docker_build_command, docker_command, docker_image,
                                  preflight, remote_bench, remote_python_cmd, setup_command,
                                  setup_device, upload)
from edgekit.deploy.verb import deploy  # noqa: F401
