"""What machine a figure was measured on: CPU model and the flags that decide its speed, cores, versions.
Every JSON file under benchmarks/results/ carries this, and is named by date and machine."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any

SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")


def _cpuinfo() -> list[str]:
    path = Path("/proc/cpuinfo")
    return path.read_text().splitlines() if path.is_file() else []


def machine_facts() -> dict[str, Any]:
    import keras
    import mlflow
    import tensorflow as tf

    from xraycnn.runtime.precision import cpu_bf16_flags
    from xraycnn.runtime.threads import usable_cores

    lines = _cpuinfo()
    model = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), platform.processor())
    flags = next((x.split(":", 1)[1].split() for x in lines if x.startswith("flags")), [])
    return {
        "cpu": model,
        "cores": usable_cores(),
        "cpu_flags": [f for f in SPEED_FLAGS if f in flags],
        "bf16_flags": "+".join(cpu_bf16_flags()) or "none",
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "mlflow": mlflow.__version__,
        # set to emulate an older CPU: oneDNN then runs no kernel above this instruction set
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
    }


def machine_slug() -> str:
    """e.g. `amd-epyc-avx512bf16` or `amd-epyc-avx2`: what a result file's name says about its machine."""
    lines = _cpuinfo()
    model = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), platform.processor())
    flags = next((x.split(":", 1)[1].split() for x in lines if x.startswith("flags")), [])
    kind = (
        "amx"
        if "amx_bf16" in flags
        else "avx512bf16"
        if "avx512_bf16" in flags
        else "avx2"
        if "avx2" in flags
        else "cpu"
    )
    name = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[:24] or "cpu"
    return f"{name}-{kind}"
