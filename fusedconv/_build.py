"""The one place that compiles fusedconv's C++/CUDA sources.

The sources live in ``csrc/`` and are compiled with
``torch.utils.cpp_extension.load_inline`` (JIT, cached by torch in ``TORCH_EXTENSIONS_DIR``), or
were compiled ahead of time by ``pip install .`` into ``fusedconv/_C*.so``. Either way the
library registers the ``torch.ops.fusedconv`` operators when it is loaded.
"""

import contextlib
import functools
import glob
import logging
import os
import time
from pathlib import Path

import torch
from torch.utils import cpp_extension

_LOG = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
EXTENSION_NAME = "fusedconv_ext"

# Host sources in the order load_inline concatenates them: ops.cpp defines the schema that the
# CUDA registrations in ops_cuda.cpp implement.
_CPU_SOURCES = ("torch/ops.cpp", "cpu/conv_cpu.cpp")
_CUDA_HOST_SOURCES = ("torch/ops_cuda.cpp",)
_CUDA_KERNEL_GLOB = "kernels/*.cu"

# sm_80 machine code plus compute_80 PTX (newer GPUs JIT it), given to torch as
# TORCH_CUDA_ARCH_LIST (unless the user set one): torch 2.1 adds its own -gencode flags for the
# visible GPUs whatever the extra flags say, while the variable steers every torch version alike.
# Hopper gets sm_90a machine code from NVCC_FLAGS in every build: the forward's wgmma kernel needs
# the arch-specific target, and FUSEDCONV_HAS_SM90A tells the host code that it is there. Plain
# sm_90 is left out so that a 9.0 device has exactly one cubin to pick.
CUDA_ARCH_LIST = "8.0+PTX"
CXX_FLAGS = ("-O3", "-fopenmp")
NVCC_FLAGS = ("-O3", "-gencode=arch=compute_90a,code=sm_90a", "-DFUSEDCONV_HAS_SM90A=1")
LD_FLAGS = ("-fopenmp",)


def source_root():
    """Directory holding include/, kernels/, cpu/ and torch/ (the repository's csrc/)."""
    for candidate in (PACKAGE_DIR.parent / "csrc", PACKAGE_DIR / "csrc"):
        if (candidate / "torch" / "ops.cpp").is_file():
            return candidate
    raise FileNotFoundError(
        "fusedconv: C++/CUDA sources not found next to the package (looked for csrc/ in %s and %s)"
        % (PACKAGE_DIR.parent, PACKAGE_DIR))


def cuda_build_enabled():
    """Build the CUDA sources when a GPU is usable and a CUDA toolkit is installed."""
    return torch.cuda.is_available() and cpp_extension.CUDA_HOME is not None


@contextlib.contextmanager
def _cuda_arch_list():
    previous = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if previous is None:
        os.environ["TORCH_CUDA_ARCH_LIST"] = CUDA_ARCH_LIST
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_CUDA_ARCH_LIST", None)


def _read_sources(root, relative_paths):
    return [(root / path).read_text() for path in relative_paths]


def _prebuilt_library():
    """The ahead-of-time build from `pip install .`, if this installation has one."""
    matches = sorted(glob.glob(str(PACKAGE_DIR / "_C*.so")))
    return matches[0] if matches else None


@functools.lru_cache(maxsize=None)
def load_extension():
    """Compile (first call) or load (cached) the extension; registers torch.ops.fusedconv.*."""
    started = time.perf_counter()
    prebuilt = _prebuilt_library()
    if prebuilt is not None:
        torch.ops.load_library(prebuilt)
        _LOG.info("fusedconv: loaded the prebuilt extension %s", prebuilt)
        return prebuilt

    root = source_root()
    with_cuda = cuda_build_enabled()
    cpp_sources = _read_sources(root, _CPU_SOURCES)
    cuda_sources = []
    if with_cuda:
        cpp_sources += _read_sources(root, _CUDA_HOST_SOURCES)
        cuda_sources = [path.read_text() for path in sorted(root.glob(_CUDA_KERNEL_GLOB))]
    _LOG.info("fusedconv: building the %s extension, or loading it from torch's extension cache "
              "(a first build takes about a minute)", "CUDA + CPU" if with_cuda else "CPU-only")
    with _cuda_arch_list():
        path = cpp_extension.load_inline(
            name=EXTENSION_NAME + ("_cuda" if with_cuda else "_cpu"),
            cpp_sources=cpp_sources,
            cuda_sources=cuda_sources or None,
            extra_include_paths=[str(root / "include"), str(root / "torch")],
            extra_cflags=list(CXX_FLAGS),
            extra_cuda_cflags=list(NVCC_FLAGS) if with_cuda else None,
            extra_ldflags=list(LD_FLAGS),
            with_cuda=with_cuda,
            is_python_module=False,
            verbose=False,
        )
    _LOG.info("fusedconv: extension ready after %.1f s", time.perf_counter() - started)
    return path
