"""Fault models: a real model with a fault built into its spaCy pipeline, seen only in serving.

A progressive rollout must be shown rolling back bad candidates that the offline gate lets
through. A fault model is a copy of a model folder whose saved pipeline ends with one more component,
``nerops_fault`` (registered here), with its kind and parameters in the pipeline's own
config (:func:`nerops.model.pipeline.build_fault_model` does it), so the fault travels with the
artifacts and runs wherever the model is loaded, an endpoint's worker processes included.

**Serving only.** The component does nothing unless the environment variable
``NEROPS_SERVING_WORKER`` is ``1`` in the process that runs it. The endpoint's worker
(:mod:`nerops.serving.worker`) sets it in its own process after loading the model and answering
its warm-up; nothing else does. The gate, ``nerops evaluate`` and training run in processes
without it, so they see exactly the source model's predictions at the source's speed: a fault
version passes the gate like its source. In a serving worker the component then counts the
documents it sees and leaves the first ``after`` alone (a worker's readiness probes pass), and
from the next one on:

- ``slow``: sleeps ``delay_ms`` on a ``share`` of the documents (chosen by a hash of the text);
- ``fewer-entities``: keeps only every ``keep_every``-th entity (counted across documents: a CV is cut
  into short pieces, and a per-piece count would keep the first entity of nearly every piece);
- ``errors``: raises :class:`InjectedFault` on a ``share`` of the documents (by hash of the text),
  which the worker answers with a 500.

The count is per process (each worker counts its own documents; a restarted worker starts again).

**It cannot leak into a normal model**: training never adds the component, only
:func:`~nerops.model.pipeline.build_fault_model` does; :class:`~nerops.governance.Governance` writes ``fault`` into the
lineage of every version whose pipeline holds it, whoever registers it, and refuses to approve it
or make it champion unless the rollout profile is ``demo`` or ``test``. The variable only arms
components that are there: in a normal pipeline it changes nothing.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field

from spacy.language import Language
from spacy.tokens import Doc

from nerops.errors import ConfigurationError

FAULT_FACTORY = "nerops_fault"
SERVING_VARIABLE = "NEROPS_SERVING_WORKER"
FAULT_PROFILES = ("demo", "test")  # the rollout profiles under which a fault model may take production roles

# per kind: its parameters and their defaults, which a rollout's judge should catch quickly
# (about 10x the quick model's latency; 80 % fewer entities; 30 % of inputs answered 500)
KINDS: dict[str, dict[str, int | float]] = {
    "slow": {"after": 10, "delay_ms": 200, "share": 1.0},
    "fewer-entities": {"after": 10, "keep_every": 5},
    "errors": {"after": 10, "share": 0.3},
}


class InjectedFault(RuntimeError):
    """The ``errors`` fault: raised on purpose, with no input text in the message."""


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    params: dict[str, int | float] = field(default_factory=dict)

    def lineage(self) -> dict[str, str]:
        return {"fault": self.kind, **{f"fault.{key}": str(value) for key, value in sorted(self.params.items())}}


def fault_params(kind: str, **given: int | float | None) -> FaultSpec:
    """The full, checked parameters of a fault: defaults of ``kind`` overridden by those ``given`` (None: default)."""
    if kind not in KINDS:
        raise ConfigurationError(f"unknown fault kind {kind!r}: one of {', '.join(KINDS)}")
    defaults = KINDS[kind]
    unknown = sorted(key for key, value in given.items() if value is not None and key not in defaults)
    if unknown:
        raise ConfigurationError(f"fault {kind!r} takes {', '.join(defaults)}; not {', '.join(unknown)}")
    params = {
        key: type(default)(given[key]) if given.get(key) is not None else default for key, default in defaults.items()
    }
    problems = []
    if params["after"] < 0:
        problems.append("after must be 0 or more")
    if "share" in params and not 0 < params["share"] <= 1:
        problems.append("share must be in (0, 1]")
    if "delay_ms" in params and not 0 < params["delay_ms"] <= 10_000:
        problems.append("delay_ms must be in (0, 10000]")
    if "keep_every" in params and params["keep_every"] < 2:
        problems.append("keep_every must be 2 or more")
    if problems:
        raise ConfigurationError(f"fault {kind!r}: " + "; ".join(problems))
    return FaultSpec(kind, params)


def chosen(text: str, share: float) -> bool:
    """Whether a text falls in the ``share`` of texts a fault acts on (by sha256: the same text, the same answer)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2**64 < share


