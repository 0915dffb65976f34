"""Run an exported ONNX graph on ONNX Runtime or OpenVINO as a callable {input name: tensor} -> {output name: tensor}.

The callable takes and returns torch tensors (on the device they came from), so test.py and the benchmark use a
runtime exactly as they use the torch network. Thread counts follow torch's (`torch.get_num_threads()`, which
OMP_NUM_THREADS sets), so a comparison gives every backend the same cores.

Precisions: `fp32` everywhere; `bf16` on OpenVINO (INFERENCE_PRECISION_HINT), refused on a CPU without native
bf16, where it would run a slow emulation.
"""
import numpy as np
import torch

from util.export.backends import RUNTIMES, precision_problem
from util.process.devices import cpu_has_native_bf16


class RuntimeUnavailable(ValueError):
    """A backend or precision this machine or graph cannot run as asked; the message says what to pass instead."""
    refusal = True


def _to_numpy(tensor):
    return np.ascontiguousarray(tensor.detach().to("cpu", torch.float32).numpy())


class OnnxRuntimeRunner:
    """An ONNX Runtime session with all graph optimisations on."""

    def __init__(self, path, threads=None, profile_prefix=None, spinning=True):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if not spinning:  # idle threads sleep instead of busy-waiting, so other work in the process gets the cores
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, feeds):
        device = next(iter(feeds.values())).device
        arrays = self.session.run(self.output_names, {k: _to_numpy(v) for k, v in feeds.items()})
        return {name: torch.from_numpy(a).to(device) for name, a in zip(self.output_names, arrays)}

    def end_profiling(self):
        """The path of the profile JSON (with profile_prefix)."""
        return self.session.end_profiling()


class OpenVinoRunner:
    """An OpenVINO CPU model compiled for latency, in fp32 or bf16 (`precision`)."""

    def __init__(self, path, precision="fp32", threads=None, config=None):
        import openvino as ov
        if precision == "bf16" and not cpu_has_native_bf16():
            raise RuntimeUnavailable("--precision bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX); this one has none, "
                             "and an emulated bf16 is slower than fp32. Use --precision fp32")
        core = ov.Core()
        settings = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                    "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads())}
        settings.update(config or {})
        self.compiled = core.compile_model(core.read_model(path), "CPU", settings)
        self.request = self.compiled.create_infer_request()
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]

    def __call__(self, feeds):
        device = next(iter(feeds.values())).device
        results = self.request.infer({k: _to_numpy(v) for k, v in feeds.items()})
        return {name: torch.from_numpy(np.array(results[output])).to(device)
                for name, output in zip(self.output_names, self.compiled.outputs)}


def open_runner(path, backend, precision="fp32", threads=None):
    """The runner of `backend` (one of util.export.backends.RUNTIMES) for the ONNX file `path`."""
    if backend not in RUNTIMES:
        raise RuntimeUnavailable(f"unknown runtime backend {backend!r}; choose one of: {', '.join(RUNTIMES)}")
    problem = precision_problem(backend, precision)
    if problem:
        raise RuntimeUnavailable(problem)
    if backend == "onnxruntime":
        return OnnxRuntimeRunner(path, threads=threads)
    return OpenVinoRunner(path, precision=precision, threads=threads)
