"""Rewrites a CUDA-core kernel source (.cu) as host C++ for tests/emulation: each
`kernel<<<grid, block, shared, stream>>>(args);` becomes `::emulation::launch(grid, block,
shared, stream, kernel, args);` and `extern __shared__ T name[];` a pointer to the emulated
CTA's buffer. Usage: emulate_source.py SOURCE.cu OUTPUT.cpp"""

import re
import sys

LAUNCH = re.compile(r"([^;{}]*?)\s*<<<(.*?)>>>\s*\((.*?)\);", re.DOTALL)
SHARED = re.compile(r"extern\s+__shared__\s+(\w+)\s+(\w+)\s*\[\s*\]\s*;")


def emulate(source):
    source = SHARED.sub(r"\1* \2 = static_cast<\1*>(::emulation::dynamic_shared());", source)
    count = [0]

    def launch(match):
        count[0] += 1
        kernel = match.group(1).strip()
        return "\n::emulation::launch(%s, %s, %s);" % (match.group(2), kernel, match.group(3))

    source = LAUNCH.sub(launch, source)
    if count[0] == 0:
        raise SystemExit("emulate_source.py: no kernel launch found")
    return '#include "emulation.h"\n' + source


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        text = f.read()
    with open(sys.argv[2], "w") as f:
        f.write(emulate(text))
