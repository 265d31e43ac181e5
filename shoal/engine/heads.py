"""Trained heads: which classifier answers from one, training new ones, and choosing the active one.

Extractors are trained the same way into span heads (`shoal.span_training`): the fields a span
head knows are read off the text, the rest stay prompted.

A classifier answers by prompting until `shoal train` (or a `head =` file in its settings) gives it
a head; `[specialists.NAME] mode` says which. Heads live in the store, so a head trained in one
process is picked up by the next.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from shoal.config import Settings, SpecialistSettings
from shoal.engine import views
from shoal.engine.views import HeadSummary
from shoal.errors import ConfigError
from shoal.evaluation import Labelled
from shoal.models.embeddings import Embedder
from shoal.models.router import ModelRouter
from shoal.span_training import load_span_head, train_span_head
from shoal.specialists.base import Specialist
from shoal.specialists.classifier import Classifier
from shoal.specialists.extractor import Extractor
from shoal.specialists.heads import MIN_PER_LABEL, TrainedHead
from shoal.specialists.spans import SpanHead, TokenReader
from shoal.store.db import Store
from shoal.training import Progress as TrainProgress
from shoal.training import TrainReport, load_head, train_head

Learner = Classifier | Extractor[Any]

Specialists = dict[str, Specialist[Any, Any]]


class HeadDesk:
    def __init__(
        self, settings: Settings, router: ModelRouter, store: Store, specialists: Callable[[], Specialists]
    ) -> None:
        self.settings = settings
        self.router = router
        self.store = store
        self._specialists = specialists  # every specialist of every workflow, built on first use
        self._embedders: dict[str, Embedder] = {}
        self._readers: dict[str, TokenReader] = {}
        self._attached: set[str] = set()

    def embedder(self, key: str) -> Embedder:
        """The embedder a specialist's head reads, caching vectors in the store."""
        if key not in self._embedders:
            self._embedders[key] = Embedder(self.router, self.settings.embed_model_for(key), cache=self.store)
        return self._embedders[key]

    def token_reader(self, key: str) -> TokenReader:
        """The per-token reader an extractor's span head reads, caching training texts in the store."""
        if key not in self._readers:
            self._readers[key] = TokenReader(self.router, self.settings.embed_model_for(key), cache=self.store)
        return self._readers[key]

    def attach(self, specialists: Specialists) -> None:
        """Give each classifier its trained head, and each extractor its span head, as
        `[specialists.NAME] mode` says."""
        for key, specialist in specialists.items():
            if key in self._attached:
                continue
            chosen = self.settings.specialists.get(key, SpecialistSettings())
            if isinstance(specialist, Extractor):
                spans = None if chosen.mode == "prompt" else self._span_head_for(key, chosen)
                if spans is not None:
                    specialist.use_span_head(spans, self.token_reader(key))
                self._attached.add(key)
                continue
            if not isinstance(specialist, Classifier):
                continue
            head = None if chosen.mode == "prompt" else self._head_for(key, chosen)
            if head is not None:
                specialist.use_head(head, self.embedder(key))
            self._attached.add(key)

    def _head_for(self, key: str, chosen: SpecialistSettings) -> TrainedHead | None:
        if chosen.head is not None:
            try:
                blob = self.settings.resolve(chosen.head).read_bytes()
            except OSError as exc:
                raise ConfigError(f"[specialists.{key}] head = {str(chosen.head)!r} cannot be read: {exc}") from None
            return TrainedHead.from_bytes(blob, where=str(chosen.head))
        row = self.store.active_head(key)
        if row is None:
            if chosen.mode == "trained":
                raise ConfigError(
                    f'[specialists.{key}] mode = "trained" but no head is trained for {key}: run '
                    f'`shoal train {key} --data FILE`, or set mode = "auto" to prompt until one is'
                )
            return None
        return load_head(row)

    def _span_head_for(self, key: str, chosen: SpecialistSettings) -> SpanHead | None:
        if chosen.head is not None:
            try:
                blob = self.settings.resolve(chosen.head).read_bytes()
            except OSError as exc:
                raise ConfigError(f"[specialists.{key}] head = {str(chosen.head)!r} cannot be read: {exc}") from None
            return SpanHead.from_bytes(blob, where=str(chosen.head))
        row = self.store.active_head(key)
        if row is None:
            if chosen.mode == "trained":
                raise ConfigError(
                    f'[specialists.{key}] mode = "trained" but no span head is trained for {key}: run '
                    f'`shoal train {key} --data FILE`, or set mode = "auto" to prompt until one is'
                )
            return None
        return load_span_head(row)

    def learner(self, key: str) -> Learner:
        """The specialist `shoal train KEY` trains: a classifier (a head) or an extractor (a span head)."""
        every = self._specialists()
        found = every.get(key)
        if found is None:
            known = sorted(k for k, s in every.items() if isinstance(s, Classifier | Extractor))
            raise ConfigError(f"no specialist named {key!r}; the classifiers and extractors are: {', '.join(known)}")
        if not isinstance(found, Classifier | Extractor):
            raise ConfigError(
                f"{key} is a {type(found).__name__}; only classifiers can be trained (and extractors, into span heads)"
            )
        return found

    def trainable(self, key: str) -> Classifier:
        found = self.learner(key)
        if not isinstance(found, Classifier):
            raise ConfigError(f"{key} is an extractor; this needs a classifier")
        return found

    async def train(
        self,
        key: str,
        *,
        files: Sequence[Labelled] = (),
        holdout: float = 0.2,
        min_per_label: int = MIN_PER_LABEL,
        baseline: int = 200,
        force: bool = False,
        progress: TrainProgress | None = None,
    ) -> TrainReport:
        """(Re)train `key`'s head from `files` and stored examples; see `shoal.training` (and
        `shoal.span_training` for an extractor, whose `files` labels are JSON field -> value)."""
        found = self.learner(key)
        if isinstance(found, Extractor):
            return await self._train_spans(
                found, key, files=files, holdout=holdout, baseline=baseline, force=force, progress=progress
            )
        classifier = found
        self.attach({key: classifier})  # the active head, if any, is what the new one must beat
        report, head = await train_head(
            classifier,
            key,
            store=self.store,
            embedder=self.embedder(key),
            files=files,
            holdout=holdout,
            min_per_label=min_per_label,
            baseline=baseline,
            force=force,
            progress=progress,
        )
        if self._takes_new_head(key, report):
            classifier.use_head(head, self.embedder(key))
        return report

    async def _train_spans(
        self,
        extractor: Extractor[Any],
        key: str,
        *,
        files: Sequence[Labelled],
        holdout: float,
        baseline: int,
        force: bool,
        progress: TrainProgress | None,
    ) -> TrainReport:
        self.attach({key: extractor})  # the active span head, if any, is what the new one must beat
        report, head = await train_span_head(
            extractor,
            key,
            store=self.store,
            reader=self.token_reader(key),
            files=files,
            holdout=holdout,
            baseline=baseline,
            force=force,
            progress=progress,
        )
        if self._takes_new_head(key, report):
            extractor.use_span_head(head, self.token_reader(key))
        return report

    def _takes_new_head(self, key: str, report: TrainReport) -> bool:
        """Whether this process answers with the head just trained: it was activated, and the
        settings neither pin a head file nor ask for prompting. Marks `key` attached if so."""
        chosen = self.settings.specialists.get(key, SpecialistSettings())
        if not report.activated or chosen.head is not None or chosen.mode == "prompt":
            return False
        self._attached.add(key)
        return True

    def summaries(self) -> list[HeadSummary]:
        """Every trained head, for `shoal models` and the TUI (the view `shoal heads` prints)."""
        return views.head_summaries(self.store)

    def activate(self, key: str, version: int) -> None:
        """Make a stored head version the active one, here and for processes started later."""
        found = self.learner(key)
        row = self.store.activate_head(key, version)
        if self.settings.specialists.get(key, SpecialistSettings()).mode != "prompt":
            if isinstance(found, Extractor):
                found.use_span_head(load_span_head(row), self.token_reader(key))
            else:
                found.use_head(load_head(row), self.embedder(key))
            self._attached.add(key)
