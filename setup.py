"""Ahead-of-time build: `pip install --no-build-isolation .` compiles the sources that
fusedconv/build_config.py lists (the JIT build's list) into fusedconv/_C*.so, which fusedconv
loads instead of JIT-building. CUDA sources are built when a CUDA toolkit that matches torch's
CUDA version is found, for sm_80 (+ PTX) and sm_90a; otherwise the CPU operators only, saying
why. FUSEDCONV_BUILD_CUDA=0 forces CPU-only, =1 insists on CUDA (and fails with torch's error
where it cannot). The C++/CUDA sources also ship inside the package (fusedconv/csrc), which the
KernelBench exporter reads."""

import importlib.util
import os
import shutil
import subprocess
import warnings

import setuptools
import torch
from setuptools import setup
from setuptools.command.build_py import build_py
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = "csrc"


def _build_config():
    # By path: importing the fusedconv package would import what is not built yet.
    path = os.path.join(ROOT, "fusedconv", "build_config.py")
    spec = importlib.util.spec_from_file_location("fusedconv_build_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _require_wheel():
    # Without build isolation pip uses the environment's setuptools; before 70.1 its
    # bdist_wheel lives in the separate 'wheel' package, and pip's own error does not say so.
    if importlib.util.find_spec("wheel") is None and \
            tuple(int(p) for p in setuptools.__version__.split(".")[:2]) < (70, 1):
        raise SystemExit("fusedconv: building a wheel with setuptools %s needs the 'wheel' "
                         "package: pip install wheel (or build with isolation)"
                         % setuptools.__version__)


def _toolkit_version():
    """(major, minor) of the CUDA toolkit torch's build machinery found, or None."""
    if cpp_extension.CUDA_HOME is None:
        return None
    try:
        output = subprocess.check_output([os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc"),
                                          "--version"], text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    release = output.split("release ")[-1].split(",")[0]
    return tuple(int(p) for p in release.split(".")[:2])


def _with_cuda():
    """Whether to build the CUDA sources; a reason where not (FUSEDCONV_BUILD_CUDA overrides)."""
    choice = os.environ.get("FUSEDCONV_BUILD_CUDA", "")
    if choice == "0":
        return False, None
    if choice == "1":
        return True, None  # torch's own checks fail loudly where this cannot work
    if torch.version.cuda is None:
        return False, "this torch is built without CUDA"
    toolkit = _toolkit_version()
    if toolkit is None:
        return False, "no CUDA toolkit (nvcc) found; set CUDA_HOME to one"
    torch_cuda = tuple(int(p) for p in torch.version.cuda.split(".")[:2])
    if toolkit[0] != torch_cuda[0]:
        return False, ("the CUDA toolkit at %s is %d.%d but torch was built with CUDA %s; "
                       "install a %d.x toolkit and point CUDA_HOME at it"
                       % (cpp_extension.CUDA_HOME, toolkit[0], toolkit[1], torch.version.cuda,
                          torch_cuda[0]))
    return True, None


class BuildPyWithSources(build_py):
    """Copies csrc/ into the package as fusedconv/csrc (the exporter and the JIT read it)."""

    def run(self):
        super().run()
        target = os.path.join(self.build_lib, "fusedconv", "csrc")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(os.path.join(ROOT, CSRC), target)


def _extension():
    config = _build_config()
    include_dirs = [os.path.join(ROOT, CSRC, d) for d in config.INCLUDE_DIRS]
    cxx_flags = list(config.CXX_FLAGS)
    with_cuda, reason = _with_cuda()
    if reason is not None:
        warnings.warn("fusedconv: building the CPU operators only: %s (FUSEDCONV_BUILD_CUDA=1 "
                      "insists on CUDA, =0 silences this)" % reason)
    sources = config.CPU_SOURCES
    if with_cuda:
        sources = sources + config.CUDA_HOST_SOURCES + config.CUDA_KERNEL_SOURCES
        # Explicit -gencode flags: torch then adds none of its own (TORCH_CUDA_ARCH_LIST).
        nvcc_flags = list(config.NVCC_FLAGS) + config.cuda_arch_flags()
        return cpp_extension.CUDAExtension(
            name="fusedconv._C",
            sources=[os.path.join(CSRC, s) for s in sources],
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
            extra_link_args=list(config.LD_FLAGS))
    return cpp_extension.CppExtension(
        name="fusedconv._C",
        sources=[os.path.join(CSRC, s) for s in sources],
        include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=list(config.LD_FLAGS))


_require_wheel()
setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(no_python_abi_suffix=True),
              "build_py": BuildPyWithSources},
)
