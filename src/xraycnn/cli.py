"""The `xraycnn` command: search, sync, train, evaluate, calibrate, predict, serve, report, ui."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from xraycnn import __version__, paths
from xraycnn.errors import DiskFullError, InterruptedByUserError, XrayCnnError
from xraycnn.runtime import native_stderr, threads

DEFAULT_EXPERIMENT = "experiments/default.toml"


def _experiment_path(value: str) -> Path:
    """Experiment files are looked up as given, then under the project's experiments/ (so `default` works)."""
    path = Path(value)
    if path.exists():
        return path
    for candidate in (
        paths.project_root() / value,
        paths.project_root() / "experiments" / value,
        paths.project_root() / "experiments" / f"{value}.toml",
    ):
        if candidate.is_file():
            return candidate
    return path


def _search(args: argparse.Namespace, console: Console) -> int:
    if args.workers is not None:
        from xraycnn.jobs.distributed import run_distributed

        return run_distributed(
            _experiment_path(args.experiment),
            args.workers,
            fresh=args.fresh,
            data_dir=args.data,
            backend_store_uri=args.backend_store_uri,
            artifacts_destination=args.artifacts_destination,
            tuner_dir=args.tuner_dir,
            reports_dir=args.reports_dir,
            console=console,
            overrides=args.overrides,
        )
    from xraycnn.jobs.search import run_search
    from xraycnn.tuning.cluster import cluster_role

    cluster = None
    if args.role is not None:
        if not args.oracle:
            raise XrayCnnError(f"--role {args.role} needs --oracle HOST:PORT (where the chief serves the oracle)")
        cluster = cluster_role(args.role, args.oracle, args.worker_id)
    run_search(
        _experiment_path(args.experiment),
        fresh=args.fresh,
        data_dir=args.data,
        tracking_uri=args.tracking_uri,
        tuner_dir=args.tuner_dir,
        reports_dir=args.reports_dir,
        console=console,
        cluster=cluster,
        overrides=args.overrides,
    )
    return 0


def _sync(args: argparse.Namespace, console: Console) -> int:
    from xraycnn.jobs.sync import run_sync

    run_sync(args.experiment, tuner_dir=args.tuner_dir, reports_dir=args.reports_dir, console=console)
    return 0


def _train(args: argparse.Namespace, console: Console) -> int:
    from xraycnn.jobs.train import run_train

    run_train(
        _experiment_path(args.experiment),
        data_dir=args.data,
        tracking_uri=args.tracking_uri,
        console=console,
        overrides=args.overrides,
    )
    return 0


def _evaluate(args: argparse.Namespace, console: Console) -> int:
    from xraycnn.jobs.evaluate import run_evaluate

    run_evaluate(
        args.model,
        args.data,
        tracking_uri=args.tracking_uri,
        resamples=args.resamples,
        seed=args.seed,
        site=args.site,
        console=console,
    )
    return 0


def _calibrate(args: argparse.Namespace, console: Console) -> int:
    from xraycnn.jobs.calibrate import run_calibrate

    run_calibrate(
        args.model,
        args.normals,
        args.max_false_positive_rate,
        args.site,
        confidence=args.confidence,
        tracking_uri=args.tracking_uri,
        console=console,
    )
    return 0


def _predict(args: argparse.Namespace, console: Console) -> int:
    from xraycnn.jobs.predict import run_predict

    predictions = run_predict(
        args.model,
        args.images,
        tracking_uri=args.tracking_uri,
        explain=args.explain,
        explain_dir=args.explain_dir,
        site=args.site,
        console=Console(stderr=True) if args.json else console,  # stdout: the JSON alone
        table=not args.json,
    )
    if args.json:
        print(json.dumps([p.as_dict() for p in predictions], indent=1))
    return 0 if all(p.probability is not None for p in predictions) else 1


def _serve(args: argparse.Namespace, console: Console) -> int:
    from xraycnn.jobs.serve import run_serve

    run_serve(
        args.model,
        host=args.host,
        port=args.port,
        workers=args.workers,
        max_request_mb=args.max_request_mb,
        tracking_uri=args.tracking_uri,
        site=args.site,
        console=console,
    )
    return 0


