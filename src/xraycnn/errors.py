"""The errors a user can fix.

Every `XrayCnnError` carries one message that says what is wrong and what to do about it; the CLI prints
that message alone (no traceback) and exits with status 2. Anything else is a bug and keeps its traceback.
"""


class XrayCnnError(Exception):
    """An error caused by the user's input or environment, with a message that says how to fix it."""

    exit_code = 2


class ConfigError(XrayCnnError):
    """An experiment file that cannot be used."""


class DataLayoutError(XrayCnnError):
    """A dataset folder that does not have the expected layout."""


class DataUnusableError(XrayCnnError):
    """A dataset whose readable images are too few to train and evaluate on."""


class ModelNotFoundError(XrayCnnError):
    """A model URI that does not resolve to a registered or logged model."""


class SearchLockedError(XrayCnnError):
    """Another process is already running a search of the same experiment."""


class RegistryError(XrayCnnError):
    """Logging or registering a model failed; the previous champion is untouched."""


class UnsafeModelError(XrayCnnError):
    """A model file that would run code of its own when loaded, or is not in the .keras format."""


class InterruptedByUserError(XrayCnnError):
    """Ctrl-C: what was running is closed cleanly; the message says how to go on."""

    exit_code = 130  # the shell's convention for SIGINT


class TrackingIncompleteError(XrayCnnError):
    """The search itself finished, but some of its MLflow writes failed: some trial runs are incomplete."""

    exit_code = 3  # distinct from 2: the search ran; what it logged is not all there


class SearchPausedError(XrayCnnError):
    """The search stopped for a cause outside it (the tracking store away, a full disk): its parent run stays
    RUNNING, its writes wait in its spool, and the same command resumes it once the cause is gone."""


class DiskFullError(SearchPausedError):
    """A file system the search writes to (the tracking spool, the tuner's state, the store's database or
    artifacts) is full: the message names it."""


class TrackingStoreUnavailableError(SearchPausedError):
    """The tracking store stayed away: what the search logged is safe in its spool, to be sent by `xraycnn sync`."""

    exit_code = 75  # EX_TEMPFAIL (sysexits.h): a temporary failure, the same command can be retried later


class ChiefGoneError(XrayCnnError):
    """A worker of a distributed search whose chief stopped answering: it stopped cleanly, its run closed."""

    exit_code = 75  # temporary: the same command works again once the chief is back
