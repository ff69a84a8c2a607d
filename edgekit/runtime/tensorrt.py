"""TensorRT runner (Jetson Nano): build the engine from ONNX on the device, cache it, run it.

Engines are not portable across TensorRT versions or GPUs, so the engine is built here from
the ONNX file and cached under a key made of the ONNX sha256, the TensorRT version, the GPU
name, the precision, the profile's max and optimum batch and the workspace (the precision
actually used is recorded beside it). A build is timed apart (``engine_build_ms``) and left out
of ``cold_start_ms``; ``engine_cached`` says whether this run built one. FP16 when
``builder.platform_has_fast_fp16``; workspace through ``max_workspace_size`` (TensorRT 8.0 /
8.2: JetPack 4.6 / 4.6.1+) or ``set_memory_pool_limit`` (8.4+/10); explicit batch; every ONNX
parser error is listed. Inference uses bindings (8.x) or named tensors (10.x); other TensorRT
majors are refused. Host buffers are page-locked (async copies need them) and reused.

Seams for tests without a GPU: ``trt_module=`` (the TensorRT module) and ``cuda=`` (a buffer
object); the buffer classes themselves take the CUDA binding module (``PyCudaBuffers(driver)``,
``CudaPythonBuffers(cudart)``), so their own code runs in tests against a stand-in module.
Python 3.6 syntax; numpy + tensorrt + pycuda (cuda-python off the Nano).

Example::

    with TrtRunner("model.onnx", max_batch=8) as r:      # builds or loads the cached engine
        r.infer(x)
"""
import hashlib
import json
import os
import re
import tempfile
import time

import numpy as np

from edgekit.runtime.base import Runner
from edgekit.runtime.errors import EdgekitError, HardwareMissing, MissingDependency

TRT_HELP = ("TensorRT is not installed here: a TensorRT target runs on its board (e.g. a Jetson "
            "Nano with JetPack 4.6.x: 4.6 ships TensorRT 8.0.1, 4.6.1+ TensorRT 8.2.1: `sudo apt "
            "install python3-libnvinfer`) with pycuda; from the host use `edgekit deploy ART "
            "--target NAME --host USER@BOARD --bench`")
CUDA_HELP = ("pycuda is not installed: on the Jetson Nano `pip3 install pycuda` with "
             "/usr/local/cuda/bin on PATH (JetPack's CUDA 10.2); cuda-python is an alternative "
             "only on CUDA >= 11 with Python >= 3.8, so not on the Nano")
CUDA_INIT_HELP = ("CUDA cannot start here ({}): run on the Jetson's own L4T with JetPack's CUDA "
                  "driver; in Docker add `--runtime nvidia` (L4T r32 mounts CUDA from the host); "
                  "check `ls -l /dev/nvhost-ctrl-gpu` and that the user is in group video")
DEFAULT_WORKSPACE = 256 << 20   # 256 MiB: the Nano has 4 GB shared with the CPU

# TensorRT major -> the API this runner drives. 8.x (8.0.1 on JetPack 4.6, 8.2.1 on 4.6.1+):
# bindings (execute_async_v2, max_workspace_size before 8.4). 10.x: named tensors
# (execute_async_v3, set_memory_pool_limit). Checked in NVIDIA/TensorRT's python/src at tags
# 8.0.1 and 8.2.1 (every binding-API call used here exists in both; no set_memory_pool_limit)
# and v10.0.0 / v10.9.0 vs v11.0 (11 drops platform_has_fast_fp16 and BuilderFlag.FP16).
# 7.x lacks build_serialized_network; 9.x was a limited release: refused with 11+.
TRT_APIS = {8: "bindings", 10: "tensors"}


def import_tensorrt():
    """The real ``tensorrt`` module, or MissingDependency (exit 2) saying what to install."""
    try:
        import tensorrt
    except ImportError:
        raise MissingDependency(TRT_HELP)
    return tensorrt


def trt_version_tuple(version):
    """'8.2.1.8' -> (8, 2); '10.3.0' -> (10, 3)."""
    nums = [int(n) for n in re.findall(r"\d+", str(version))[:2]]
    while len(nums) < 2:
        nums.append(0)
    return tuple(nums)


