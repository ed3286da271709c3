"""What the benchmarks record about the CPU they ran on (read from /proc/cpuinfo)."""

from __future__ import annotations

import platform
from pathlib import Path


def _cpuinfo_field(name: str) -> str | None:
    """The first ``name : value`` line's value in /proc/cpuinfo, None where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == name:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's marketing name ("Intel(R) Xeon(R) Processor"), else platform's guess."""
    return _cpuinfo_field("model name") or platform.processor()


def cpu_flags() -> set[str]:
    """The instruction-set flags the kernel reports (``avx512_bf16``, ``amx_tile``...)."""
    return set((_cpuinfo_field("flags") or "").split())