def _report_command(args: argparse.Namespace, console: Console) -> int:
    from xraycnn.jobs.report import run_report

    run_report(
        args.experiment,
        run_id=args.run_id,
        tracking_uri=args.tracking_uri,
        reports_dir=args.reports_dir,
        console=console,
    )
    return 0


def _ui(args: argparse.Namespace, console: Console) -> int:
    from xraycnn.tracking.server import server_environment
    from xraycnn.tracking.store import redact, resolve_store

    if args.workers < 1:
        raise XrayCnnError(f"--workers {args.workers}: at least 1")
    store = resolve_store(args.tracking_uri)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",  # the store's URI goes in the environment: not on `ps`'s line
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--workers",
        str(args.workers),
    ]
    if store.artifact_root is not None:
        command += ["--default-artifact-root", store.artifact_root.as_uri()]
    console.print(f"MLflow UI on http://{args.host}:{args.port} for {redact(store.uri)} (Ctrl-C to stop)")
    try:
        return subprocess.call(command, env=server_environment(store.uri))
    except KeyboardInterrupt:
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xraycnn",
        description=__doc__,
        epilog=(
            f"environment: ${paths.HOME_ENV} the project folder (experiments/, tuner/, mlruns/, reports/; default: "
            f"the checkout xraycnn is installed from, else the working directory); ${paths.DATA_ENV} the dataset "
            f"folder; ${paths.CACHE_ENV} the decoded-film cache; MLFLOW_TRACKING_URI the store (default: "
            "sqlite:///<project>/mlruns/mlflow.db)"
        ),
    )
    parser.add_argument("--version", action="version", version=f"xraycnn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def tracking(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--tracking-uri",
            help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<repo>/mlruns/mlflow.db)",
        )

    def data(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data",
            help=f"dataset folder (default: ${paths.DATA_ENV}, the experiment's data.root, "
            "data/, ../shared/data/cxr-covid)",
        )

    def overrides(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override one setting of the experiment file (TOML value; repeatable), e.g. --set budget.max_trials=2 "
            "--set data.image_size=32; recorded on the run, and a search with other overrides does not resume this one",
        )

    def site(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument(
            "--site",
            help=f"{what} at the threshold this site set on the model version (`xraycnn calibrate --site NAME`) "
            "instead of the model's own",
        )

    def reports(p: argparse.ArgumentParser) -> None:
        p.add_argument("--reports-dir", help="where search reports are written (default <repo>/reports)")

    p = sub.add_parser("search", help="run (or resume) a hyperparameter search and register its best model")
    p.add_argument(
        "experiment",
        nargs="?",
        default=DEFAULT_EXPERIMENT,
        help=f"experiment file (default {DEFAULT_EXPERIMENT})",
    )
    p.add_argument("--fresh", action="store_true", help="discard the tuner state of this experiment and start over")
    p.add_argument("--tuner-dir", help="where Keras Tuner keeps its state (default <repo>/tuner)")
    p.add_argument(
        "--workers",
        type=int,
        help="distributed on this machine: an MLflow tracking server, a chief and this many workers",
    )
    p.add_argument(
        "--backend-store-uri",
        help="with --workers: the tracking server's database (default: $XRAYCNN_BACKEND_STORE_URI, e.g. "
        "postgresql://user@host/db, else the project's SQLite file)",
    )
    p.add_argument(
        "--artifacts-destination",
        help="with --workers: where the tracking server stores artifacts (default: next to a SQLite file, "
        "else <repo>/mlruns/artifacts)",
    )
    p.add_argument(
        "--role",
        choices=["chief", "worker"],
        help="one process of a distributed search (for several hosts; --workers starts them for you)",
    )
    p.add_argument("--oracle", help="with --role: HOST:PORT where the chief serves Keras Tuner's oracle")
    p.add_argument("--worker-id", help="with --role worker: this worker's own id, e.g. worker-1")
    overrides(p)
    reports(p)
    data(p)
    tracking(p)
    p.set_defaults(func=_search)

    p = sub.add_parser(
        "sync",
        help="send the MLflow writes searches left in their spools (the store was away) and finish those searches",
    )
    p.add_argument("experiment", nargs="?", help="an experiment file or name (default: every search in --tuner-dir)")
    p.add_argument("--tuner-dir", help="where Keras Tuner keeps its state (default <repo>/tuner)")
    reports(p)
    p.set_defaults(func=_sync)

    p = sub.add_parser("train", help="train the experiment's fixed network as one tracked run and register it")
    p.add_argument(
        "experiment",
        help="experiment file whose search space has one value per entry, e.g. experiments/seed.toml",
    )
    overrides(p)
    data(p)
    tracking(p)
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "evaluate", help="evaluate a model on a labelled folder: clinical metrics with intervals, plots, Grad-CAM"
    )
    p.add_argument("--model", default="models:/xraycnn@champion", help="model URI (default models:/xraycnn@champion)")
    p.add_argument(
        "--data", required=True, help="folder of class folders (COVID19/, NORMAL/; optional MANIFEST.csv with source)"
    )
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for the 95 %% intervals (1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the Grad-CAM sample (0)")
    site(p, "the calls")
    tracking(p)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser(
        "calibrate",
        help="set a site's own threshold from its normal films (no COVID-19 films needed), stored on the version",
    )
    p.add_argument("--model", default="models:/xraycnn@champion", help="model URI (default models:/xraycnn@champion)")
    p.add_argument("--normals", required=True, help="folder of the site's NORMAL films (every file in it is used)")
    p.add_argument(
        "--max-false-positive-rate",
        type=float,
        required=True,
        help="the share of the site's normal films it accepts being called COVID-19, e.g. 0.10",
    )
    p.add_argument("--site", required=True, help="the site's name: letters, digits, '_', '.', '-' (e.g. st-marys)")
    p.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="how sure the promise is that the rate is not exceeded on the site's future normal films (0.95)",
    )
    tracking(p)
    p.set_defaults(func=_calibrate)

    p = sub.add_parser("predict", help="P(COVID19) and label per image, from a registered or logged model")
    p.add_argument("--model", default="models:/xraycnn@champion", help="model URI (default models:/xraycnn@champion)")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--explain", action="store_true", help="write a Grad-CAM heatmap of each image to --explain-dir")
    p.add_argument(
        "--explain-dir",
        help="with --explain: the folder for the heatmaps (default: a new ./heatmaps folder; never a folder of films)",
    )
    p.add_argument("--json", action="store_true", help="print the predictions as JSON (one object per image), no table")
    site(p, "call the images")
    tracking(p)
    p.set_defaults(func=_predict)

    p = sub.add_parser("serve", help="serve a model over HTTP on MLflow's model server: image files in, calls out")
    p.add_argument("--model", default="models:/xraycnn@champion", help="model URI (default models:/xraycnn@champion)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5001, help="port (default 5001)")
    p.add_argument("--workers", type=int, default=1, help="server processes, each with its own copy of the model (1)")
    p.add_argument(
        "--max-request-mb", type=float, default=32.0, help="refuse larger request bodies before reading them (32)"
    )
    site(p, "call requests that name no site (a request's params.site names one)")
    tracking(p)
    p.set_defaults(func=_serve)

    p = sub.add_parser("report", help="write the HTML report of an experiment's latest search (and log it)")
    p.add_argument("experiment", nargs="?", default="default", help="experiment file or name (default: default)")
    p.add_argument("--run-id", help="the search's parent run (default: the experiment's latest search)")
    reports(p)
    tracking(p)
    p.set_defaults(func=_report_command)

    p = sub.add_parser("ui", help="open the MLflow UI on the project's store")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=int(os.environ.get("XRAYCNN_UI_PORT", "5000")))
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes (default 1: enough for one person's browser; MLflow's own default starts 4 copies "
        "of its app)",
    )
    tracking(p)
    p.set_defaults(func=_ui)
    for command in sub.choices.values():  # `xraycnn COMMAND --help` names the environment too
        command.epilog = parser.epilog
    return parser


