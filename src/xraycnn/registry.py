"""The MLflow Model Registry: log the best model, register a version, and promote it only if it is better.

A new version gets the alias `champion` if it beats the current champion on the objective (the same
validation metric the search selected on), otherwise `challenger`. Before the objective, in order:
- the shortcut gate (an experiment's `tuner.max_borders_only_auc`, or the one the champion was registered
  under): the alias never moves to a version over the gate while a registered version under it exists, and a
  version under the gate takes it from a champion over it, whatever their objectives;
- the acquisition guard (`tuner.min_shift_specificity`, or the champion's): the same, for the NORMAL films'
  specificity under the worst acquisition change on validation (`evaluation.acquisition`);
- what transfers: a version whose worst-change specificity is lower than the champion's is never promoted
  over it for a better objective (a higher `val_auc` bought with calls that move at another hospital).
Moving the alias is the last step, so a failure while logging or registering leaves the previous champion
where it was. A site's own threshold (`xraycnn calibrate`) is a tag of the version, `xraycnn.site.<name>`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
from filelock import FileLock, Timeout
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import MlflowClient

import xraycnn.model  # noqa: F401  registers the project's layers, which its models are loaded with
from xraycnn.config import SHIFT_OBJECTIVE
from xraycnn.errors import ModelNotFoundError, RegistryError, UnsafeModelError, XrayCnnError
from xraycnn.evaluation import THRESHOLD
from xraycnn.model.input_guard import InputGuard, load_guard_beside
from xraycnn.serving import flavor as serving_flavor
from xraycnn.tracking.tags import (
    BORDERS_ONLY_TAG,
    GATE_LIMIT_TAG,
    OBJECTIVE_TAG,
    OBJECTIVE_VALUE_TAG,
    SHIFT_GUARD_TAG,
    SHIFT_SPECIFICITY_TAG,
    SITE_TAG_PREFIX,
    THRESHOLD_RULE_TAG,
    THRESHOLD_TAG,
)

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT = "model"


@dataclass(frozen=True)
class Selection:
    """What a new version is promoted on: its objective on validation; for the shortcut gate, its borders-only
    AUC on validation and the gate (None: no gate in its experiment); for the acquisition guard, its NORMAL
    films' specificity under the worst acquisition change on validation and the guard (None: no guard)."""

    objective_value: float
    borders_only_auc: float | None = None
    gate: float | None = None
    shift_specificity: float | None = None
    shift_guard: float | None = None

    def tags(self) -> dict[str, str]:
        out = {}
        if self.borders_only_auc is not None:
            out[BORDERS_ONLY_TAG] = repr(float(self.borders_only_auc))
        if self.gate is not None:
            out[GATE_LIMIT_TAG] = repr(float(self.gate))
        if self.shift_specificity is not None:
            out[SHIFT_SPECIFICITY_TAG] = repr(float(self.shift_specificity))
        if self.shift_guard is not None:
            out[SHIFT_GUARD_TAG] = repr(float(self.shift_guard))
        return out


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    alias: str
    model_uri: str  # models:/NAME/VERSION
    previous_champion: str | None  # version
    previous_value: float | None
    reason: str
    own_layers: bool = False  # it has layers of this project (loading it with Keras needs `import xraycnn.model`)


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers and those of the models nested in it."""
    return [
        inner
        for layer in model.layers
        for inner in ([layer, *_all_layers(layer)] if isinstance(layer, keras.Model) else [layer])
    ]


def current_champion(client: MlflowClient, name: str) -> Any | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _beats(new: float, old: float, direction: str) -> bool:
    return new > old if direction == "max" else new < old


def _tag_float(version: Any, tag: str) -> float | None:
    raw = (version.tags or {}).get(tag)
    return None if raw is None else float(raw)


def _shift_specificity(version: Any) -> float | None:
    return _tag_float(version, SHIFT_SPECIFICITY_TAG)


@dataclass(frozen=True)
class _Limit:
    """A rule a version's figure must meet before objectives are compared: the shortcut gate (at most) or the
    acquisition guard (at least). A version registered without the figure counts as not meeting it."""

    figure: str  # in words
    tag: str  # where a version carries the figure
    limit_tag: str  # where a version carries the limit it was selected under
    name: str  # the limit in words
    at_most: bool

    def met(self, value: float | None, limit: float) -> bool:
        return value is not None and (value <= limit if self.at_most else value >= limit)

    def decide(self, champion: Any | None, value: float | None, limit: float | None, versions: list[Any]) -> Any:
        """(alias, why) when the limit decides, else None: a version not meeting it never takes the alias while
        another registered version meets it; one meeting it takes the alias from a champion that does not."""
        if limit is None and champion is not None and self.limit_tag in (champion.tags or {}):
            limit = float(champion.tags[self.limit_tag])
        if limit is None:
            return None
        if not self.met(value, limit):
            meeting = [v for v in versions if self.met(_tag_float(v, self.tag), limit)]
            if meeting:
                other = meeting[0]
                return CHALLENGER, (
                    f"{self.figure} {_shown(value)} does not meet the {self.name} {limit:g} while v{other.version} "
                    f"({_shown(_tag_float(other, self.tag))}) does"
                )
        elif champion is not None and not self.met(_tag_float(champion, self.tag), limit):
            return CHAMPION, (
                f"{self.figure} {_shown(value)} meets the {self.name} {limit:g}; champion v{champion.version} "
                f"({_shown(_tag_float(champion, self.tag))}) does not"
            )
        return None


SHORTCUT_GATE = _Limit("borders-only AUC", BORDERS_ONLY_TAG, GATE_LIMIT_TAG, "shortcut gate", at_most=True)
ACQUISITION_GUARD = _Limit(
    "NORMAL specificity under the worst acquisition change",
    SHIFT_SPECIFICITY_TAG,
    SHIFT_GUARD_TAG,
    "acquisition guard",
    at_most=False,
)


def decide_alias(
    champion: Any | None,
    objective: str,
    value: float,
    direction: str,
    *,
    borders_only: float | None = None,
    gate: float | None = None,
    versions: list[Any] = (),  # type: ignore[assignment]
    shift_specificity: float | None = None,
    shift_guard: float | None = None,
) -> tuple[str, str]:
    """(alias, why) for a new version scoring `value` on `objective`, with `borders_only` under `gate` (or the
    gate the champion carries) and `shift_specificity` over `shift_guard` (or the champion's guard); `versions`
    are the model's other registered versions."""
    for rule, figure, limit in (
        (SHORTCUT_GATE, borders_only, gate),
        (ACQUISITION_GUARD, shift_specificity, shift_guard),
    ):
        decided = rule.decide(champion, figure, limit, list(versions))
        if decided is not None:
            return decided
    alias, why = _decide_on_objective(champion, objective, value, direction)
    # (an objective of calls that transfer, val_shift_auc, already ranks by how the normals' scores hold under the
    # changes; the specificity at a threshold chosen to keep a target of it would compare only how far over it landed)
    if alias == CHAMPION and champion is not None and objective != SHIFT_OBJECTIVE:
        old = _shift_specificity(champion)
        if old is not None and (shift_specificity is None or shift_specificity < old):
            return CHALLENGER, (
                f"{why}, but its NORMAL specificity under the worst acquisition change ({_shown(shift_specificity)}) "
                f"is lower than the champion's ({old:.3f}): a better {objective} does not make up for calls that "
                "move at another hospital"
            )
    return alias, why


def _shown(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.3f}"


def _decide_on_objective(champion: Any | None, objective: str, value: float, direction: str) -> tuple[str, str]:
    if champion is None:
        return CHAMPION, "no champion yet"
    old_objective = champion.tags.get(OBJECTIVE_TAG)
    old_raw = champion.tags.get(OBJECTIVE_VALUE_TAG)
    if old_objective != objective or old_raw is None:
        return CHALLENGER, (
            f"champion v{champion.version} was selected on {old_objective or 'an unknown objective'}, not {objective}; "
            "compare them and set the alias by hand if this one should serve"
        )
    old = float(old_raw)
    if _beats(value, old, direction):
        return CHAMPION, f"{objective} {value:.4f} beats champion v{champion.version} ({old:.4f})"
    return CHALLENGER, f"{objective} {value:.4f} does not beat champion v{champion.version} ({old:.4f})"


def serving_requirements() -> list[str]:
    """What loading the model needs, pinned to what trained it: xraycnn itself (its pyfunc loader) and the
    libraries. MLflow would infer the libraries by loading the model in a subprocess, seconds per model."""
    import tensorflow as tf

    import xraycnn

    return [
        f"xraycnn=={xraycnn.__version__}",
        f"mlflow=={mlflow.__version__}",
        f"keras=={keras.__version__}",
        f"numpy=={np.__version__}",
        f"tensorflow=={tf.__version__}",
    ]


def log_and_register(
    model: keras.Model,
    *,
    model_name: str,
    objective: str,
    selection: Selection,
    direction: str,
    tags: dict[str, Any],
    description: str,
    metadata: dict[str, Any] | None = None,
    input_guard: InputGuard | None = None,
) -> Registration:
    """Log `model` to the active run, register it under `model_name` and set its alias (last). `metadata`
    travels inside the model (its MLmodel file), e.g. the decision threshold, wherever the model is copied;
    the model has a keras flavour and a pyfunc flavour that takes image bytes (xraycnn.serving)."""
    client = MlflowClient()
    before = current_champion(client, model_name)  # named in the error if anything below fails
    input_shape = tuple(int(d) for d in model.input_shape[1:])
    metadata = metadata or {}
    threshold = float(metadata.get("threshold", THRESHOLD))
    threshold_rule = str(metadata.get("threshold_rule", "0.5: no threshold chosen on validation"))
    try:
        info = serving_flavor.log_model(
            model,
            MODEL_ARTIFACT,
            threshold=threshold,
            threshold_rule=threshold_rule,
            pip_requirements=serving_requirements(),
            metadata={**metadata, "input_shape": list(input_shape)},
            input_guard=input_guard,
        )
    except (MlflowException, OSError) as exc:
        raise RegistryError(failure_message(f"logging the model of {model_name}", exc, before)) from exc
    version_tags = {
        **{k: str(v) for k, v in tags.items()},
        OBJECTIVE_TAG: objective,
        OBJECTIVE_VALUE_TAG: repr(float(selection.objective_value)),
        **selection.tags(),
    }
    try:
        version = mlflow.register_model(info.model_uri, model_name, tags=version_tags)
    except (MlflowException, OSError) as exc:
        raise RegistryError(failure_message(f"registering {model_name}", exc, before)) from exc
    try:
        client.update_model_version(model_name, version.version, description=description)
        with _promotion_lock():
            # Decided here, not from the lookup above: another search may have promoted a version meanwhile.
            champion = current_champion(client, model_name)
            others = [
                v
                for v in client.search_model_versions(f"name = '{model_name}'")
                if str(v.version) != str(version.version)
            ]
            alias, reason = decide_alias(
                champion,
                objective,
                selection.objective_value,
                direction,
                borders_only=selection.borders_only_auc,
                gate=selection.gate,
                versions=others,
                shift_specificity=selection.shift_specificity,
                shift_guard=selection.shift_guard,
            )
            client.set_registered_model_alias(model_name, alias, version.version)  # the one step that promotes
    except (MlflowException, OSError) as exc:
        _withdraw(client, model_name, version.version)
        raise RegistryError(failure_message(f"finishing {model_name} v{version.version}", exc, before)) from exc
    return Registration(
        name=model_name,
        version=str(version.version),
        alias=alias,
        model_uri=f"models:/{model_name}/{version.version}",
        previous_champion=None if champion is None else str(champion.version),
        previous_value=None if champion is None else float(champion.tags.get(OBJECTIVE_VALUE_TAG, "nan")),
        reason=reason,
        own_layers=any(type(layer).__module__.startswith("xraycnn.") for layer in _all_layers(model)),
    )


@contextmanager
def _promotion_lock() -> Iterator[None]:
    """Two searches finishing at once must not both read "no better champion" and both promote. A SQLite
    store is a local file, so a lock file next to it serialises read-decide-set; a tracking server has no
    compare-and-set for aliases, so there the step is unguarded (a distributed search registers from its
    chief only)."""
    uri = mlflow.get_registry_uri()
    if not uri.startswith("sqlite:///"):
        yield
        return
    try:
        with FileLock(f"{uri.removeprefix('sqlite:///')}.promotion.lock", timeout=300):
            yield
    except Timeout:
        raise MlflowException("another process has held the registry's promotion lock for 5 minutes") from None


def _withdraw(client: MlflowClient, name: str, version: str) -> None:
    """Delete a version whose registration did not finish, so no half-described version stays behind
    (best effort: the store that just failed may refuse this too)."""
    with contextlib.suppress(MlflowException, OSError):
        client.delete_model_version(name, version)


def failure_message(step: str, exc: BaseException, champion: Any | None) -> str:
    first = (getattr(exc, "message", None) or str(exc)).strip().splitlines()
    kept = (
        f"the champion, {champion.name} v{champion.version}, is untouched and still loads"
        if champion is not None
        else "no champion was set"
    )
    return (
        f"{step} failed ({type(exc).__name__}: {first[0] if first else 'no message'}); {kept}. Fix the tracking "
        "store (is it reachable and writable?) and run the same command again (a search keeps its finished "
        "trials and retries only this step)"
    )


def registered_summary(client: MlflowClient) -> str:
    """'xraycnn (champion=v3, challenger=v4; versions 1-4), ...' for error messages."""
    models = client.search_registered_models()
    if not models:
        return "no models are registered in this store yet (run `make search`)"
    parts = []
    for m in models:
        aliases = ", ".join(f"{a}=v{v}" for a, v in sorted((m.aliases or {}).items()))
        versions = [int(v.version) for v in client.search_model_versions(f"name = '{m.name}'")]
        span = f"versions {min(versions)}-{max(versions)}" if versions else "no versions"
        parts.append(f"{m.name} ({aliases + '; ' if aliases else ''}{span})")
    return "registered: " + ", ".join(parts)


@dataclass(frozen=True)
class ModelCard:
    """What a model URI resolves to: the decision threshold it carries, for a registered model which version
    (so evaluations can be linked to it), and the thresholds sites set on that version (`xraycnn calibrate`)."""

    uri: str
    threshold: float | None  # None: a model logged before thresholds were chosen (0.5 is used)
    threshold_rule: str | None
    name: str | None = None
    version: str | None = None
    model_id: str | None = None
    run_id: str | None = None
    sites: dict[str, dict[str, Any]] = field(default_factory=dict)  # site -> its stored SiteThreshold and more
    input_guard: InputGuard | None = field(default=None, compare=False)  # None: registered before the guard

    def decision(self, site: str | None = None) -> tuple[float, str]:
        """(threshold, how it was set): the model's own, or with `site` that site's; an unknown site is an
        error that lists the known ones."""
        if site is None:
            if self.threshold is None:
                return THRESHOLD, "0.5: this model carries no threshold chosen on validation"
            return self.threshold, self.threshold_rule or "chosen on validation"
        if site not in self.sites:
            known = ", ".join(sorted(self.sites)) or "none yet"
            label = f"{self.name} v{self.version}" if self.version else self.uri
            raise XrayCnnError(
                f"site {site!r} has no threshold on {label} (sites calibrated: {known}); set one with "
                f"`xraycnn calibrate --model {self.uri} --normals FOLDER --max-false-positive-rate 0.10 --site {site}`"
            )
        stored = self.sites[site]
        return float(stored["threshold"]), (
            f"site {site}: false-positive rate at most {stored['max_false_positive_rate']:g} at "
            f"{stored['confidence']:.0%} confidence, from {stored['normals']} of its normal films"
        )


def site_thresholds(tags: dict[str, str] | None) -> dict[str, dict[str, Any]]:
    """The site thresholds among a version's tags (`xraycnn.site.<name>`, JSON each)."""
    out = {}
    for key, raw in (tags or {}).items():
        if key.startswith(SITE_TAG_PREFIX):
            try:
                out[key.removeprefix(SITE_TAG_PREFIX)] = json.loads(raw)
            except ValueError:
                continue  # not ours
    return out


def set_site_threshold(client: MlflowClient, name: str, version: str, site: str, stored: str) -> None:
    """Store (or replace) a site's threshold on a model version: one tag, written at once."""
    try:
        client.set_model_version_tag(name, version, f"{SITE_TAG_PREFIX}{site}", stored)
    except (MlflowException, OSError) as exc:
        message = (getattr(exc, "message", None) or str(exc)).strip().splitlines()
        raise RegistryError(
            f"storing site {site}'s threshold on {name} v{version} failed ({type(exc).__name__}: "
            f"{message[0] if message else 'no message'}); the version is unchanged. Fix the tracking store and run "
            "the same command again"
        ) from exc


def _download(model_uri: str) -> Path:
    """A copy of the model's files in a folder of this process's own (removed at exit): downloaded without a
    destination, a model of a local store is used in place, and MLflow writes a `registered_model_meta` file
    into the store's copy, so every read would write to the artifact store."""
    destination = Path(tempfile.mkdtemp(prefix="xraycnn-model-"))
    atexit.register(shutil.rmtree, destination, ignore_errors=True)
    try:
        return Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(destination)))
    except (MlflowException, OSError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        raise ModelNotFoundError(
            f"cannot load {model_uri!r}: {message.splitlines()[0]}. {registered_summary(MlflowClient())}; "
            "use models:/NAME@ALIAS or models:/NAME/VERSION"
        ) from None


def _registered_version(client: MlflowClient, model_uri: str) -> Any | None:
    """The model version `models:/NAME@ALIAS` or `models:/NAME/VERSION` names; None for other URIs."""
    if not model_uri.startswith("models:/"):
        return None
    path = model_uri.removeprefix("models:/")
    try:
        if "@" in path:
            name, alias = path.split("@", 1)
            return client.get_model_version_by_alias(name, alias)
        name, _, version = path.partition("/")
        return client.get_model_version(name, version) if version.isdigit() else None
    except MlflowException:
        return None


def _logged_model_id(version: Any) -> str | None:
    """The MLflow 3 logged model behind a version: its own field where the store fills it, else its source
    (`models:/m-...`, which a SQLite registry leaves as the only trace)."""
    if getattr(version, "model_id", None):
        return version.model_id
    source = version.source or ""
    return source.removeprefix("models:/") if source.startswith("models:/m-") else None


def download_model(model_uri: str) -> tuple[Path, ModelCard, Model]:
    """The model's local folder, its card and its MLmodel description, from one download."""
    local = _download(model_uri)
    mlmodel = _read_mlmodel(model_uri, local)
    return local, _card(model_uri, mlmodel, local), mlmodel


def describe_model(model_uri: str) -> ModelCard:
    """The threshold a model carries (its MLmodel metadata, else its version's tags) and its version."""
    local = _download(model_uri)
    return _card(model_uri, _read_mlmodel(model_uri, local), local)


def _guard(local: Path, mlmodel: Model) -> InputGuard | None:
    data = mlmodel.flavors.get("keras", {}).get("data")
    return load_guard_beside(local / data / serving_flavor.loader.KERAS_FILE) if data else None


def _card(model_uri: str, mlmodel: Model, local: Path) -> ModelCard:
    metadata = mlmodel.metadata or {}
    version = _registered_version(MlflowClient(), model_uri)
    tags = version.tags if version is not None else {}
    raw = metadata.get("threshold", tags.get(THRESHOLD_TAG))
    return ModelCard(
        uri=model_uri,
        threshold=None if raw is None else float(raw),
        threshold_rule=metadata.get("threshold_rule", tags.get(THRESHOLD_RULE_TAG)),
        name=None if version is None else version.name,
        version=None if version is None else str(version.version),
        model_id=None if version is None else _logged_model_id(version),
        run_id=None if version is None else version.run_id,
        sites=site_thresholds(tags),
        input_guard=_guard(local, mlmodel),
    )


def _read_mlmodel(model_uri: str, local: Path) -> Model:
    try:
        return Model.load(local / "MLmodel")
    except (MlflowException, OSError) as exc:
        raise ModelNotFoundError(f"cannot read the MLmodel file of {model_uri!r}: {exc}") from None


def load_keras_model(model_uri: str) -> keras.Model:
    """Load a logged or registered Keras model with Keras safe mode on: a model file that would run code of
    its own (a Lambda layer, a pickled function) is refused, and so is a TensorFlow SavedModel export.
    Raises `ModelNotFoundError` listing what is registered when the URI resolves to nothing."""
    return _load_keras(model_uri)[0]


def load_keras_model_with_card(model_uri: str) -> tuple[keras.Model, ModelCard]:
    """`load_keras_model`, and the model's card from the same download."""
    model, mlmodel, local = _load_keras(model_uri)
    return model, _card(model_uri, mlmodel, local)


def _load_keras(model_uri: str) -> tuple[keras.Model, Model, Path]:
    """The model, loaded in safe mode, and its MLmodel description, from one download."""
    local = _download(model_uri)
    mlmodel = _read_mlmodel(model_uri, local)
    flavor = mlmodel.flavors.get("keras")
    if flavor is None or flavor.get("save_exported_model"):
        raise UnsafeModelError(
            f"{model_uri!r} is not a Keras model saved in the .keras format (MLmodel flavors: "
            f"{', '.join(mlmodel.flavors)}); xraycnn loads only .keras models, in safe mode"
        )
    try:
        model = mlflow.keras.load_model(str(local), load_model_kwargs={"safe_mode": True})
    except ValueError as exc:
        if "safe_mode" not in str(exc) and "unsafe" not in str(exc).lower():
            raise
        raise UnsafeModelError(
            f"refused to load {model_uri!r}: the model file asks to run code of its own (Keras safe mode: "
            f"{str(exc).splitlines()[0][:200]}). Only load such a model if you trust its author, with "
            "keras.saving.load_model(path, safe_mode=False) yourself"
        ) from None
    return model, mlmodel, local