def trt_api(version):
    """'bindings' (TensorRT 8.x) or 'tensors' (10.x); any other major is refused (exit 2)."""
    major = trt_version_tuple(version)[0]
    if major not in TRT_APIS:
        raise MissingDependency(
            "TensorRT {} is not supported: edgekit's runner drives TensorRT 8.x (JetPack 4.6: "
            "8.0.1, JetPack 4.6.1+: 8.2.1) and 10.x; install one of those".format(version))
    return TRT_APIS[major]


def engine_cache_key(onnx_sha256, trt_version, gpu_name, fp16, max_batch, opt_batch=1,
                     workspace=DEFAULT_WORKSPACE):
    """File name of the cached engine: ONNX sha256 + TensorRT version + GPU name + every build
    option that changes the engine: precision, the profile's max and optimum batch (TensorRT
    picks its kernels for the optimum: a ``--batch 8`` run must not time an engine tuned for
    batch 1) and the workspace (it bounds which tactics the builder may choose)."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", str(gpu_name)).strip("-").lower() or "gpu"
    return "{}-trt{}-{}-{}-b{}-opt{}-ws{}.engine".format(
        onnx_sha256[:20], trt_version, gpu, "fp16" if fp16 else "fp32", int(max_batch),
        int(opt_batch), int(workspace))


def default_cache_dir():
    return os.environ.get("EDGEKIT_TRT_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "edgekit", "trt")


# -- CUDA buffers: pycuda or cuda-python ----------------------------------------------------------
# Each class wraps one CUDA binding. ``host(nbytes)`` returns PAGE-LOCKED host memory (a flat
# uint8 array): async copies from pageable numpy memory silently become synchronous staged
# copies, which the timing would include (NVIDIA's samples use cuda.pagelocked_empty too).
# The binding module is a constructor argument (default: the real import), so tests run this
# code against a stand-in module with the same functions.

def import_pycuda_driver():
    """``pycuda.driver`` with a context made current on GPU 0 (``pycuda.autoinit``).

    No pycuda -> MissingDependency; pycuda present but CUDA unusable (no libcuda, a container
    without ``--runtime nvidia``, cuInit failing) -> HardwareMissing: both exit 2, never a
    traceback."""
    try:
        import pycuda  # noqa: F401
    except ImportError:
        raise MissingDependency(CUDA_HELP)
    try:
        import pycuda.driver as cuda
        import pycuda.autoinit  # noqa: F401  (cuInit + a context on device 0)
    except Exception as exc:  # ImportError (libcuda.so.1), pycuda._driver.RuntimeError/LogicError
        raise HardwareMissing(CUDA_INIT_HELP.format(_first_line(exc)))
    return cuda


class PyCudaBuffers(object):
    """Page-locked host memory, device memory, copies and a stream through pycuda.driver."""

    library = "pycuda"

    def __init__(self, driver=None):
        self.cuda = driver if driver is not None else import_pycuda_driver()
        self.stream = self.cuda.Stream()

    def gpu_name(self):
        return self.cuda.Device(0).name()

    def host(self, nbytes):
        return self.cuda.pagelocked_empty(max(1, int(nbytes)), np.uint8)

    def free_host(self, host):
        base = getattr(host, "base", None)  # pycuda's HostAllocation (the array's base): free()
        while base is not None and not hasattr(base, "free"):
            base = getattr(base, "base", None)
        if base is not None:
            base.free()

    def alloc(self, nbytes):
        return self.cuda.mem_alloc(max(1, int(nbytes)))

    def ptr(self, mem):
        return int(mem)

    def htod(self, mem, host):
        self.cuda.memcpy_htod_async(mem, host, self.stream)

    def dtoh(self, host, mem):
        self.cuda.memcpy_dtoh_async(host, mem, self.stream)

    def stream_handle(self):
        return self.stream.handle

    def sync(self):
        self.stream.synchronize()

    def free(self, mem):
        mem.free()


class CudaPythonBuffers(object):
    """The same through cuda-python's runtime API (CUDA >= 11, Python >= 3.8: not the Nano)."""

    library = "cuda-python"

    def __init__(self, cudart=None):
        if cudart is None:
            try:
                from cuda.bindings import runtime as cudart
            except ImportError:
                try:
                    from cuda import cudart
                except ImportError:
                    raise MissingDependency(CUDA_HELP)
        self.cudart = cudart
        self.stream = self._ok(cudart.cudaStreamCreate(), "cudaStreamCreate")

    def _ok(self, result, call="CUDA call"):
        """The value of a cuda-python call, or HardwareMissing (exit 2, as pycuda's failures):
        a CUDA error here means the GPU or its driver is not usable from this process."""
        err = result[0]
        if int(err) != 0:
            raise HardwareMissing(CUDA_INIT_HELP.format("{} failed: {}".format(call, err)))
        return result[1] if len(result) > 1 else None

    def gpu_name(self):
        props = self._ok(self.cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
        name = props.name
        return name.decode("utf-8", "replace").rstrip("\x00") if isinstance(name, bytes) else str(name)

    def host(self, nbytes):
        import ctypes
        n = max(1, int(nbytes))
        ptr = int(self._ok(self.cudart.cudaMallocHost(n), "cudaMallocHost"))
        arr = np.ctypeslib.as_array((ctypes.c_uint8 * n).from_address(ptr))
        self._pinned = getattr(self, "_pinned", {})
        self._pinned[arr.ctypes.data] = ptr
        return arr

    def free_host(self, host):
        ptr = getattr(self, "_pinned", {}).pop(host.ctypes.data, None)
        if ptr is not None:
            self.cudart.cudaFreeHost(ptr)

    def alloc(self, nbytes):
        return self._ok(self.cudart.cudaMalloc(max(1, int(nbytes))), "cudaMalloc")

    def ptr(self, mem):
        return int(mem)

    def htod(self, mem, host):
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self.cudart.cudaMemcpyAsync(mem, host.ctypes.data, host.nbytes, kind, self.stream),
                 "cudaMemcpyAsync")

    def dtoh(self, host, mem):
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self.cudart.cudaMemcpyAsync(host.ctypes.data, mem, host.nbytes, kind, self.stream),
                 "cudaMemcpyAsync")

    def stream_handle(self):
        return int(self.stream)

    def sync(self):
        self._ok(self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def free(self, mem):
        self.cudart.cudaFree(mem)


def cuda_buffers(allow_cuda_python=True):
    """pycuda if installed, else cuda-python (when allowed), else MissingDependency."""
    try:
        __import__("pycuda")
    except ImportError:
        if allow_cuda_python:
            try:
                __import__("cuda")
            except ImportError:
                pass
            else:
                return CudaPythonBuffers()
        raise MissingDependency(CUDA_HELP)
    return PyCudaBuffers()


def _first_line(exc):
    text = str(exc).strip()
    return "{}: {}".format(type(exc).__name__, text.splitlines()[0][:200]) if text \
        else type(exc).__name__


# -- engine build -----------------------------------------------------------------------------
def build_engine(trt, onnx_bytes, logger, fp16=True, workspace=DEFAULT_WORKSPACE, max_batch=64,
                 opt_batch=1):
    """Serialized engine bytes from ONNX bytes. Returns (engine bytes, used fp16)."""
    builder = trt.Builder(logger)
    flag = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flag)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EdgekitError("TensorRT's ONNX parser rejected the model: {}".format(
            "; ".join(e.strip().replace("\n", " ") for e in errors) or "no details"))
    config = builder.create_builder_config()
    if trt_version_tuple(trt.__version__) >= (8, 4) and hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace))
    else:  # TensorRT 8.0 / 8.2 (JetPack 4.6 / 4.6.1+): no memory pools yet
        config.max_workspace_size = int(workspace)
    use_fp16 = bool(fp16 and builder.platform_has_fast_fp16)
    if use_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    inp = network.get_input(0)
    shape = tuple(inp.shape)
    if shape and int(shape[0]) == -1:  # dynamic batch: one optimisation profile 1..max_batch
        rest = tuple(int(d) for d in shape[1:])
        if any(d < 0 for d in rest):
            raise EdgekitError("TensorRT engine needs static non-batch dimensions, got {}".format(
                shape))
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, (1,) + rest, (max(1, min(opt_batch, max_batch)),) + rest,
                          (int(max_batch),) + rest)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgekitError("TensorRT could not build an engine (see the TensorRT log above)")
    return bytes(serialized), use_fp16


