"""The TensorRT runner's own code, run without a GPU through thin stand-ins.

Only the vendor modules are replaced, each by an object with the same functions as the real
one: ``FakeTrt`` for ``tensorrt`` (8.x bindings / 10.x named-tensor API surface), ``FakeDriver``
for ``pycuda.driver`` and ``FakeCudart`` for cuda-python's ``cudart``. "Device memory" is host
memory the stand-in allocates, copies are real ``memmove``s between raw addresses, and the fake
engine reads and writes through the raw pointers the runner binds, as the GPU would. So the real
``PyCudaBuffers`` / ``CudaPythonBuffers`` and the runner's binding plumbing run here; no number
from these fakes reaches a report. The stand-ins also hold the vendor rules the code must obey:
async copies only from/to page-locked host memory (else CUDA silently stages a synchronous copy).
"""
import ctypes
import sys
import types

import numpy as np
import pytest

from edgekit.runtime.errors import EdgekitError, HardwareMissing, MissingDependency


def _view(addr, n, dtype=np.float32):
    """n elements of dtype at a raw address (what the GPU kernel would read/write)."""
    buf = (ctypes.c_byte * (n * np.dtype(dtype).itemsize)).from_address(addr)
    return np.frombuffer(buf, dtype=dtype)


class Memory(object):
    """Allocations shared by the fake CUDA bindings: device memory and page-locked host memory."""

    def __init__(self):
        self.device, self.pinned, self.log = {}, {}, []

    def new_device(self, nbytes):
        arr = np.zeros(int(nbytes), np.uint8)
        self.device[arr.ctypes.data] = arr
        return arr.ctypes.data

    def new_pinned(self, nbytes):
        arr = np.zeros(int(nbytes), np.uint8)
        self.pinned[arr.ctypes.data] = arr
        return arr

    def _inside(self, table, addr, nbytes):
        return any(a <= addr and addr + nbytes <= a + arr.nbytes for a, arr in table.items())

    def copy(self, dst, src, nbytes, kind):
        """dst/src raw addresses; refuses what CUDA would not do asynchronously."""
        host, dev = (src, dst) if kind == "htod" else (dst, src)
        if not self._inside(self.pinned, host, nbytes):
            raise AssertionError("async {} copy with PAGEABLE host memory: CUDA would silently "
                                 "stage a synchronous copy (use page-locked buffers)".format(kind))
        if not self._inside(self.device, dev, nbytes):
            raise AssertionError("{} copy to/from memory that is not device memory".format(kind))
        ctypes.memmove(dst, src, nbytes)
        self.log.append((kind, nbytes))


class FakeDriver(object):
    """Stand-in for ``pycuda.driver`` (the functions PyCudaBuffers calls, same signatures)."""

    def __init__(self, memory):
        mem = self.memory = memory

        class DeviceAllocation(object):
            def __init__(self, nbytes):
                self.addr = mem.new_device(nbytes)

            def __int__(self):
                return self.addr

            def free(self):
                mem.device.pop(self.addr, None)

        class HostAllocation(bytearray):  # pycuda: a pagelocked array's .base, with free()
            def free(self):
                mem.pinned.pop(np.frombuffer(self, np.uint8).ctypes.data, None)

        class Stream(object):
            handle = 0x5

            def synchronize(self):
                mem.log.append(("sync",))

        class Device(object):
            def __init__(self, n):
                self.n = n

            def name(self):
                return "NVIDIA Tegra X1"

        self.Stream, self.Device, self._alloc = Stream, Device, DeviceAllocation
        self._host = HostAllocation

    def mem_alloc(self, nbytes):
        return self._alloc(nbytes)

    def pagelocked_empty(self, shape, dtype, order="C", mem_flags=0):
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        arr = np.ndarray(shape, dtype, buffer=self._host(n), order=order)  # .base: the allocation
        self.memory.pinned[arr.ctypes.data] = arr
        return arr

    def memcpy_htod_async(self, dest, src, stream=None):
        self.memory.copy(int(dest), src.ctypes.data, src.nbytes, "htod")

    def memcpy_dtoh_async(self, dest, src, stream=None):
        self.memory.copy(dest.ctypes.data, int(src), dest.nbytes, "dtoh")


