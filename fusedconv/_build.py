"""The one place that compiles or loads fusedconv's C++/CUDA library at run time.

What is built (sources, include paths, flags) is ``build_config``. A JIT build compiles each
source in its own compiler job, in parallel (``torch.utils.cpp_extension.load`` with ninja), for
the architectures of the GPUs present. Builds are cached under a key of the sources' contents,
the flags, the architectures and the torch version: a cached load is one ``dlopen``, without
torch's extension machinery. ``pip install .`` builds the same sources ahead of time into
``fusedconv/_C*.so``, which is loaded instead when present. Either way loading registers the
``torch.ops.fusedconv`` operators.
"""

import contextlib
import functools
import glob
import hashlib
import logging
import os
import threading
import time
from pathlib import Path

import torch

from fusedconv import build_config

_LOG = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
EXTENSION_NAME = "fusedconv_ext"
_BUILD_LOCK = threading.Lock()


def source_root():
    """Directory holding include/, cuda/, cpu/ and torch/ (the repository's csrc/)."""
    for candidate in (PACKAGE_DIR.parent / "csrc", PACKAGE_DIR / "csrc"):
        if (candidate / build_config.CPU_SOURCES[0]).is_file():
            return candidate
    raise FileNotFoundError(
        "fusedconv: C++/CUDA sources not found next to the package (looked for csrc/ in %s and %s)"
        % (PACKAGE_DIR.parent, PACKAGE_DIR))


def _prebuilt_library():
    """The ahead-of-time build from `pip install .`, if this installation has one."""
    matches = sorted(glob.glob(str(PACKAGE_DIR / "_C*.so")))
    return matches[0] if matches else None


def _device_capabilities():
    return sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})


def _extensions_root():
    # torch's own default parent (TORCH_EXTENSIONS_DIR, else the user cache), one folder per build.
    configured = os.environ.get("TORCH_EXTENSIONS_DIR")
    if configured:
        return Path(configured)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "torch_extensions"


class _BuildPlan:
    """One build: its sources, flags and the cache folder named by their hash."""

    def __init__(self, root, with_cuda):
        self.root = root
        self.with_cuda = with_cuda
        sources = build_config.CPU_SOURCES
        self.nvcc_flags = []
        if with_cuda:
            sources = sources + build_config.CUDA_HOST_SOURCES + build_config.CUDA_KERNEL_SOURCES
            self.nvcc_flags = (list(build_config.NVCC_FLAGS)
                               + build_config.cuda_arch_flags(_device_capabilities()))
        self.sources = [str(root / path) for path in sources]
        self.include_dirs = [str(root / path) for path in build_config.INCLUDE_DIRS]
        self.name = EXTENSION_NAME + ("_cuda" if with_cuda else "_cpu")
        self.directory = _extensions_root() / ("%s_%s" % (self.name, self._key()))
        self.library = self.directory / (self.name + ".so")

    def _key(self):
        digest = hashlib.sha256()
        for value in (torch.__version__, str(torch.version.cuda), self.nvcc_flags,
                      build_config.CXX_FLAGS, build_config.LD_FLAGS, self.sources):
            digest.update(repr(value).encode())
        # Every file of the tree, headers included: a header change must rebuild.
        for path in sorted(self.root.rglob("*")):
            if path.is_file():
                digest.update(path.relative_to(self.root).as_posix().encode())
                digest.update(path.read_bytes())
        return digest.hexdigest()[:16]


@contextlib.contextmanager
def _only_our_arch_flags(cpp_extension):
    # torch's JIT adds -gencode flags for TORCH_CUDA_ARCH_LIST (or every visible GPU) to ours;
    # the plan's flags already name the architectures, and torch 2.1 cannot name sm_90a.
    original = getattr(cpp_extension, "_get_cuda_arch_flags", None)
    if original is not None:
        cpp_extension._get_cuda_arch_flags = lambda cflags=None: []
    try:
        yield
    finally:
        if original is not None:
            cpp_extension._get_cuda_arch_flags = original


def _compile(plan):
    from torch.utils import cpp_extension  # the build machinery, only when building

    plan.directory.mkdir(parents=True, exist_ok=True)
    with _only_our_arch_flags(cpp_extension):
        cpp_extension.load(
            name=plan.name,
            sources=plan.sources,
            extra_include_paths=plan.include_dirs,
            extra_cflags=list(build_config.CXX_FLAGS),
            extra_cuda_cflags=plan.nvcc_flags if plan.with_cuda else None,
            extra_ldflags=list(build_config.LD_FLAGS),
            build_directory=str(plan.directory),
            with_cuda=plan.with_cuda,
            is_python_module=False,
            verbose=False,
        )


def _cuda_toolkit_found():
    from torch.utils import cpp_extension

    return cpp_extension.CUDA_HOME is not None


@functools.lru_cache(maxsize=None)
def load_extension():
    """Compile (first call) or load (cached) the library; registers torch.ops.fusedconv.*."""
    started = time.perf_counter()
    prebuilt = _prebuilt_library()
    if prebuilt is not None:
        torch.ops.load_library(prebuilt)
        _LOG.info("fusedconv: loaded the prebuilt extension %s", prebuilt)
        return prebuilt

    root = source_root()
    plan = _BuildPlan(root, with_cuda=torch.cuda.is_available())
    with _BUILD_LOCK:
        if not plan.library.is_file() and plan.with_cuda and not _cuda_toolkit_found():
            plan = _BuildPlan(root, with_cuda=False)  # a GPU but no nvcc: the CPU operators
        if plan.library.is_file():
            torch.ops.load_library(str(plan.library))
        else:
            _LOG.info("fusedconv: building the %s extension in %s",
                      "CUDA + CPU" if plan.with_cuda else "CPU-only", plan.directory)
            _compile(plan)  # loads it too
    _LOG.info("fusedconv: extension ready after %.1f s", time.perf_counter() - started)
    return str(plan.library)