def _atomic_write_bytes(path, data):
    d = os.path.dirname(path)
    if not os.path.isdir(d):
        os.makedirs(d)
    fd, tmp = tempfile.mkstemp(prefix=".engine.", dir=d)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class TrtRunner(Runner):
    """Runs an ONNX file through a TensorRT engine built (and cached) on this device.

    Options: ``fp16`` (default True: used when the GPU has fast FP16), ``workspace`` (bytes),
    ``max_batch`` (dynamic-batch profile upper bound, default 64), ``batch`` (profile optimum),
    ``cache_dir`` (default ``$EDGEKIT_TRT_CACHE`` or ``~/.cache/edgekit/trt``), and the seam
    ``trt_module`` / ``cuda`` (defaults: ``import tensorrt``; :class:`PyCudaBuffers`, or
    :class:`CudaPythonBuffers` where pycuda is absent and CUDA >= 11).

    The precision an engine was built with is recorded beside it (``.engine.json``), so loading
    a cached engine creates no throw-away ``trt.Builder`` (its CUDA set-up would inflate
    ``cold_start_ms``). Host buffers are page-locked and reused per binding.
    """

    name = "tensorrt"

    def _load(self):
        trt = self.options.get("trt_module") or import_tensorrt()
        self.trt = trt
        self._version = str(trt.__version__)
        self._api = trt_api(self._version)
        self.mem = self.options.get("cuda") or cuda_buffers()
        self.gpu = self.mem.gpu_name()
        self.logger = trt.Logger(trt.Logger.WARNING)
        with open(self.path, "rb") as fh:
            onnx_bytes = fh.read()
        sha = hashlib.sha256(onnx_bytes).hexdigest()
        max_batch = int(self.options.get("max_batch") or 64)
        opt_batch = max(1, min(int(self.options.get("batch") or 1), max_batch))
        workspace = int(self.options.get("workspace") or DEFAULT_WORKSPACE)
        fp16 = self.options.get("fp16", True)
        cache_dir = self.options.get("cache_dir") or default_cache_dir()
        self.max_batch = max_batch
        self.engine_path = os.path.join(cache_dir, engine_cache_key(
            sha, self._version, self.gpu, fp16, max_batch, opt_batch, workspace))
        blob, used = _read_cached_engine(self.engine_path)
        self.engine_cached = blob is not None
        self.engine_build_ms = None
        if blob is None:  # minutes on a Nano: timed apart, so cold_start_ms can leave it out
            start = time.perf_counter()
            blob, used = build_engine(trt, onnx_bytes, self.logger, fp16=fp16,
                                      workspace=workspace, max_batch=max_batch,
                                      opt_batch=opt_batch)
            _atomic_write_bytes(self.engine_path, blob)
            _atomic_write_bytes(self.engine_path + ".json", json.dumps(
                {"precision": "fp16" if used else "fp32", "tensorrt": self._version,
                 "gpu": self.gpu, "onnx_sha256": sha, "max_batch": max_batch,
                 "opt_batch": opt_batch, "workspace": workspace}).encode("utf-8"))
            self.engine_build_ms = (time.perf_counter() - start) * 1e3
        self.precision = "fp16" if used else "fp32"
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise EdgekitError("TensorRT could not deserialize {} (built by another TensorRT "
                               "version or GPU?): delete it and run again".format(self.engine_path))
        self.context = self.engine.create_execution_context()
        self.io = self._io_tensors()
        ins = [t for t in self.io if t["input"]]
        if len(ins) != 1:
            raise EdgekitError("edgekit runs single-input models; {} has {} inputs".format(
                self.path, len(ins)))
        self.input_name = ins[0]["name"]
        self.input_shape = [None if int(d) < 0 else int(d) for d in ins[0]["shape"]]
        self.input_dtype = ins[0]["dtype"]
        self.output_names = [t["name"] for t in self.io if not t["input"]]
        self._buffers = {}

    def _io_tensors(self):
        """[{name, input, dtype, shape, index}] from bindings (8.x) or named tensors (10.x)."""
        trt, eng = self.trt, self.engine
        out = []
        if self._api == "tensors":
            for i in range(eng.num_io_tensors):
                name = eng.get_tensor_name(i)
                out.append({"name": name, "index": i,
                            "input": eng.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                            "dtype": np.dtype(trt.nptype(eng.get_tensor_dtype(name))).name,
                            "shape": tuple(eng.get_tensor_shape(name))})
        else:
            for i in range(eng.num_bindings):
                out.append({"name": eng.get_binding_name(i), "index": i,
                            "input": bool(eng.binding_is_input(i)),
                            "dtype": np.dtype(trt.nptype(eng.get_binding_dtype(i))).name,
                            "shape": tuple(eng.get_binding_shape(i))})
        return out

    def _binding(self, name, shape, dtype):
        """(page-locked host array of ``shape``, device memory) for one binding, reused across
        calls and grown only when a larger batch needs more bytes."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        host, dev, size = self._buffers.get(name, (None, None, 0))
        if host is None or size < nbytes:
            if host is not None:
                self.mem.free(dev)
                self.mem.free_host(host)
            host, dev, size = self.mem.host(nbytes), self.mem.alloc(nbytes), nbytes
            self._buffers[name] = (host, dev, size)
        return host[:nbytes].view(dtype).reshape(shape), dev

    def _infer(self, x):
        ctx, mem = self.context, self.mem
        inp = [t for t in self.io if t["input"]][0]
        if self._api == "tensors":
            ok = ctx.set_input_shape(inp["name"], tuple(x.shape))
        else:
            ok = ctx.set_binding_shape(inp["index"], tuple(x.shape))
        if ok is False:  # both setters return False for a shape outside the profile
            raise EdgekitError(
                "input shape {} is outside the TensorRT engine's optimisation profile (batch "
                "1..{}): pass --max-batch {} (the engine is rebuilt for it)".format(
                    tuple(x.shape), self.max_batch, max(int(x.shape[0]), self.max_batch)))
        h_in, d_in = self._binding(inp["name"], x.shape, x.dtype)
        np.copyto(h_in, x)
        mem.htod(d_in, h_in)
        outs, ptrs = [], {inp["name"]: mem.ptr(d_in)}
        for t in self.io:
            if t["input"]:
                continue
            if self._api == "tensors":
                shape = tuple(ctx.get_tensor_shape(t["name"]))
            else:
                shape = tuple(ctx.get_binding_shape(t["index"]))
            host, dev = self._binding(t["name"], shape, t["dtype"])
            ptrs[t["name"]] = mem.ptr(dev)
            outs.append((host, dev))
        if self._api == "tensors":
            for name, p in ptrs.items():
                ctx.set_tensor_address(name, p)
            ok = ctx.execute_async_v3(mem.stream_handle())
        else:
            bindings = [ptrs[t["name"]] for t in sorted(self.io, key=lambda t: t["index"])]
            ok = ctx.execute_async_v2(bindings, mem.stream_handle())
        if ok is False:
            raise EdgekitError("TensorRT execution failed for input shape {}".format(x.shape))
        for host, dev in outs:
            mem.dtoh(host, dev)
        mem.sync()
        return [host.copy() for host, _ in outs]  # the pinned buffers are reused next call

    def _close(self):
        """Free the buffers, then drop the TensorRT objects in order (context, engine, runtime)
        while the CUDA context is still current: pycuda.autoinit pops it at interpreter exit,
        and a TensorRT runtime destroyed after that crashes the process after the results are
        written."""
        for host, dev, _ in self._buffers.values():
            self.mem.free(dev)
            self.mem.free_host(host)
        self._buffers = {}
        self.context = None
        self.engine = None
        self.runtime = None
        self.logger = None

    def version(self):
        if getattr(self, "_version", None):
            return self._version
        try:
            import tensorrt
            return tensorrt.__version__
        except ImportError:
            return "missing"

    def device(self):
        return "GPU ({})".format(self.gpu) if getattr(self, "gpu", None) else "GPU"

    def describe(self):
        info = Runner.describe(self)
        info["precision"] = getattr(self, "precision", None)
        info["engine_cached"] = getattr(self, "engine_cached", None)
        info["engine_build_ms"] = getattr(self, "engine_build_ms", None)
        return info


def _read_cached_engine(path):
    """(engine bytes, built with fp16) from the cache, or (None, None) when the engine or the
    precision recorded beside it is missing or unreadable (then the engine is rebuilt)."""
    if not (os.path.isfile(path) and os.path.isfile(path + ".json")):
        return None, None
    try:
        with open(path + ".json") as fh:
            precision = json.load(fh)["precision"]
        with open(path, "rb") as fh:
            blob = fh.read()
    except (IOError, OSError, ValueError, KeyError, TypeError):
        return None, None
    if precision not in ("fp16", "fp32") or not blob:
        return None, None
    return blob, precision == "fp16"
