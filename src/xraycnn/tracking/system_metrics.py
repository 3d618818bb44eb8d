"""MLflow's system metrics (CPU, memory, disk, network, GPU) of a run, written through the tracking spool.

MLflow's own monitor writes straight to the store and stops for good at its first failed write, so one
outage of the store would end a search's system metrics. This one samples with MLflow's monitors, names
and aggregates the metrics as MLflow does (`system/...`, one step per interval), and journals them like
every other write of the search.
"""

from __future__ import annotations

from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

from xraycnn.errors import DiskFullError
from xraycnn.tracking.spooled_runs import SpooledRuns


class SpooledSystemMetrics(SystemMetricsMonitor):
    def __init__(self, run_id: str, runs: SpooledRuns, tracking_uri: str, resume: bool) -> None:
        # resume_logging reads the last step from the store (it answered a moment ago: the run was just opened)
        super().__init__(run_id, resume_logging=resume, tracking_uri=tracking_uri)
        self._runs = runs

    def monitor(self) -> None:
        while not self._shutdown_event.is_set():
            for _ in range(self.samples_before_logging):
                self.collect_metrics()
                if self._shutdown_event.wait(self.sampling_interval):
                    break
            metrics = self.aggregate_metrics()
            if metrics:
                try:
                    self.publish_metrics(metrics)
                except DiskFullError:
                    return  # the spool's disk is full: the job stops at its own next write and says so once

    def publish_metrics(self, metrics: dict[str, float]) -> None:
        prefix = self._metrics_prefix + (f"{self.node_id}/" if self.node_id else "")
        self._runs.log_metrics(self._run_id, {prefix + k: v for k, v in metrics.items()}, step=self._logging_step)
        self._logging_step += 1
        for monitor in self.monitors:
            monitor.clear_metrics()

    def finish(self) -> None:
        if self._process is None:
            return
        self._shutdown_event.set()
        self._process.join()
        self._process = None