class FakeCudart(object):
    """Stand-in for cuda-python's ``cudart``: every call returns (error, value...)."""

    class cudaMemcpyKind(object):
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    def __init__(self, memory):
        self.memory = memory

    def cudaStreamCreate(self):
        return (0, 0x7)

    def cudaGetDeviceProperties(self, n):
        return (0, types.SimpleNamespace(name=b"NVIDIA GeForce RTX 3060\x00\x00"))

    def cudaMalloc(self, nbytes):
        return (0, self.memory.new_device(nbytes))

    def cudaMallocHost(self, nbytes):
        return (0, self.memory.new_pinned(nbytes).ctypes.data)

    def cudaFreeHost(self, ptr):
        self.memory.pinned.pop(ptr, None)
        return (0,)

    def cudaFree(self, ptr):
        self.memory.device.pop(ptr, None)
        return (0,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        self.memory.copy(dst, src, nbytes, "htod" if kind == 1 else "dtoh")
        return (0,)

    def cudaStreamSynchronize(self, stream):
        self.memory.log.append(("sync",))
        return (0,)


class FakeTrt(object):
    """Records the TensorRT calls the runner makes. It exposes ONE version's API surface:
    bindings (``num_bindings``, ``set_binding_shape``, ``execute_async_v2``...) up to 8.6 only,
    named tensors (``num_io_tensors``, ``set_input_shape``, ``execute_async_v3``...) from 8.5
    only, ``max_workspace_size`` before 10 and ``set_memory_pool_limit`` from 8.4 (NVIDIA's
    python API docs / release notes), so code calling the wrong family fails here. Its engine
    computes y = x @ W through the raw device pointers it is given; its shape setters return
    False outside the optimisation profile, as TensorRT's do."""

    class Logger(object):
        WARNING = 2

        def __init__(self, level):
            self.level = level

    class NetworkDefinitionCreationFlag(object):
        EXPLICIT_BATCH = 0

    class BuilderFlag(object):
        FP16 = "FP16"

    class MemoryPoolType(object):
        WORKSPACE = "WORKSPACE"

    class TensorIOMode(object):
        INPUT = "INPUT"
        OUTPUT = "OUTPUT"

    def __init__(self, version, parse_errors=(), fast_fp16=True, build_seconds=0.0):
        self.__version__ = version
        self.major = int(version.split(".")[0])
        minor = int(version.split(".")[1])
        self.profile = None
        self.calls = []
        self.parse_errors = list(parse_errors)
        self.W = np.arange(12, dtype=np.float32).reshape(4, 3)
        fake = self

        def run(src, dst, shape):
            n = int(np.prod(shape))
            x = _view(src, n).reshape(shape)
            _view(dst, shape[0] * 3)[:] = x.dot(fake.W).ravel()

        class Input(object):
            name, shape = "x", (-1, 4)

        class Network(object):
            def get_input(self, i):
                return Input()

        class Parser(object):
            def __init__(self, network, logger):
                self.num_errors = len(fake.parse_errors)

            def parse(self, data):
                fake.calls.append(("parse", len(data)))
                return not fake.parse_errors

            def get_error(self, i):
                return fake.parse_errors[i]

        class Config(object):
            def set_flag(self, flag):
                fake.calls.append(("set_flag", flag))

            def add_optimization_profile(self, p):
                fake.calls.append(("profile", p.shapes))
                fake.profile = p.shapes

            def __setattr__(self, k, v):
                if k == "max_workspace_size" and fake.major >= 10:
                    raise AttributeError("'IBuilderConfig' has no attribute 'max_workspace_size'")
                fake.calls.append(("config." + k, v))

        if (self.major, int(version.split(".")[1])) >= (8, 4):
            Config.set_memory_pool_limit = lambda self_, pool, n: fake.calls.append(
                ("set_memory_pool_limit", pool, n))

        class Profile(object):
            def set_shape(self, name, mn, opt, mx):
                self.shapes = (name, mn, opt, mx)

        class Builder(object):
            def __init__(self, logger):
                fake.calls.append(("Builder",))

            @property
            def platform_has_fast_fp16(self):
                return fast_fp16

            def create_network(self, flag):
                fake.calls.append(("create_network", flag))
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                fake.calls.append(("build",))
                if build_seconds:
                    import time
                    time.sleep(build_seconds)
                return b"ENGINE"

        def in_profile(shape):
            if fake.profile is None:  # an engine from another fake's build: no profile known
                return True
            lo, hi = fake.profile[1][0], fake.profile[3][0]
            return lo <= shape[0] <= hi

        class Context(object):
            def __init__(self):
                self.shape, self.addr = None, {}

            def __del__(self):
                fake.calls.append(("del", "context"))

            # 8.x
            def set_binding_shape(self, i, shape):
                fake.calls.append(("set_binding_shape", i, shape))
                if not in_profile(shape):
                    return False
                self.shape = shape
                return True

            def get_binding_shape(self, i):
                return (self.shape[0], 3)

            def execute_async_v2(self, bindings, stream):
                fake.calls.append(("execute_async_v2", len(bindings), stream))
                run(bindings[0], bindings[1], self.shape)
                return True

            # 10.x
            def set_input_shape(self, name, shape):
                fake.calls.append(("set_input_shape", name, shape))
                if not in_profile(shape):
                    return False
                self.shape = shape
                return True

            def get_tensor_shape(self, name):
                return (self.shape[0], 3)

            def set_tensor_address(self, name, ptr):
                self.addr[name] = ptr

            def execute_async_v3(self, stream):
                fake.calls.append(("execute_async_v3", sorted(self.addr), stream))
                run(self.addr["x"], self.addr["y"], self.shape)
                return True

        class Engine(object):
            names = ["x", "y"]
            num_bindings = 2
            num_io_tensors = 2

            def __del__(self):
                fake.calls.append(("del", "engine"))

            def create_execution_context(self):
                return Context()

            def get_binding_name(self, i):
                return self.names[i]

            def binding_is_input(self, i):
                return i == 0

            def get_binding_dtype(self, i):
                return "float32"

            def get_binding_shape(self, i):
                return (-1, 4) if i == 0 else (-1, 3)

            def get_tensor_name(self, i):
                return self.names[i]

            def get_tensor_mode(self, name):
                return "INPUT" if name == "x" else "OUTPUT"

            def get_tensor_dtype(self, name):
                return "float32"

            def get_tensor_shape(self, name):
                return (-1, 4) if name == "x" else (-1, 3)

        class TrtRuntime(object):
            def __init__(self, logger):
                pass

            def __del__(self):
                fake.calls.append(("del", "runtime"))

            def deserialize_cuda_engine(self, blob):
                fake.calls.append(("deserialize", blob))
                return Engine()

        if self.major >= 10:  # 10.x removed the bindings API
            for cls, names in ((Context, BINDING_CONTEXT), (Engine, BINDING_ENGINE)):
                for name in names:
                    delattr(cls, name)
        if (self.major, minor) < (8, 5):  # the named-tensor API arrived in 8.5
            for cls, names in ((Context, TENSOR_CONTEXT), (Engine, TENSOR_ENGINE)):
                for name in names:
                    delattr(cls, name)
        self.Builder, self.OnnxParser, self.Runtime = Builder, Parser, TrtRuntime

    @staticmethod
    def nptype(dtype):
        return np.dtype(dtype).type


BINDING_CONTEXT = ("set_binding_shape", "get_binding_shape", "execute_async_v2")
BINDING_ENGINE = ("num_bindings", "get_binding_name", "binding_is_input", "get_binding_dtype",
                  "get_binding_shape")
TENSOR_CONTEXT = ("set_input_shape", "get_tensor_shape", "set_tensor_address", "execute_async_v3")
TENSOR_ENGINE = ("num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_dtype",
                 "get_tensor_shape")


def _tiny():
    from edgekit.runtime.__main__ import TINY_ONNX
    return TINY_ONNX


def _buffers(kind, memory):
    from edgekit.runtime.tensorrt import CudaPythonBuffers, PyCudaBuffers
    if kind == "pycuda":
        return PyCudaBuffers(FakeDriver(memory))
    return CudaPythonBuffers(FakeCudart(memory))


@pytest.mark.parametrize("version", ["8.0.1.6", "8.2.1.8", "10.3.0.26"])
@pytest.mark.parametrize("kind", ["pycuda", "cuda-python"])
def test_trt_builds_caches_and_runs_through_real_buffer_classes(tmp_path, version, kind):
    from edgekit.runtime.tensorrt import TrtRunner
    trt, memory = FakeTrt(version), Memory()
    opts = dict(trt_module=trt, cuda=_buffers(kind, memory), cache_dir=str(tmp_path), max_batch=16)
    with TrtRunner(_tiny(), **opts) as r:
        for batch in (3, 1, 5, 3):  # batch sizes grow and shrink: buffers are reused/grown
            x = np.arange(batch * 4, dtype=np.float32).reshape(batch, 4) - 3
            out = r.infer(x)["y"]
            assert out.shape == (batch, 3) and np.allclose(out, x.dot(trt.W))
        first = r.infer(np.ones((2, 4), np.float32))["y"]
        r.infer(np.zeros((2, 4), np.float32))
        assert np.allclose(first, np.ones((2, 4)).dot(trt.W))  # a copy, not the reused buffer
        assert r.input_shape == [None, 4] and r.describe()["precision"] == "fp16"
        assert r.engine_cached is False
        assert len(memory.pinned) == 2 and len(memory.device) == 2  # one pair per binding
        engine_file = r.engine_path
    assert not memory.pinned and not memory.device  # close() freed both kinds
    names = [c[0] for c in trt.calls]
    assert ("set_flag", "FP16") in trt.calls and ("build",) in trt.calls
    assert ("profile", ("x", (1, 4), (1, 4), (16, 4))) in trt.calls
    stream = 0x5 if kind == "pycuda" else 0x7
    if version.startswith("8."):  # 8.0 and 8.2: no memory pools yet, bindings API
        assert ("config.max_workspace_size", 256 << 20) in trt.calls
        assert "set_memory_pool_limit" not in names
        assert ("set_binding_shape", 0, (3, 4)) in trt.calls
        assert ("execute_async_v2", 2, stream) in trt.calls and "execute_async_v3" not in names
    else:
        assert ("set_memory_pool_limit", "WORKSPACE", 256 << 20) in trt.calls
        assert ("execute_async_v3", ["x", "y"], stream) in trt.calls
        assert "execute_async_v2" not in names
    # key: onnx sha256 + TensorRT version + GPU name; the precision used is recorded beside it
    assert version in engine_file
    import json
    with open(engine_file + ".json") as fh:
        assert json.load(fh)["precision"] == "fp16"
    trt.calls[:] = []
    with TrtRunner(_tiny(), **dict(opts, cuda=_buffers(kind, memory))) as r:  # cached engine
        assert r.engine_cached is True and r.describe()["precision"] == "fp16"
    assert ("build",) not in trt.calls and ("deserialize", b"ENGINE") in trt.calls
    assert ("Builder",) not in trt.calls  # no throw-away Builder inflating cold_start_ms


def test_cached_engine_keeps_the_precision_it_was_built_with(tmp_path):
    """A GPU without fast FP16 builds fp32; the cache says fp32 later without asking a Builder."""
    from edgekit.runtime.tensorrt import TrtRunner
    trt, memory = FakeTrt("8.2.1.8", fast_fp16=False), Memory()
    opts = dict(trt_module=trt, cache_dir=str(tmp_path))
    with TrtRunner(_tiny(), cuda=_buffers("pycuda", memory), **opts) as r:
        assert r.precision == "fp32" and ("set_flag", "FP16") not in trt.calls
    with TrtRunner(_tiny(), cuda=_buffers("pycuda", memory), **opts) as r:
        assert r.engine_cached and r.precision == "fp32"
    # an engine whose precision record is lost is rebuilt, never guessed
    (tmp_path / (r.engine_path.rsplit("/", 1)[1] + ".json")).unlink()
    trt.calls[:] = []
    with TrtRunner(_tiny(), cuda=_buffers("pycuda", memory), **opts) as r:
        assert not r.engine_cached and ("build",) in trt.calls


def test_pageable_host_memory_would_be_caught():
    """The stand-in's rule bites: an async copy from a plain numpy array is refused."""
    memory = Memory()
    drv = FakeDriver(memory)
    dev = drv.mem_alloc(48)
    with pytest.raises(AssertionError, match="PAGEABLE"):
        drv.memcpy_htod_async(dev, np.ones((3, 4), np.float32), drv.Stream())
    drv.memcpy_htod_async(dev, drv.pagelocked_empty((3, 4), np.float32), drv.Stream())


@pytest.mark.parametrize("version", ["7.1.3.0", "9.2.0.5", "11.0.0.1", "banana"])
def test_unknown_tensorrt_majors_are_refused(tmp_path, version):
    from edgekit.runtime.tensorrt import TrtRunner
    trt = FakeTrt(version if version[0].isdigit() else "0.0")
    trt.__version__ = version
    with pytest.raises(MissingDependency) as e:
        TrtRunner(_tiny(), trt_module=trt, cuda=_buffers("pycuda", Memory()),
                  cache_dir=str(tmp_path)).load()
    assert e.value.exit_code == 2
    assert "TensorRT {} is not supported".format(version) in str(e.value)
    assert "8.0.1" in str(e.value) and "8.2.1" in str(e.value) and "10.x" in str(e.value)
    assert not trt.calls and not list(tmp_path.iterdir())  # refused before any work


def test_parser_errors_are_listed_and_nothing_cached(tmp_path):
    from edgekit.runtime.tensorrt import TrtRunner
    trt = FakeTrt("8.2.1.8", parse_errors=["node 3 (NonZero): unsupported", "node 7: bad shape"])
    with pytest.raises(EdgekitError) as e:
        TrtRunner(_tiny(), trt_module=trt, cuda=_buffers("pycuda", Memory()),
                  cache_dir=str(tmp_path)).load()
    assert "NonZero" in str(e.value) and "node 7" in str(e.value)
    assert not list(tmp_path.iterdir())


# -- pycuda import / CUDA start-up failures: exit 2, never a traceback -------------------------------

def _pycuda_package(monkeypatch, autoinit_error=None, driver_error=None):
    """Install a 'pycuda' package whose driver/autoinit imports fail the way the real ones do."""
    pkg = types.ModuleType("pycuda")
    pkg.__path__ = []
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    for name in ("pycuda.driver", "pycuda.autoinit"):
        monkeypatch.delitem(sys.modules, name, raising=False)

    class Finder(object):
        def find_module(self, fullname, path=None):
            return self if fullname in ("pycuda.driver", "pycuda.autoinit") else None

        def find_spec(self, fullname, path, target=None):
            import importlib.util
            if fullname in ("pycuda.driver", "pycuda.autoinit"):
                return importlib.util.spec_from_loader(fullname, self)
            return None

        def create_module(self, spec):
            return None

        def exec_module(self, module):
            if module.__name__ == "pycuda.driver" and driver_error:
                raise driver_error
            if module.__name__ == "pycuda.autoinit" and autoinit_error:
                raise autoinit_error

    monkeypatch.setattr(sys, "meta_path", [Finder()] + sys.meta_path)


@pytest.mark.parametrize("where,error", [
    ("driver", ImportError("libcuda.so.1: cannot open shared object file: No such file or directory")),
    ("autoinit", RuntimeError("cuInit failed: no CUDA-capable device is detected")),
    ("autoinit", RuntimeError("cuInit failed: unknown error")),
])
def test_cuda_start_up_failures_are_hardware_missing(monkeypatch, where, error):
    from edgekit.runtime.tensorrt import PyCudaBuffers
    _pycuda_package(monkeypatch, **{where + "_error": error})
    with pytest.raises(HardwareMissing) as e:
        PyCudaBuffers()
    msg = str(e.value)
    assert e.value.exit_code == 2 and str(error).split(":")[0] in msg
    assert "--runtime nvidia" in msg and "group video" in msg


def test_no_pycuda_on_the_nano_does_not_suggest_cuda_python(monkeypatch):
    from edgekit.runtime.tensorrt import cuda_buffers
    monkeypatch.setitem(sys.modules, "pycuda", None)  # import pycuda -> ImportError
    monkeypatch.setitem(sys.modules, "cuda", None)
    with pytest.raises(MissingDependency) as e:
        cuda_buffers()
    assert "pip3 install pycuda" in str(e.value)
    assert "not on the Nano" in str(e.value)


def test_trt_api_table():
    from edgekit.runtime.tensorrt import trt_api
    assert [trt_api(v) for v in ("8.0.1.6", "8.2.1.8", "8.6.1", "10.0.1", "10.13.0")] == \
        ["bindings"] * 3 + ["tensors"] * 2


# -- issue 30: each fix has a test that fails when it is reverted ---------------------------------

@pytest.mark.parametrize("version,has_bindings,has_tensors", [
    ("8.0.1.6", True, False), ("8.2.1.8", True, False), ("8.6.1.6", True, True),
    ("10.3.0.26", False, True)])
def test_the_fake_exposes_one_versions_api(tmp_path, monkeypatch, version, has_bindings,
                                           has_tensors):
    """No named-tensor API before 8.5, no bindings API in 10.x: a runner that drove the other
    family for this version would fail here (checked by forcing it to)."""
    from edgekit.runtime import tensorrt as rt
    trt = FakeTrt(version)
    with rt.TrtRunner(_tiny(), trt_module=trt, cuda=_buffers("pycuda", Memory()),
                      cache_dir=str(tmp_path)) as r:
        assert hasattr(r.engine, "num_bindings") == has_bindings
        assert hasattr(r.engine, "num_io_tensors") == has_tensors
        assert hasattr(r.context, "execute_async_v2") == has_bindings
        assert hasattr(r.context, "execute_async_v3") == has_tensors
        r.infer(np.ones((2, 4), np.float32))
    if has_bindings and has_tensors:
        return
    wrong = "tensors" if has_bindings else "bindings"
    monkeypatch.setattr(rt, "trt_api", lambda v: wrong)
    with pytest.raises(AttributeError):
        with rt.TrtRunner(_tiny(), trt_module=FakeTrt(version), cuda=_buffers("pycuda", Memory()),
                          cache_dir=str(tmp_path)) as r:
            r.infer(np.ones((2, 4), np.float32))


def test_engine_cache_key_has_the_opt_batch_and_the_workspace(tmp_path):
    """A --batch 8 run after a --batch 1 run builds an engine tuned for 8 (profile opt 8); a
    new workspace builds again; the same options load the cached engine."""
    from edgekit.runtime.tensorrt import TrtRunner
    trt, memory = FakeTrt("8.2.1.8"), Memory()

    def load(**opts):
        trt.calls[:] = []
        with TrtRunner(_tiny(), trt_module=trt, cuda=_buffers("pycuda", memory),
                       cache_dir=str(tmp_path), max_batch=16, **opts) as r:
            return r.engine_cached, r.engine_path
    assert load(batch=1)[0] is False
    cached, path8 = load(batch=8)
    assert cached is False and ("profile", ("x", (1, 4), (8, 4), (16, 4))) in trt.calls
    assert load(batch=8)[0] is True and load(batch=1)[0] is True
    cached, path_ws = load(batch=8, workspace=512 << 20)
    assert cached is False and ("config.max_workspace_size", 512 << 20) in trt.calls
    assert path_ws != path8 and "opt8" in path8 and "ws{}".format(512 << 20) in path_ws


def test_engine_build_is_recorded_apart_from_the_cold_start(tmp_path):
    """The first run builds (engine_cached false, engine_build_ms >= the build's 0.4 s) and its
    cold_start_ms leaves the build out; the second loads the cached engine."""
    from edgekit.runtime.bench import measure
    from edgekit.runtime.tensorrt import TrtRunner
    trt, memory = FakeTrt("8.2.1.8", build_seconds=0.4), Memory()
    x = np.ones((4, 4), np.float32)
    opts = dict(trt_module=trt, cache_dir=str(tmp_path))
    first = measure(TrtRunner(_tiny(), cuda=_buffers("pycuda", memory), **opts), x, iterations=5)
    assert first["engine_cached"] is False and first["engine_build_ms"] >= 400
    assert first["cold_start_ms"] < 400  # load + first inference, without the build
    second = measure(TrtRunner(_tiny(), cuda=_buffers("pycuda", memory), **opts), x, iterations=5)
    assert second["engine_cached"] is True and second["engine_build_ms"] is None
    assert second["cold_start_ms"] < 400


@pytest.mark.parametrize("version", ["8.0.1.6", "10.3.0.26"])
def test_out_of_profile_shapes_are_refused_clearly(tmp_path, version):
    from edgekit.runtime.tensorrt import TrtRunner
    trt = FakeTrt(version)
    with TrtRunner(_tiny(), trt_module=trt, cuda=_buffers("pycuda", Memory()),
                   cache_dir=str(tmp_path), max_batch=16) as r:
        with pytest.raises(EdgekitError) as e:
            r.infer(np.ones((20, 4), np.float32))
        assert "outside the TensorRT engine's optimisation profile (batch 1..16)" in str(e.value)
        assert "--max-batch 20" in str(e.value)
        names = [c[0] for c in trt.calls]
        assert "execute_async_v2" not in names and "execute_async_v3" not in names
        assert r.infer(np.ones((16, 4), np.float32))["y"].shape == (16, 3)


def test_close_drops_context_engine_and_runtime_in_order(tmp_path):
    """pycuda.autoinit pops the CUDA context at exit: the TensorRT objects must be gone by then
    (close() destroys context, engine, runtime, in that order)."""
    from edgekit.runtime.tensorrt import TrtRunner
    trt = FakeTrt("8.2.1.8")
    r = TrtRunner(_tiny(), trt_module=trt, cuda=_buffers("pycuda", Memory()),
                  cache_dir=str(tmp_path)).load()
    r.infer(np.ones((1, 4), np.float32))
    r.close()
    dels = [c[1] for c in trt.calls if c[0] == "del"]
    assert dels == ["context", "engine", "runtime"]


class FailingCudart(FakeCudart):
    """cuda-python on a machine whose CUDA cannot start: every call returns an error code."""

    def cudaStreamCreate(self):
        return (100,)  # cudaErrorNoDevice


def test_cuda_python_failures_exit_2_like_pycuda():
    from edgekit.runtime.tensorrt import CudaPythonBuffers
    with pytest.raises(HardwareMissing) as e:
        CudaPythonBuffers(FailingCudart(Memory()))
    assert e.value.exit_code == 2 and "cudaStreamCreate failed: 100" in str(e.value)
    assert "--runtime nvidia" in str(e.value)
