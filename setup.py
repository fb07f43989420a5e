"""Ahead-of-time build: `pip install --no-build-isolation .` compiles the sources that
fusedconv/build_config.py lists (the JIT build's list) into fusedconv/_C*.so, which fusedconv
loads instead of JIT-building. CUDA sources are built when a CUDA toolkit is found
(FUSEDCONV_BUILD_CUDA=0 forces CPU-only), for sm_80 (+ PTX) and sm_90a."""

import importlib.util
import os

from setuptools import setup
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


def _extension():
    config = _build_config()
    include_dirs = [os.path.join(ROOT, CSRC, d) for d in config.INCLUDE_DIRS]
    cxx_flags = list(config.CXX_FLAGS)
    with_cuda = (os.environ.get("FUSEDCONV_BUILD_CUDA", "1") != "0"
                 and cpp_extension.CUDA_HOME is not None)
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


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(no_python_abi_suffix=True)},
)
