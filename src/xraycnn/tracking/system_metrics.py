"""MLflow's system metrics (CPU, memory, disk, network, GPU) of a job's run, written through the job's writer.

MLflow's own monitor writes straight to the store and stops for good at its first failed write, so one outage
of the store would end a search's system metrics. This one samples with MLflow's samplers (the monitor's public
settings: interval, samples per step, node id, all from MLFLOW_SYSTEM_METRICS_*), names the metrics as MLflow
does (`system/...`, one step per interval) and hands them to the job's writer: journaled with the rest of a
search's writes, or written at once for a job without a spool.
"""

from __future__ import annotations

import threading

from mlflow.exceptions import MlflowException
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.tracking import MlflowClient

from xraycnn.tracking.writer import RunWriter

PREFIX = "system/"


def next_step(client: MlflowClient, run_id: str) -> int:
    """The step after the run's last system metric (0 for none, or when the store cannot say)."""
    try:
        keys = [k for k in client.get_run(run_id).data.metrics if k.startswith(PREFIX)]
        if not keys:
            return 0
        return 1 + max(m.step for m in client.get_metric_history(run_id, keys[0]))
    except MlflowException:
        return 0


class SystemMetrics:
    def __init__(self, run_id: str, runs: RunWriter, client: MlflowClient, *, resume: bool) -> None:
        self.run_id, self.runs = run_id, runs
        # Made for its samplers and settings only: it never starts, so it never writes.
        self.sampler = SystemMetricsMonitor(run_id, tracking_uri=client.tracking_uri)
        self.prefix = PREFIX + (f"{self.sampler.node_id}/" if self.sampler.node_id else "")
        self.step = next_step(client, run_id) if resume else 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="xraycnn-system-metrics", daemon=True)
        self._thread.start()

    def finish(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None

    def _loop(self) -> None:
        sampler = self.sampler
        while not self._stop.is_set():
            for _ in range(int(sampler.samples_before_logging)):
                sampler.collect_metrics()
                if self._stop.wait(float(sampler.sampling_interval)):
                    break
            metrics = sampler.aggregate_metrics()
            if not metrics:
                continue
            try:
                self.runs.log_metrics(self.run_id, {self.prefix + k: v for k, v in metrics.items()}, step=self.step)
            except Exception:
                # The spool's disk full, or a direct write refused: the job's own next write meets the same and
                # says so once; the samples stop here, as MLflow's monitor does.
                return
            self.step += 1
            for monitor in sampler.monitors:
                monitor.clear_metrics()
