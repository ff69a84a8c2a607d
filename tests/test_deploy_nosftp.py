"""Deploy to a device whose sshd has no SFTP subsystem (dropbear, minimal Yocto, hardened
sshd): the bundle streams over the exec channel, is sha256-checked on the device, the bench
runs and its results come back; the transport used is said. Also: SSH failures are one
``error: HOST: …`` line, and a broken known_hosts / ssh config fails in --dry-run too."""
import json
import sys

import pytest

from sshd import SshServer


@pytest.fixture(scope="module")
def sshd_nosftp(tmp_path_factory):
    server = SshServer(tmp_path_factory.mktemp("sshd-nosftp"), sftp=False).start()
    try:
        yield server
    finally:
        server.kill()


def _args(server, tmp_path, rdir):
    kh = tmp_path / "known_hosts"
    kh.write_text(server.known_hosts_line())
    return ["--host", server.host, "--identity", server.user_key, "--known-hosts", kh,
            "--remote-dir", rdir, "--remote-python", sys.executable]


def test_no_sftp_subsystem_really_refuses_sftp(sshd_nosftp):
    import paramiko
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", port=sshd_nosftp.port, username="root",
                   key_filename=str(sshd_nosftp.user_key), look_for_keys=False, allow_agent=False)
    try:
        with pytest.raises(paramiko.SSHException):
            client.open_sftp()
    finally:
        client.close()


def test_deploy_and_bench_without_sftp_stream_over_exec(sshd_nosftp, tiny_onnx, tmp_path, run_cli):
    rdir = tmp_path / "device"
    out = tmp_path / "r.json"
    code, _, err = run_cli("deploy", tiny_onnx.path, "--target", "laptop-cpu",
                           *_args(sshd_nosftp, tmp_path, rdir), "--bench", "--json", out,
                           "--iterations", "10", "--warmup", "1", "--test-samples", "50")
    assert code == 0, err
    assert "no SFTP on 127.0.0.1" in err and "bytes sent over exec" in err
    res = json.loads(out.read_text())
    assert res["deploy"]["transport"] == "exec" and res["runtime"] == "onnxruntime"
    assert res["latency_ms"]["p50"] > 0 and res["test_samples"] == 50
    installed = [p for p in rdir.iterdir() if not p.name.startswith(".") and p.name != "runs"]
    assert len(installed) == 1 and (installed[0] / ".edgekit-complete").is_file()
    assert not [p for p in rdir.iterdir() if p.name.startswith(".tmp-")]
    # unchanged: found over exec too, nothing sent
    code, _, err = run_cli("deploy", tiny_onnx.path, "--target", "laptop-cpu",
                           *_args(sshd_nosftp, tmp_path, rdir), "--test-samples", "50")
    assert code == 0 and "unchanged, nothing sent" in err, err


def test_stale_upload_dirs_are_cleaned_over_exec(sshd_nosftp, tiny_onnx, tmp_path, run_cli):
    import os
    rdir = tmp_path / "device"
    stale = rdir / ".tmp-deadbeef-0000"
    stale.mkdir(parents=True)
    (stale / "bundle.tar").write_bytes(b"half an upload")
    os.utime(str(stale), (1, 1))
    code, _, err = run_cli("deploy", tiny_onnx.path, "--target", "laptop-cpu",
                           *_args(sshd_nosftp, tmp_path, rdir), "--test-samples", "20")
    assert code == 0, err
    assert not stale.exists()


def test_a_corrupted_stream_is_refused_by_its_sha256(sshd_nosftp, tiny_onnx, tmp_path):
    from edgekit.deploy import Remote, build_bundle, resolve_host, upload
    bundle = build_bundle(tiny_onnx.path, "laptop-cpu", test_samples=10)
    kh = tmp_path / "kh"
    kh.write_text(sshd_nosftp.known_hosts_line())
    remote = Remote(resolve_host(sshd_nosftp.host), identity=sshd_nosftp.user_key,
                    known_hosts=kh, log=lambda m: None)
    real_put = remote.put
    remote.put = lambda data, path, **kw: real_put(data[:-10] + b"x" * 10, path, **kw)
    try:
        from edgekit.errors import EdgekitError
        with pytest.raises(EdgekitError, match="bundle refused on the device: .*corrupted"):
            upload(remote, bundle, str(tmp_path / "dev"), python=sys.executable)
    finally:
        remote.close()
    assert remote.transport == "exec"
    assert [p.name for p in (tmp_path / "dev").iterdir()] == []  # nothing installed


@pytest.mark.parametrize("content, pattern", [
    (b"\xff\xfe\x00garbage", r"known_hosts .* is not a text file"),
    (b"this is not a known_hosts file at all\n", r"line 1 is not a host key entry"),
    (b"[127.0.0.1]:22 ssh-ed25519 !!!notbase64!!!\n", r"line 1 is not a host key entry"),
    (None, r"cannot read known_hosts"),  # a directory
])
def test_broken_known_hosts_fails_in_dry_run(content, pattern, tiny_onnx, tmp_path, run_cli):
    kh = tmp_path / "kh"
    if content is None:
        kh.mkdir()
    else:
        kh.write_bytes(content)
    code, out, err = run_cli("deploy", tiny_onnx.path, "--host", "u@127.0.0.1", "--known-hosts",
                             kh, "--dry-run")
    assert code == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    import re
    assert re.search(pattern, err), err


@pytest.mark.parametrize("content, pattern", [
    ("Host nano\n  HostName\n", r"cannot read SSH config"),
    ("Host nano\n  Port twenty-two\n", r"Port for nano is not a number"),
    (None, r"SSH config .* (does not exist|is not a file)"),
])
def test_broken_ssh_config_fails_in_dry_run(content, pattern, tiny_onnx, tmp_path, run_cli):
    cfg = tmp_path / "cfg"
    if content is not None:
        cfg.write_text(content)
    code, out, err = run_cli("deploy", tiny_onnx.path, "--host", "nano", "--ssh-config", cfg,
                             "--dry-run")
    assert code == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    import re
    assert re.search(pattern, err), err


def test_ssh_failures_are_one_error_line_naming_the_host(sshd_nosftp, tiny_onnx, tmp_path, run_cli):
    import socket
    with socket.socket() as s:  # a port that accepts and then speaks garbage (not SSH)
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        import threading

        def junk():
            conn, _ = s.accept()
            conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
            conn.close()
        threading.Thread(target=junk, daemon=True).start()
        code, _, err = run_cli("deploy", tiny_onnx.path, "--host", "u@127.0.0.1:{}".format(port),
                               "--known-hosts", tmp_path / "kh", "--connect-timeout", "5")
    lines = [ln for ln in err.splitlines() if ln.startswith("error")]
    assert code == 1 and len(lines) == 1 and "127.0.0.1" in lines[0], err
    assert "Traceback" not in err
