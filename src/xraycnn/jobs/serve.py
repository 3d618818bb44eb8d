"""`xraycnn serve`: a registered model on MLflow's own model server (serving.app), with the local Python
environment (no conda or virtualenv built at start), on loopback unless told otherwise. Image bytes in (a
DataFrame column `image`, base64 in JSON), per image the probability of COVID-19, the call at the model's
threshold, the threshold and the model version out."""

from __future__ import annotations

import ipaddress
import json
import os

from rich.console import Console

from xraycnn.errors import XrayCnnError
from xraycnn.registry import download_model
from xraycnn.runtime.local_http import check_bindable
from xraycnn.serving import app
from xraycnn.serving.flavor import serves_images
from xraycnn.serving.model import IMAGE_COLUMN
from xraycnn.tracking.store import resolve_store


def run_serve(
    model_uri: str,
    *,
    host: str = "127.0.0.1",
    port: int = 5001,
    workers: int = 1,
    max_request_mb: float = app.DEFAULT_MAX_BYTES / 2**20,
    tracking_uri: str | None = None,
    site: str | None = None,
    console: Console | None = None,
) -> None:
    """Serve until stopped (Ctrl-C, SIGTERM). Requests are called at the model's threshold, or with `site` at
    that site's; a request's `params.site` names another calibrated site."""
    import uvicorn

    console = console or Console()
    if workers < 1:
        raise XrayCnnError(f"--workers {workers}: at least 1")
    if max_request_mb <= 0:
        raise XrayCnnError(f"--max-request-mb {max_request_mb}: must be positive")
    check_bindable(host, port, "the model server")
    resolve_store(tracking_uri)
    local, card, mlmodel = download_model(model_uri)
    if not serves_images(mlmodel):
        raise XrayCnnError(
            f"{model_uri} has no image-serving flavour (it was registered before xraycnn logged one): register "
            "it again with `xraycnn search` or `xraycnn train`, or serve a newer version"
        )
    threshold, rule = card.decision(site)
    os.environ[app.MODEL_ENV] = str(local)
    os.environ[app.CONFIG_ENV] = json.dumps(
        {
            "model_version": card.version,
            "model_name": card.name,
            "sites": {name: float(stored["threshold"]) for name, stored in card.sites.items()},
            "site": site or "",
        }
    )
    os.environ[app.MAX_BYTES_ENV] = str(int(max_request_mb * 2**20))
    label = f"{card.name} v{card.version}" if card.version else model_uri
    sites = f"; sites a request may name (params.site): {', '.join(sorted(card.sites))}" if card.sites else ""
    console.print(
        f"Serving {model_uri} ({label}, threshold {threshold:.4f}: {rule}{sites}) on http://{host}:{port} with "
        f"{workers} worker(s): POST /invocations with a column {IMAGE_COLUMN!r} of base64 images (dataframe_split), "
        "GET /ping. Ctrl-C to stop.",
        highlight=False,
    )
    if not _loopback(host):
        console.print(f"[yellow]warning:[/] bound to {host}: reachable from other machines, with no authentication")
    uvicorn.run(
        "xraycnn.serving.app:from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
