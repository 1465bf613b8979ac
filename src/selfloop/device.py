"""Where models run (``run.device``): 'auto' made concrete, 'cuda' checked before any work,
and the GPU settings that make a replay repeat itself."""

from __future__ import annotations

import os

from selfloop.config import ConfigError


def resolve_device(name: str) -> str:
    """'auto' made concrete (so params.json says where the run ran), and 'cuda' checked
    before any work starts. torch is imported only when the answer depends on it."""
    if name == "cpu":
        return name
    import torch

    available = torch.cuda.is_available()
    if name == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise ConfigError(f"run.device is {name!r}, but torch {torch.__version__} sees no CUDA device "
                          "(a CPU-only build, no driver, or CUDA_VISIBLE_DEVICES empty); use run.device=cpu")
    return name


def deterministic_gpu() -> None:
    """Deterministic GPU kernels, so that a replay or a resume on the same GPU computes the
    same bits (on CPU they are deterministic already): cuBLAS needs a fixed workspace, set
    before its first use in the process, and torch must choose deterministic algorithms
    (``warn_only``: an operation that has none warns instead of stopping the run)."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