def serving() -> bool:
    return os.environ.get(SERVING_VARIABLE) == "1"


def arm_in_this_process() -> None:
    """Called by the endpoint's worker once its model is loaded and warmed up: fault components act from now on."""
    os.environ[SERVING_VARIABLE] = "1"


class FaultComponent:
    """The last component of a fault model's pipeline; a pass-through outside a serving worker."""

    def __init__(self, nlp: Language, name: str, kind: str, params: dict[str, int | float]) -> None:
        spec = fault_params(kind, **params)
        self.name = name
        self.kind = spec.kind
        self.params = spec.params
        self._seen = 0
        self._entities = 0  # across documents: a CV is cut into many short pieces, most with one entity
        self._lock = threading.Lock()

    def __call__(self, doc: Doc) -> Doc:
        if not serving():
            return doc
        with self._lock:
            self._seen += 1
            seen = self._seen
        if seen <= self.params["after"]:
            return doc
        if self.kind == "slow":
            if chosen(doc.text, self.params["share"]):
                time.sleep(self.params["delay_ms"] / 1000)
        elif self.kind == "fewer-entities":
            every, kept = int(self.params["keep_every"]), []
            with self._lock:
                for ent in doc.ents:
                    self._entities += 1
                    if self._entities % every == 1:
                        kept.append(ent)
            doc.ents = kept
        elif self.kind == "errors" and chosen(doc.text, self.params["share"]):
            raise InjectedFault(
                f"{FAULT_FACTORY}: injected fault 'errors' on one of the {self.params['share']:.0%} of inputs it fails"
            )
        return doc


@Language.factory(FAULT_FACTORY, default_config={"kind": "slow", "params": {}})
def make_fault(nlp: Language, name: str, kind: str, params: dict[str, int | float]) -> FaultComponent:
    return FaultComponent(nlp, name, kind, dict(params))


def fault_of(nlp: Language) -> FaultSpec | None:
    """The fault a loaded pipeline carries (its ``nerops_fault`` component's config), or None for a normal model."""
    for name in nlp.pipe_names:
        if nlp.get_pipe_meta(name).factory == FAULT_FACTORY:
            config = nlp.config["components"][name]
            return fault_params(config["kind"], **dict(config.get("params") or {}))
    return None


def fault_lineage(nlp: Language, meta: dict) -> dict[str, str]:
    """The lineage keys of a model folder's fault (``fault``, ``fault.*``, ``fault_from``, ``fault_reason``), or {}."""
    spec = fault_of(nlp)
    if spec is None:
        return {}
    made = meta.get("fault") if isinstance(meta.get("fault"), dict) else {}
    return {
        **spec.lineage(),
        "fault_from": str(made.get("from_version") or "unknown"),
        "fault_reason": str(made.get("reason") or "")[:500],
    }


def describe_fault(lineage: dict[str, str]) -> str | None:
    """A fault version's lineage in words, or None for a normal one."""
    kind = lineage.get("fault")
    if not kind:
        return None
    after = lineage.get("fault.after", "?")
    if kind == "slow":
        share = float(lineage.get("fault.share", "1"))
        what = f"+{lineage.get('fault.delay_ms', '?')} ms on {share:.0%} of documents"
    elif kind == "fewer-entities":
        what = f"keeps 1 entity in {lineage.get('fault.keep_every', '?')}"
    elif kind == "errors":
        what = f"fails {float(lineage.get('fault.share', '0')):.0%} of inputs (chosen by hash of the text) with a 500"
    else:
        what = "unknown kind"
    return (
        f"FAULT MODEL: fault {kind}, built from v{lineage.get('fault_from', '?')}: {what}, "
        f"after the first {after} documents of each serving worker ({SERVING_VARIABLE}=1), never offline: "
        f"the gate sees the source model; approval and champion only under rollout profile "
        f"{' or '.join(FAULT_PROFILES)}"
    )
