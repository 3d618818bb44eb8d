"""How often a model's input guard refuses: real films as given and as another hospital would acquire them
(rarely, or the guard stands between a patient and the model) and images that are not chest films (always;
evaluation.not_films makes them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from xraycnn.evaluation.not_films import not_films
from xraycnn.model.input_guard import GuardedNetwork, InputGuard


@dataclass(frozen=True)
class GuardRates:
    """Shares refused: of the films as given (from each film's score), under each acquisition change, and of
    each kind of non-film."""

    film_scores: np.ndarray
    changed: dict[str, float]
    not_films: dict[str, float]
    guard: InputGuard

    @property
    def refused(self) -> np.ndarray:
        """Which of the films as given the guard refuses."""
        return self.guard.refused(self.film_scores)

    @property
    def films(self) -> float:
        return float(self.refused.mean()) if len(self.film_scores) else float("nan")

    @property
    def limit(self) -> float:
        return self.guard.limit

    @property
    def worst_change(self) -> str | None:
        return max(self.changed, key=self.changed.__getitem__) if self.changed else None

    @property
    def not_films_overall(self) -> float:
        return float(np.mean(list(self.not_films.values()))) if self.not_films else float("nan")

    def metrics(self, prefix: str) -> dict[str, float]:
        """As run metrics: `<prefix>guard_refused`, `<prefix>guard_refused_shift_worst`, and of the non-films
        `guard_refused_not_film_<kind>` and their mean over kinds `guard_refused_not_films`."""
        out = {f"{prefix}guard_refused": self.films, "guard_limit": self.limit}
        if self.changed:
            out[f"{prefix}guard_refused_shift_worst"] = self.changed[str(self.worst_change)]
            out |= {f"{prefix}guard_refused_shift_{name}": share for name, share in self.changed.items()}
        out |= {f"guard_refused_not_film_{kind}": share for kind, share in self.not_films.items()}
        if self.not_films:
            out["guard_refused_not_films"] = self.not_films_overall
        return out

    def describe(self) -> str:
        worst = self.worst_change
        shifted = f", {self.changed[worst]:.1%} under the worst acquisition change ({worst})" if worst else ""
        kinds = ", ".join(f"{kind} {share:.0%}" for kind, share in self.not_films.items())
        return f"refuses {self.films:.1%} of the films{shifted}; of images that are not chest films: {kinds}"


def guard_rates(
    screen: GuardedNetwork, films: np.ndarray, changed_scores: Mapping[str, np.ndarray] | None = None, seed: int = 0
) -> GuardRates:
    """The scores of `films` by `screen`'s guard (which it must have), and its refusal shares on them, on the
    films changed whose scores `changed_scores` holds (scored with the calls they were assessed for, in one pass)
    and on the made non-films of the films' size."""
    guard = screen.guard
    if guard is None:
        raise ValueError("guard_rates: the network has no input guard")

    def share(scores: np.ndarray) -> float:
        return float(guard.refused(scores).mean()) if len(scores) else float("nan")

    size, channels = films.shape[1], films.shape[-1]
    return GuardRates(
        film_scores=screen(films)[1],
        changed={name: share(scores) for name, scores in (changed_scores or {}).items()},
        not_films={kind: share(screen(x)[1]) for kind, x in not_films(size, channels, seed).items()},
        guard=guard,
    )
