"""TensorRT runner (Jetson Nano): build the engine from ONNX on the device, cache it, run it.

Engines are not portable across TensorRT versions or GPUs, so the engine is built here from
the ONNX file and cached under a key made of the ONNX sha256, the TensorRT version, the GPU
name and the precision. FP16 when ``builder.platform_has_fast_fp16``; workspace through
``max_workspace_size`` (TensorRT 8.2, JetPack 4.6) or ``set_memory_pool_limit`` (8.4+/10);
explicit batch; every ONNX parser error is listed. Inference uses bindings (8.x) or named
tensors (10.x), with device buffers from pycuda or cuda-python.

The TensorRT module and the CUDA buffer helper are passed in through one seam
(``trt_module=`` / ``cuda=`` options, default: the real imports) so the control flow can be
tested without a GPU. Python 3.6 syntax; numpy + tensorrt (+ pycuda or cuda-python).

Example::

    with TrtRunner("model.onnx", max_batch=8) as r:      # builds or loads the cached engine
        r.infer(x)
"""
import hashlib
import os
import re
import tempfile

import numpy as np

from edgekit.runtime.base import Runner
from edgekit.runtime.errors import EdgekitError, MissingDependency

TRT_HELP = ("TensorRT is not installed here: the jetson-nano target runs on a Jetson Nano with "
            "JetPack 4.6 (TensorRT 8.2, `sudo apt install python3-libnvinfer`) and pycuda or "
            "cuda-python; from the host use `edgekit deploy ART --target jetson-nano --host "
            "USER@NANO --bench`")
CUDA_HELP = ("neither pycuda nor cuda-python is installed: `pip3 install pycuda` on the Jetson "
             "(or `pip install cuda-python`)")
DEFAULT_WORKSPACE = 256 << 20   # 256 MiB: the Nano has 4 GB shared with the CPU


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


def engine_cache_key(onnx_sha256, trt_version, gpu_name, fp16, max_batch):
    """File name of the cached engine: ONNX sha256 + TensorRT version + GPU name (+ options)."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", str(gpu_name)).strip("-").lower() or "gpu"
    return "{}-trt{}-{}-{}-b{}.engine".format(onnx_sha256[:20], trt_version, gpu,
                                              "fp16" if fp16 else "fp32", int(max_batch))


def default_cache_dir():
    return os.environ.get("EDGEKIT_TRT_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "edgekit", "trt")


# -- CUDA buffers: pycuda or cuda-python ----------------------------------------------------------
class PyCudaBuffers(object):
    """Device memory, copies and a stream through pycuda."""

    library = "pycuda"

    def __init__(self):
        import pycuda.autoinit  # noqa: F401  (creates the context)
        import pycuda.driver as cuda
        self.cuda = cuda
        self.stream = cuda.Stream()

    def gpu_name(self):
        return self.cuda.Device(0).name()

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
    """Device memory, copies and a stream through cuda-python's runtime API."""

    library = "cuda-python"

    def __init__(self):
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        self.cudart = cudart
        self.stream = self._ok(cudart.cudaStreamCreate())

    def _ok(self, result):
        err = result[0]
        if int(err) != 0:
            raise EdgekitError("CUDA call failed: {}".format(err))
        return result[1] if len(result) > 1 else None

    def gpu_name(self):
        props = self._ok(self.cudart.cudaGetDeviceProperties(0))
        name = props.name
        return name.decode("utf-8", "replace").rstrip("\x00") if isinstance(name, bytes) else str(name)

    def alloc(self, nbytes):
        return self._ok(self.cudart.cudaMalloc(max(1, int(nbytes))))

    def ptr(self, mem):
        return int(mem)

    def htod(self, mem, host):
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self.cudart.cudaMemcpyAsync(mem, host.ctypes.data, host.nbytes, kind, self.stream))

    def dtoh(self, host, mem):
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self.cudart.cudaMemcpyAsync(host.ctypes.data, mem, host.nbytes, kind, self.stream))

    def stream_handle(self):
        return int(self.stream)

    def sync(self):
        self._ok(self.cudart.cudaStreamSynchronize(self.stream))

    def free(self, mem):
        self.cudart.cudaFree(mem)