def _quiet_libraries() -> None:
    """Keep the terminal for our own progress: no per-call notices from TensorFlow, Keras or MLflow that
    say nothing the user can act on."""
    import warnings

    import tensorflow as tf

    from xraycnn.runtime.disk import HideDiskFull

    tf.get_logger().setLevel(logging.ERROR)  # "triggered tf.function retracing": one per trial, by design
    # Keras Tuner checkpoints weights with the optimizer's state; a fresh model has none to load into.
    warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").addFilter(HideDiskFull())


def _stop_as_interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _report(exc: XrayCnnError) -> int:
    label = "interrupted" if isinstance(exc, InterruptedByUserError) else "error"
    Console(stderr=True).print(f"[bold red]{label}:[/] {exc}", highlight=False, soft_wrap=True)
    return exc.exit_code


def _note(line: str | None) -> None:
    if line:
        Console(stderr=True).print(f"[yellow]note:[/] {line}", highlight=False, soft_wrap=True)


def _check_inputs_early(args: argparse.Namespace) -> None:
    """A bad experiment file, data folder or image path is reported before TensorFlow is even imported."""
    from xraycnn.data.discovery import ignored_note

    if args.command in ("search", "train"):
        from xraycnn.jobs.inputs import check_inputs

        _note(ignored_note(check_inputs(_experiment_path(args.experiment), args.data, args.overrides).files.ignored))
    if args.command == "evaluate":
        from xraycnn.data.discovery import discover_labeled_folder

        _note(ignored_note(discover_labeled_folder(args.data)[2]))
        if args.resamples < 100:
            raise XrayCnnError(f"--resamples {args.resamples}: at least 100 for a 95 % interval")
    if args.command == "predict":
        from xraycnn.jobs.heatmaps import check_images, heatmap_dir

        check_images(args.images)
        if args.explain:
            args.explain_dir = heatmap_dir(args.images, args.explain_dir)
    if args.command == "calibrate":
        from xraycnn.data.discovery import discover_films
        from xraycnn.site_request import check_enough, check_request

        check_request(args.site, args.max_false_positive_rate, args.confidence)
        folder, films = discover_films(args.normals)
        _note(ignored_note(films.ignored))
        try:
            check_enough(len(films.files), args.max_false_positive_rate, args.confidence)
        except XrayCnnError as exc:
            raise type(exc)(f"{folder}: {exc}") from None
    elif getattr(args, "site", None) is not None:
        from xraycnn.site_request import check_site_name

        check_site_name(args.site)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_inputs_early(args)
    except XrayCnnError as exc:
        return _report(exc)
    if args.command not in ("ui", "report"):  # these two never train or load a network
        native_stderr.import_tensorflow()
        _quiet_libraries()
        threads.configure()
    if args.command == "search" and args.workers is None:
        # A supervisor's SIGTERM (the launcher's, systemd's, Kubernetes') stops a search as Ctrl-C does: its
        # open runs are closed and it can be resumed, instead of dying with runs left RUNNING.
        signal.signal(signal.SIGTERM, _stop_as_interrupted)
    # In a log (CI, `| tee`) rich would wrap at 80 columns; a wide console keeps one line per trial.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    try:
        return args.func(args, console)
    except DiskFullError as exc:
        code = _report(exc)
        # On a full disk a half-written checkpoint's HDF5 objects can crash the interpreter's teardown (a
        # segfault after the message was seen); the runs are closed by now, and nothing is left to write.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    except XrayCnnError as exc:
        return _report(exc)
    except KeyboardInterrupt:  # outside a search's trials (decoding, registering): nothing half-written to fix
        Console(stderr=True).print("[bold red]interrupted[/] (Ctrl-C); run the same command again to go on")
        return 130


if __name__ == "__main__":
    sys.exit(main())
