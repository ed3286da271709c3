"""What the benchmarks record about the CPU they ran on (read from /proc/cpuinfo).

Results are stored per machine under ``benchmarks/results/<slug>.json``; the slug is the
CPU's model name, its widest vector/matrix extension and its family/model number, because
one marketing name ("AMD EPYC") covers CPUs whose fp32 and bf16 speeds differ by 2x or
more, and a Zen 4 and a Zen 5 even share the extensions.
"""

from __future__ import annotations

import functools
import os
import platform
import re

#: Flags that decide which kernels oneDNN can run (recorded with every result).
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
                  "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")

#: (flags that must all be present, tag), widest first.
_ISA_LEVELS = ((("amx_bf16",), "amx"), (("avx512_bf16",), "avx512bf16"),
               (("avx512f",), "avx512"), (("avx2", "fma"), "avx2"))


@functools.cache
def _cpuinfo() -> dict[str, str]:
    from sa2_pipeline.runtime.precision_probe import cpuinfo_fields

    return cpuinfo_fields()


def _cpuinfo_field(name: str) -> str | None:
    """The first CPU's ``name`` field in /proc/cpuinfo, None where there is none."""
    return _cpuinfo().get(name)


def cpu_model() -> str:
    """The CPU's marketing name ("Intel(R) Xeon(R) Processor"), else platform's guess."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The instruction-set flags the kernel reports (``avx512_bf16``, ``amx_tile``...)."""
    return set((_cpuinfo_field("flags") or "").split())


def isa_level(flags: set[str]) -> str:
    """The widest extension present: ``amx``, ``avx512bf16``, ``avx512``, ``avx2`` or ``base``."""
    for needed, tag in _ISA_LEVELS:
        if all(flag in flags for flag in needed):
            return tag
    return "base"


def machine_slug(model: str | None = None, flags: set[str] | None = None,
                 generation: tuple[str | None, str | None] | None = None) -> str:
    """File-name key of this machine: ``amd-epyc-avx512bf16-f25m17``, ``intel-xeon-platinum-
    8480-amx-f6m143``. ``generation`` is the CPU family and model number (read from
    /proc/cpuinfo when not given); they tell apart a Zen 4 and a Zen 5, which share the
    name "AMD EPYC" and the flags but not their speeds."""
    model = cpu_model() if model is None else model
    flags = cpu_flags() if flags is None else flags
    if generation is None:
        generation = (_cpuinfo_field("cpu family"), _cpuinfo_field("model"))
    name = re.sub(r"\((?:r|tm)\)|\bcpu\b|@.*$", " ", model.lower())
    name = re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "unknown-cpu"
    family, number = generation
    suffix = f"-f{family}m{number}" if family and number else ""
    return f"{name}-{isa_level(flags)}{suffix}"


def cpu_identity() -> dict:
    """Model name, family/model/stepping, the relevant flags and the slug, for a result file."""
    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "vendor": _cpuinfo_field("vendor_id"),
        "family_model_stepping": [_cpuinfo_field("cpu family"), _cpuinfo_field("model"),
                                  _cpuinfo_field("stepping")],
        "cpu_flags": [flag for flag in RELEVANT_FLAGS if flag in flags],
        "isa_level": isa_level(flags),
        "slug": machine_slug(flags=flags),
        "cores": os.cpu_count(),
    }
