"""Rewrites the CUDA sources (.cu and .cuh) under a directory as host C++ for tests/emulation,
into a mirror tree: each `kernel<<<grid, block, shared, stream>>>(args);` becomes
`::emulation::launch(grid, block, shared, stream, kernel, args);`, `extern __shared__ T name[];`
a pointer to the emulated CTA's dynamic buffer, and `__shared__ T name[A]...;` (arrays or
scalars) a reference to the CTA's instance of it. Headers (.h) need nothing and are not copied.
Usage: emulate_source.py SOURCE_DIR OUTPUT_DIR"""

import os
import re
import sys

LAUNCH = re.compile(r"([^;{}]*?)\s*<<<(.*?)>>>\s*\((.*?)\);", re.DOTALL)
DYNAMIC_SHARED = re.compile(
    r"extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?(\w+(?:\s+\w+)*?)\s+(\w+)\s*\[\s*\]\s*;")
STATIC_SHARED = re.compile(r"__shared__\s+([\w:<>]+)\s+(\w+)((?:\s*\[[^\]]+\])*)\s*;")
PTX_INCLUDE = re.compile(r'#include\s+"common/ptx\.cuh"')
TF32_ROUNDING = re.compile(
    r'asm\("cvt\.rna\.tf32\.f32 %0, %1;"\s*:\s*"=r"\((\w+)\)\s*:\s*"f"\((\w+)\)\);')


def emulate(source):
    # Inline PTX: common/ptx.cuh's wrappers and the TF32 rounding by their host forms.
    source = PTX_INCLUDE.sub('#include "ptx_emulated.h"', source)
    source = TF32_ROUNDING.sub(r"\1 = ::emulation::tf32_rna(\2);", source)
    source = DYNAMIC_SHARED.sub(
        r"\1* \2 = static_cast<\1*>(::emulation::dynamic_shared());", source)
    # One array per declaration (the lambda's type is the key) per CTA.
    source = STATIC_SHARED.sub(
        r"auto& \2 = ::emulation::static_shared<\1\3>([] {});", source)
    source = LAUNCH.sub(lambda m: "\n::emulation::launch(%s, %s, %s);" % (
        m.group(2), m.group(1).strip(), m.group(3)), source)
    return '#include "emulation.h"\n' + source


def main(source_dir, output_dir):
    for root, _, files in os.walk(source_dir):
        for name in files:
            if not name.endswith((".cu", ".cuh")):
                continue
            path = os.path.join(root, name)
            target = os.path.join(output_dir, os.path.relpath(path, source_dir))
            if name.endswith(".cu"):
                target = target[:-3] + ".cpp"
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(path) as f:
                text = emulate(f.read())
            # Rewrite only what changed, so the build does not recompile untouched units.
            if os.path.exists(target):
                with open(target) as f:
                    if f.read() == text:
                        continue
            with open(target, "w") as f:
                f.write(text)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
