"""Mutation check for issue 30 (not collected by pytest): revert each fix in turn, run the test
that covers it, and expect it to go red; the file is restored after each run.

    cd WT && PYTHONPATH=$PWD /work/main/.venv/bin/python tests/mutation_check_device.py [ID...]

Prints one line per mutation: ``RED`` (caught, as it must be) or ``GREEN`` (survived).
"""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
T = "tests/test_device_truth.py::"
R = "tests/test_tensorrt_runner.py::"
N = "tests/test_ncs2_path.py::"
REMOTE = "edgekit/_data/deploy/edgekit_remote.py"

# (id, item, file, old text, new text, tests)
MUTATIONS = [
    ("1a", "board: any device-tree model passes for jetson-nano", "edgekit/_data/targets/jetson-nano.toml",
     'marker_text = "Jetson Nano"\n', "", [T + "test_only_a_jetson_nano_passes_for_jetson_nano",
                                           T + "test_deploy_refuses_another_jetson_and_an_old_l4t"]),
    ("1b", "board: L4T BOARD not checked", REMOTE, 'board = facts.get("l4t_board")', "board = None",
     [T + "test_only_a_jetson_nano_passes_for_jetson_nano"]),
    ("1c", "board: any Raspberry Pi passes", "edgekit/_data/targets/raspberry-pi.toml",
     'marker_text = ["Raspberry Pi 4", "Raspberry Pi 5", "Raspberry Pi Compute Module 4",\n'
     '               "Raspberry Pi Compute Module 5"]', 'marker_text = "Raspberry Pi"',
     [T + "test_only_a_pi_4_or_5_passes_for_raspberry_pi"]),
    ("1d", "board: facts root ignored", REMOTE, "    if root and os.path.isabs(path):",
     "    if False:", [T + "test_deploy_refuses_another_jetson_and_an_old_l4t"]),
    ("2a", "cold start includes the engine build", "edgekit/runtime/bench.py",
     'build_s = (getattr(runner, "engine_build_ms", None) or 0.0) / 1e3', "build_s = 0.0",
     [R + "test_engine_build_is_recorded_apart_from_the_cold_start"]),
    ("2b", "engine_cached not in results", "edgekit/runtime/bench.py",
     'if "engine_cached" in info:', "if False:",
     [R + "test_engine_build_is_recorded_apart_from_the_cold_start"]),
    ("2c", "report hides the engine build", "edgekit/report.py",
     'if r.get("engine_cached") is False:', "if False:",
     [T + "test_report_shows_the_engine_build_beside_the_cold_start"]),
    ("3a", "cache key without the opt batch", "edgekit/runtime/tensorrt.py",
     "int(opt_batch), int(workspace))", "1, int(workspace))",
     [R + "test_engine_cache_key_has_the_opt_batch_and_the_workspace"]),
    ("3b", "cache key without the workspace", "edgekit/runtime/tensorrt.py",
     "int(opt_batch), int(workspace))", "int(opt_batch), 0)",
     [R + "test_engine_cache_key_has_the_opt_batch_and_the_workspace"]),
    ("4a", "no warning for a Nano out of MAXN", REMOTE,
     'if j.get("power_mode") != JETSON_MAXN:', "if False:",
     [T + "test_nano_state_is_recorded_and_warned_about_on_the_nanos_python"]),
    ("4b", "no warning for unlocked clocks", REMOTE,
     'if j.get("clocks_locked") is not True:', "if False:",
     [T + "test_nano_state_is_recorded_and_warned_about_on_the_nanos_python"]),
    ("4c", "no warning for a throttled Pi", REMOTE, "elif t & 0xF:", "elif False:",
     [T + "test_pi_throttling_is_recorded_and_warned_about"]),
    ("4d", "no warning for an NCS2 on USB 2", REMOTE, 's["speed_mbps"] < 5000', "False",
     [T + "test_ncs2_usb_link_speed_is_recorded_and_usb2_warned_about"]),
    ("4e", "report compares different states", "edgekit/report.py",
     "            if (a or b) and a != b:", "            if False:",
     [T + "test_report_flags_results_in_different_board_states"]),
    ("4f", "warnings not on stderr", REMOTE, 'sys.stderr.write("warning: {}\\n".format(w))',
     "pass", [T + "test_nano_state_is_recorded_and_warned_about_on_the_nanos_python"]),
    ("5", "--docker results name the container", "edgekit/deploy/verb.py",
     'stamp_board(res, board_identity(remote, python, timeout=o["command_timeout"]))', "pass",
     [T + "test_docker_results_name_the_board_not_the_container"]),
    ("6", "ops checked against TensorRT 8.2 whatever the device", "edgekit/deploy/steps.py",
     "problems = check_onnx_model(data, t, tensorrt=version)",
     "problems = check_onnx_model(data, t)",
     [T + "test_ops_are_checked_against_the_devices_tensorrt"]),
    ("7a", "32-bit userland passes the arch check", REMOTE,
     'if machine not in ("aarch64", "x86_64", "arm64", "amd64"):', "if True:",
     [T + "test_a_32_bit_userland_on_a_64_bit_pi_kernel_is_refused",
      T + "test_ncs2_preflight_over_ssh_refuses_a_32_bit_userland"]),
    ("7b", "setup script installs on a 32-bit userland", "edgekit/_data/deploy/setup_device.sh",
     "aarch64:armhf|aarch64:armel|x86_64:i386)", "never)",
     [T + "test_setup_script_refuses_a_32_bit_userland"]),
    ("8a", "teardown keeps the TensorRT runtime", "edgekit/runtime/tensorrt.py",
     "        self.runtime = None\n", "", [R + "test_close_drops_context_engine_and_runtime_in_order"]),
    ("8b", "out-of-profile setter result ignored", "edgekit/runtime/tensorrt.py",
     "        if ok is False:  # both setters", "        if 0:  # both setters",
     [R + "test_out_of_profile_shapes_are_refused_clearly"]),
    ("8c", "cuda-python failures exit 1", "edgekit/runtime/tensorrt.py",
     "raise HardwareMissing(CUDA_INIT_HELP.format(\"{} failed: {}\".format(call, err)))",
     "raise EdgekitError(\"{} failed: {}\".format(call, err))",
     [R + "test_cuda_python_failures_exit_2_like_pycuda"]),
    ("8d", "docker preflight skips the nvidia runtime", REMOTE,
     "if want_rt and docker_bin:", "if False:",
     [T + "test_docker_preflight_checks_the_nvidia_runtime_and_the_tensorrt_bindings"]),
    ("8e", "docker preflight skips the TensorRT bindings dir", REMOTE,
     "        if trt_dir:  # mounted", "        if False:  # mounted",
     [T + "test_docker_preflight_checks_the_nvidia_runtime_and_the_tensorrt_bindings"]),
    ("8f", "NCS2 --batch N leaves a static IR at its batch", "edgekit/runtime/openvino.py",
     "rebatch=rebatch and i == 0", "rebatch=False",
     [N + "test_myriad_batch_n_reshapes_a_static_ir_instead_of_refusing"]),
    ("8g", "archive wrapper without setupvars", "edgekit/_data/deploy/openvino2022_python.sh",
     'source "$OV/setupvars.sh" >&2 ||', "true ||",
     [N + "test_openvino2022_wrapper_is_a_remote_python_with_the_archives_environment"]),
    ("9", "an unread key in a target TOML", "edgekit/_data/targets/laptop-cpu.toml",
     'default_opset = 17\n', 'default_opset = 17\ninput_layout = "NHWC"\n',
     ["tests/test_targets.py::test_every_target_toml_key_is_read_by_code"]),
    ("api", "runner drives named tensors on TensorRT 8.x", "edgekit/runtime/tensorrt.py",
     'TRT_APIS = {8: "bindings", 10: "tensors"}', 'TRT_APIS = {8: "tensors", 10: "tensors"}',
     [R + "test_the_fake_exposes_one_versions_api"]),
    ("doc", "docs name an image tag deploy does not build", "docs/hardware.md",
     "-t edgekit/jetson:0.1.0-r32.6.1 -f", "-t edgekit/jetson:0.1.0 -f",
     ["tests/test_hardware_doc.py::test_image_tags_build_args_and_usb_flags_are_deploys"]),
    ("doc2", "the Nano doctor line is not runnable", "docs/hardware.md",
     "python3 deploy/edgekit_remote.py doctor\n", "python3 deploy/edgekit_remote.py docter\n",
     ["tests/test_hardware_doc.py::test_nano_first_check_runs_as_written_on_the_nanos_python"]),
]


def main(ids):
    worst = 0
    for mid, what, path, old, new, tests in MUTATIONS:
        if ids and mid not in ids:
            continue
        p = REPO / path
        text = p.read_text()
        if text.count(old) != 1:
            print("{:<5} SKIP  {} (text not found once in {})".format(mid, what, path))
            worst = 1
            continue
        p.write_text(text.replace(old, new))
        try:
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
                               + tests, cwd=str(REPO), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, universal_newlines=True)
        finally:
            p.write_text(text)
        verdict = "RED  " if r.returncode != 0 else "GREEN"
        worst = worst or (r.returncode == 0)
        print("{:<5} {} {} -> {}".format(mid, verdict, what, " ".join(t.split("::")[-1]
                                                                     for t in tests)), flush=True)
    return 1 if worst else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
