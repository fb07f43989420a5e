"""Ahead-of-time build: `pip install .` compiles the same csrc/ sources that fusedconv/_build.py
would compile just in time into fusedconv/_C*.so, which fusedconv loads instead of JIT-building.
CUDA sources are built when a CUDA toolkit is found (FUSEDCONV_BUILD_CUDA=0 forces CPU-only)."""

import glob
import os

from setuptools import setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = "csrc"
# Mirrors fusedconv/_build.py (the JIT path): sm_80 + compute_80 PTX from the arch list, sm_90a
# for the wgmma forward kernel from explicit flags.
CUDA_ARCH_LIST = "8.0+PTX"
NVCC_FLAGS = ["-O3", "-gencode=arch=compute_90a,code=sm_90a", "-DFUSEDCONV_HAS_SM90A=1"]


def _relative(*patterns):
    return sorted(p for pattern in patterns for p in glob.glob(os.path.join(CSRC, pattern)))


def _extension():
    # Flags and source lists mirror fusedconv/_build.py, the JIT path.
    include_dirs = [os.path.join(ROOT, CSRC, "include"), os.path.join(ROOT, CSRC, "torch")]
    cxx_flags = ["-O3", "-fopenmp"]
    with_cuda = (os.environ.get("FUSEDCONV_BUILD_CUDA", "1") != "0"
                 and cpp_extension.CUDA_HOME is not None)
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", CUDA_ARCH_LIST)
        return cpp_extension.CUDAExtension(
            name="fusedconv._C",
            sources=_relative("torch/ops.cpp", "torch/ops_cuda.cpp", "cpu/*.cpp", "kernels/*.cu"),
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx_flags, "nvcc": NVCC_FLAGS},
            extra_link_args=["-fopenmp"])
    return cpp_extension.CppExtension(
        name="fusedconv._C",
        sources=_relative("torch/ops.cpp", "cpu/*.cpp"),
        include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"])


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(no_python_abi_suffix=True)},
)
