"""The backends that run a model's test-time generator, with the precisions each runs: the one list that
test.py's options (`--backend`, `--precision`), the runtime opener, `--backend auto` and the benchmark read.

`torch` runs the model's own networks (fp32; mixed precision through `--amp`); the others run the run's exported
ONNX graph (`python -m scripts.tools.export`). bf16 on OpenVINO needs a CPU with native bf16.
"""
from collections import namedtuple

# precisions: what --precision takes with this backend; mixed: what torch's --amp adds on top of fp32.
Backend = namedtuple("Backend", "name description precisions mixed runs_export")

BACKENDS = {backend.name: backend for backend in (
    Backend("torch", "PyTorch eager", ("fp32",), ("bf16", "fp16"), False),
    Backend("onnxruntime", "ONNX Runtime", ("fp32",), (), True),
    Backend("openvino", "OpenVINO", ("fp32", "bf16"), (), True),
)}
AUTO = "auto"  # the fastest fp32 backend, timed on one image before the test
BACKEND_CHOICES = (*BACKENDS, AUTO)
RUNTIMES = tuple(name for name, backend in BACKENDS.items() if backend.runs_export)
PRECISIONS = tuple(dict.fromkeys(p for backend in BACKENDS.values() for p in backend.precisions))


def precision_problem(backend, precision):
    """Why `--backend backend --precision precision` cannot run ('' when it can)."""
    offered = ("fp32",) if backend == AUTO else BACKENDS[backend].precisions
    if precision in offered:
        return ""
    takers = [name for name, b in BACKENDS.items() if precision in b.precisions]
    return (f"--precision {precision} needs --backend {' or '.join(takers) or '(none)'}; --backend {backend} runs "
            f"{', '.join(offered)}")
