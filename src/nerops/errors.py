"""The project's exceptions, as one small tree.

    NeropsError
    ├── ConfigurationError       bad settings or arguments: fail at start-up, never retried
    ├── MissingDependencyError   an optional extra is not installed: says what to install
    ├── DataError                an input file is missing, corrupt or malformed: names the file
    │   └── ChecksumError        a file's sha256 is not the pinned one
    ├── ModelError               a model folder cannot be loaded or used
    ├── RegistryError            unknown model version or alias, bad reference
    ├── LineageError             lineage tags or artifacts changed since registration
    ├── PromotionError           an approval or champion change refused: no current pass, not prod, a path
    │   └── ConflictError        a competing change came first ("champion moved from 3 to 4 at ...")
    ├── LedgerError              the audit ledger cannot be read or appended to safely
    └── TransientBackendError    a backend failed in a way worth retrying

Messages never carry resume text: they name files, labels, offsets and counts only.
"""

from __future__ import annotations

from pathlib import Path


class NeropsError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(NeropsError):
    """Settings or arguments are wrong; fix them and run again."""


class MissingDependencyError(NeropsError):
    """An optional dependency is missing."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"{package} is not installed: pip install 'nerops[{extra}]'")
        self.package = package
        self.extra = extra


class DataError(NeropsError):
    """An input data file is missing, corrupt or malformed."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


class ChecksumError(DataError):
    """A data file's sha256 differs from the pinned one."""


class ModelError(NeropsError):
    """A model folder cannot be loaded or used."""


class TransientBackendError(NeropsError):
    """A backend failed in a way that a retry may fix."""


class RegistryError(NeropsError):
    """The model registry refused a request (unknown version, bad reference)."""


class LineageError(NeropsError):
    """A model version's lineage tags or artifacts differ from what was recorded at registration."""


class PromotionError(NeropsError):
    """An approval or champion change was refused: no current gate pass, a bad reference, or broken lineage."""


class ConflictError(PromotionError):
    """A compare-and-append lost: what the caller expected (e.g. the champion) changed first; the message says how."""


class LedgerError(NeropsError):
    """The audit ledger cannot be read or appended to safely (a broken tail, an anchor mismatch)."""