def cuda_buffers():
    """pycuda if installed, else cuda-python, else MissingDependency."""
    for cls, mod in ((PyCudaBuffers, "pycuda"), (CudaPythonBuffers, "cuda")):
        try:
            __import__(mod)
        except ImportError:
            continue
        return cls()
    raise MissingDependency(CUDA_HELP)


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
    else:  # TensorRT 8.2 (JetPack 4.6): no memory pools yet
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
    ``trt_module`` / ``cuda`` (defaults: ``import tensorrt``, pycuda or cuda-python).
    """

    name = "tensorrt"

    def _load(self):
        trt = self.options.get("trt_module") or import_tensorrt()
        self.trt = trt
        self._version = str(trt.__version__)
        self._major = trt_version_tuple(self._version)[0]
        self.mem = self.options.get("cuda") or cuda_buffers()
        self.gpu = self.mem.gpu_name()
        self.logger = trt.Logger(trt.Logger.WARNING)
        with open(self.path, "rb") as fh:
            onnx_bytes = fh.read()
        sha = hashlib.sha256(onnx_bytes).hexdigest()
        max_batch = int(self.options.get("max_batch") or 64)
        fp16 = self.options.get("fp16", True)
        cache_dir = self.options.get("cache_dir") or default_cache_dir()
        self.engine_path = os.path.join(cache_dir, engine_cache_key(
            sha, self._version, self.gpu, fp16, max_batch))
        self.engine_cached = os.path.isfile(self.engine_path)
        if self.engine_cached:
            with open(self.engine_path, "rb") as fh:
                blob = fh.read()
            used = bool(fp16 and trt.Builder(self.logger).platform_has_fast_fp16)
        else:
            blob, used = build_engine(trt, onnx_bytes, self.logger, fp16=fp16,
                                      workspace=self.options.get("workspace") or DEFAULT_WORKSPACE,
                                      max_batch=max_batch, opt_batch=self.options.get("batch") or 1)
            _atomic_write_bytes(self.engine_path, blob)
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
        if self._major >= 10:
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

    def _buffer(self, name, nbytes):
        mem, size = self._buffers.get(name, (None, 0))
        if mem is None or size < nbytes:
            if mem is not None:
                self.mem.free(mem)
            mem = self.mem.alloc(nbytes)
            self._buffers[name] = (mem, nbytes)
        return mem

    def _infer(self, x):
        ctx, mem = self.context, self.mem
        inp = [t for t in self.io if t["input"]][0]
        if self._major >= 10:
            ctx.set_input_shape(inp["name"], tuple(x.shape))
        else:
            ctx.set_binding_shape(inp["index"], tuple(x.shape))
        d_in = self._buffer(inp["name"], x.nbytes)
        mem.htod(d_in, x)
        hosts, ptrs = [], {inp["name"]: mem.ptr(d_in)}
        for t in self.io:
            if t["input"]:
                continue
            if self._major >= 10:
                shape = tuple(ctx.get_tensor_shape(t["name"]))
            else:
                shape = tuple(ctx.get_binding_shape(t["index"]))
            host = np.empty(shape, dtype=t["dtype"])
            dev = self._buffer(t["name"], host.nbytes)
            ptrs[t["name"]] = mem.ptr(dev)
            hosts.append((host, dev))
        if self._major >= 10:
            for name, p in ptrs.items():
                ctx.set_tensor_address(name, p)
            ok = ctx.execute_async_v3(mem.stream_handle())
        else:
            bindings = [ptrs[t["name"]] for t in sorted(self.io, key=lambda t: t["index"])]
            ok = ctx.execute_async_v2(bindings, mem.stream_handle())
        if ok is False:
            raise EdgekitError("TensorRT execution failed for input shape {}".format(x.shape))
        for host, dev in hosts:
            mem.dtoh(host, dev)
        mem.sync()
        return [h for h, _ in hosts]

    def _close(self):
        for mem, _ in self._buffers.values():
            self.mem.free(mem)
        self._buffers = {}
        self.context = None
        self.engine = None

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
        return info
