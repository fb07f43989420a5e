"""The one build description of fusedconv's C++/CUDA library: sources, include paths, flags and
target architectures. The JIT build (``_build.py``), ``setup.py``, CMake (``python -m
fusedconv.build_config --cmake``) and the KernelBench exporter all read it; nothing else lists
sources or flags. Imports nothing but the standard library, so setup.py and CMake can run it
before torch is importable.

Paths are relative to the source root (the repository's ``csrc/``, or ``fusedconv/csrc`` in an
installed wheel).
"""

import sys

# Quoted includes resolve against these, in order (after the including file's own directory).
INCLUDE_DIRS = ("include", "cuda", "torch")

# The operator library: schema, validation, autograd and CPU kernels; always built.
CPU_SOURCES = ("torch/ops.cpp", "cpu/conv_cpu.cpp")
# CUDA registrations of the operators (host C++ with ATen; no device code).
CUDA_HOST_SOURCES = ("torch/ops_cuda.cpp",)
# Torch-free CUDA translation units, one per kernel family role. Each is its own compiler job in
# the JIT and setup.py builds, whose object files are named by the source's base name alone, so
# base names are unique. The KernelBench export concatenates them into one unit, so names at
# namespace scope must not clash across files either (each family has its own namespace).
CUDA_KERNEL_SOURCES = (
    "cuda/common/plan_policy.cu",
    "cuda/forward/forward_plan.cu",
    "cuda/forward/activation_inplace.cu",
    "cuda/forward/small_problem.cu",
    "cuda/forward/depthwise.cu",
    "cuda/forward/grouped.cu",
    "cuda/forward/channels_last_gemm.cu",
    "cuda/forward/mma_sync/mma_sync_launch.cu",
    "cuda/forward/wgmma/wgmma_plan.cu",
    "cuda/forward/wgmma/wgmma_launch.cu",
    "cuda/backward/backward_plan.cu",
    "cuda/backward/dgrad.cu",
    "cuda/backward/wgrad.cu",
    "cuda/backward/activation_grad.cu",
    "cuda/backward/activation_bias_grad.cu",
    "cuda/backward/depthwise_backward.cu",
    "cuda/backward/depthwise_backward_channels_last.cu",
    "cuda/backward/small_backward.cu",
    "cuda/backward/small_backward_bands.cu",
)
# The sources CMake's C++ test build links (torch-free).
CPP_TEST_LIBRARY_SOURCES = ("cpu/conv_cpu.cpp",)

CXX_STANDARD = "c++17"
CXX_FLAGS = ("-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math")
# Architecture flags come from cuda_arch_flags(), never from here.
# -lineinfo: device code keeps its source lines (ncu's and compute-sanitizer's reports name them);
# the generated code is the same.
NVCC_FLAGS = ("-O3", "-lineinfo")
LD_FLAGS = ("-fopenmp",)
# Tells the host code that the library holds sm_90a code (the wgmma forward).
SM90A_DEFINE = "-DFUSEDCONV_HAS_SM90A=1"

# Compute capabilities an ahead-of-time build (setup.py, CMake's compile check, the KernelBench
# export, JIT on an unknown device) targets: sm_80 machine code plus compute_80 PTX for newer
# GPUs, and sm_90a for Hopper, whose wgmma forward needs the arch-specific target. Plain sm_90 is
# left out so that a 9.0 device has exactly one cubin to pick.
PORTABLE_CAPABILITIES = ((8, 0), (9, 0))
# The oldest architecture the kernels compile for (mma.sync TF32, cp.async, DMMA).
MIN_CAPABILITY = (8, 0)


def _gencode(capability, ptx=False):
    major, minor = capability
    suffix = "a" if (major, minor) == (9, 0) else ""
    arch = "%d%d%s" % (major, minor, suffix)
    code = "compute_%s" % arch if ptx else "sm_%s" % arch
    return "-gencode=arch=compute_%s,code=%s" % (arch, code)


def cuda_arch_flags(capabilities=None):
    """nvcc flags for `capabilities` ((major, minor) pairs: the GPUs a JIT build finds), or for
    PORTABLE_CAPABILITIES when None. 9.0 always means sm_90a; a device older than
    MIN_CAPABILITY is built for MIN_CAPABILITY (its launches then fail with a CUDA error, as
    before). Adds SM90A_DEFINE where sm_90a code is built."""
    if capabilities is None:
        flags = [_gencode((8, 0)), _gencode((8, 0), ptx=True), _gencode((9, 0))]
        return flags + [SM90A_DEFINE]
    wanted = sorted({max(tuple(c), MIN_CAPABILITY) for c in capabilities})
    flags = [_gencode(c) for c in wanted]
    if (9, 0) in wanted:
        flags.append(SM90A_DEFINE)
    return flags


def _cmake_list(name, values):
    return "set(%s %s)" % (name, " ".join('"%s"' % v for v in values))


def cmake_script():
    """The description as CMake `set()` commands (CMakeLists.txt includes their output)."""
    return "\n".join([
        _cmake_list("FUSEDCONV_INCLUDE_DIRS", INCLUDE_DIRS),
        _cmake_list("FUSEDCONV_CUDA_KERNEL_SOURCES", CUDA_KERNEL_SOURCES),
        _cmake_list("FUSEDCONV_CPP_TEST_LIBRARY_SOURCES", CPP_TEST_LIBRARY_SOURCES),
        _cmake_list("FUSEDCONV_NVCC_FLAGS", NVCC_FLAGS + tuple(cuda_arch_flags())),
    ]) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--cmake"]:
        sys.exit("usage: python -m fusedconv.build_config --cmake")
    sys.stdout.write(cmake_script())
