"""TensorFlow's thread pools sized to the cores this process may use.

TensorFlow sizes its pools from the host's core count, which in a container or under `taskset` can be far
more than the cores it gets; and on a small machine several inter-op threads spinning next to the intra-op
pool (oneDNN) steal the cores the convolutions need. `make bench` shows the figure of this choice.
Must run before TensorFlow executes its first operation.
"""

from __future__ import annotations

import os
from pathlib import Path

from xraycnn.runtime import native_stderr

SMALL_MACHINE_CORES = 4


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota when there is one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def plan() -> tuple[int, int]:
    """(intra-op threads, inter-op threads) for this machine."""
    cores = usable_cores()
    return cores, 1 if cores <= SMALL_MACHINE_CORES else 2


def configure() -> str:
    """Apply `plan()` to TensorFlow unless the user set TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS."""
    import tensorflow as tf

    intra, inter = plan()
    with native_stderr.silenced():  # TensorFlow's runtime starts here: `cuInit` fails loudly without a GPU
        if not os.environ.get("TF_NUM_INTRAOP_THREADS"):
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if not os.environ.get("TF_NUM_INTEROP_THREADS"):
            tf.config.threading.set_inter_op_parallelism_threads(inter)
        return describe()


def describe() -> str:
    import tensorflow as tf

    intra = tf.config.threading.get_intra_op_parallelism_threads() or "default"
    inter = tf.config.threading.get_inter_op_parallelism_threads() or "default"
    return f"intra-op {intra}, inter-op {inter} ({usable_cores()} usable cores)"
