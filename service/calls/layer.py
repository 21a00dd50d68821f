"""The call layer as the doors receive it: every call both doors make, over one set of versions, and
the observer of each call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.calls.classify import ClassifyCalls
from service.calls.infer import InferenceCalls
from service.calls.predict import SentimentCalls
from service.calls.repository import RepositoryCalls

if TYPE_CHECKING:
    from service.calls.observe import CallObserver
    from service.ops.settings import ModelControl
    from service.versions.changes import VersionChanges


@dataclass(frozen=True)
class Calls:
    sentiment: SentimentCalls
    inference: InferenceCalls
    repository: RepositoryCalls
    classify: ClassifyCalls
    observer: CallObserver

    @classmethod
    def over(cls, changes: VersionChanges, control: ModelControl, observer: CallObserver) -> Calls:
        """The calls over the versions `changes` keeps; control: whether repository calls may load."""
        models = changes.models
        return cls(
            SentimentCalls(models),
            InferenceCalls(models),
            RepositoryCalls(changes, control),
            ClassifyCalls(models),
            observer,
        )
