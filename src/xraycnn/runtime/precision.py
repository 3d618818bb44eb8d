"""Mixed precision where the hardware computes bfloat16 natively; float32 elsewhere.

On CPUs with AVX-512 BF16 or AMX, oneDNN runs bfloat16 convolutions and matmuls faster than float32 (`make
bench` measures by how much); on CPUs without them bfloat16 is emulated and slower. GPUs of compute
capability 8.0+ (Ampere, Hopper) have bfloat16 tensor cores. The output layer always stays float32 (see
model.hypermodel).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@cache
def cpu_bf16_flags() -> tuple[str, ...]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return tuple(f for f in BF16_CPU_FLAGS if f in flags)


@cache
def gpu_supports_bf16() -> bool | None:
    """True/False for the first visible GPU; None when there is no GPU."""
    import tensorflow as tf

    from xraycnn.runtime import native_stderr

    with native_stderr.silenced():  # "failed call to cuInit" on every machine without a GPU
        gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
    return tuple(capability) >= (8, 0)


def choose_policy(requested: str) -> tuple[str, str]:
    """The Keras dtype policy to use and why (logged as a run tag)."""
    if requested != "auto":
        return requested, "set in the experiment file"
    gpu = gpu_supports_bf16()
    if gpu is not None:
        return ("mixed_bfloat16", "GPU with bfloat16 tensor cores") if gpu else ("float32", "GPU without bfloat16")
    flags = cpu_bf16_flags()
    if flags:
        return "mixed_bfloat16", f"CPU has {'+'.join(flags)}"
    return "float32", "CPU without native bfloat16"


def apply_policy(requested: str) -> tuple[str, str]:
    import keras

    policy, reason = choose_policy(requested)
    keras.mixed_precision.set_global_policy(policy)
    return policy, reason
