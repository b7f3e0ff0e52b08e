"""Answering recommendation requests from the live model version and the log.

Each request reads the user's newest events from the event log, so an event
written a moment ago shapes the very next answer, before any retraining.
Users the log has never seen get what is trending (most frequent items among
the newest events) instead of an error.

Everything a request needs (model, item table, vocabulary, search index) sits
in one :class:`LoadedVersion`. Writers (a hot-swap, an item upsert) build a new
one and replace ``Runtime.loaded`` in a single assignment; a request takes
``loaded = self.loaded`` once at its start, so it never sees half an update
and never waits for one. Writers are serialised among themselves by a lock
that readers never take.

Items added after training (``upsert_items``) are searchable at once. For
``text`` and ``hybrid`` models they are also recommendable at once: their row
in the scoring table is the model's text projection of their text embedding
(the same row a cold item gets in training). An ``id`` model cannot score an
item it never trained on, so such items wait for the next training.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

from streamrec import experiments
from streamrec.experiments import Experiment
from streamrec.home import Home
from streamrec.items import Item
from streamrec.models.base import top_k
from streamrec.models.categories import CategoryHead
from streamrec.models.reranker import CANDIDATES as RERANK_CANDIDATES
from streamrec.models.reranker import HISTORY_ITEMS, LMReranker
from streamrec.models.sasrec import SASRec
from streamrec.privacy import forget_in, trained_since
from streamrec.pseudonyms import as_stored
from streamrec.registry import Registry, VersionInfo
from streamrec.serving.cache import ResultCache
from streamrec.serving.rerank import because, candidates_for, mmr
from streamrec.serving.retrieval import Retriever, make_retriever
from streamrec.store import Store
from streamrec.store.base import ForgetRecord
from streamrec.text import DEFAULT_TEXT_MODEL, TextEncoder

CATEGORY_MIN_PROBABILITY = 0.5  # a guessed category is stored only when at least this likely
TRENDING_WINDOW = 50_000  # newest events that define "trending"
SEARCH_CANDIDATES = 100  # items retrieved by text similarity before personal re-ranking
# Personalised search: final = cosine(query, item) + PERSONAL_WEIGHT * (r_model - 0.5), where
# r_model in [0, 1] is the item's rank-normalised model score among the candidates (1 = best).
# The model moves an item by at most ±0.075 in cosine units: it reorders items of similar
# relevance (within a topic) but cannot lift an off-topic item above a clearly relevant one.
PERSONAL_WEIGHT = 0.15

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchIndex:
    """Unit-norm text embeddings of every catalogue item (row ``r`` is ``item_ids[r]``)."""

    text_model: str
    item_ids: list[str]
    rows: dict[str, int]
    matrix: np.ndarray  # float32 [n_catalogue, text_dim]; [0, 0] while the catalogue is empty
    categories: dict[str, str]
    titles: dict[str, str]  # answers carry titles without a catalogue query per item
    revision: int = 0  # the store's Catalog.revision this view holds every upsert of

    def __len__(self) -> int:
        return len(self.item_ids)


@dataclass(frozen=True)
class RecommendRequest:
    """What ``GET /recommend/{user_id}`` asks; its fields after ``user_id`` are part of the cache key."""

    user_id: str
    k: int = 10
    exclude_seen: bool = True
    category: str | None = None
    version: str | None = None  # None: the live version; else the version of the user's experiment arm
    diversity: float = 0.0  # MMR's λ (serving/rerank.py): 0 keeps the model's ranking
    explain: bool = False  # name the history items behind each recommended item


@dataclass
class LoadedVersion:
    """One consistent view for a request: never mutated, replaced whole by writers."""

    version: str
    model: SASRec
    items: list[str]  # code -> item id: the trained vocabulary, then items added since
    index: dict[str, int]
    table: torch.Tensor | None = None  # [len(items) + 1, hidden]; row 0 is padding
    search: SearchIndex | None = None
    retriever: Retriever | None = None  # top-k over table rows: exact below ANN_THRESHOLD items, else ANN
    retrieved: np.ndarray | None = None  # sorted codes the retriever holds, by row; None: row r is code r
    text_model: str = DEFAULT_TEXT_MODEL
    info: VersionInfo | None = None
    categories: CategoryHead | None = None  # fills a new item's missing category (models/categories.py)
    reranker: LMReranker | None = None  # re-scores the top candidates (models/reranker.py)
    loaded_at: float = field(default_factory=time.time)
    # Not copied by dataclasses.replace: every new view (swap, upsert) starts with an empty cache.
    answers: ResultCache = field(default_factory=ResultCache, init=False, repr=False, compare=False)

    def rows_of(self, codes: np.ndarray) -> np.ndarray:
        """The retriever's rows of ``codes`` (codes it does not hold are left out)."""
        if self.retrieved is None:
            return codes
        at = np.searchsorted(self.retrieved, codes)
        inside = at < len(self.retrieved)
        return at[inside][self.retrieved[at[inside]] == codes[inside]]

    def codes_of(self, rows: np.ndarray) -> np.ndarray:
        return rows if self.retrieved is None else self.retrieved[rows]

    @property
    def uses_text(self) -> bool:
        """Whether the model can score items from text alone (``text`` / ``hybrid`` towers)."""
        return self.model.uses_text


def text_model_of(info: VersionInfo) -> str:
    """The text model a version was trained with (the default, for search, for ID-only versions)."""
    return info.text_model or DEFAULT_TEXT_MODEL


def _rank_normalised(scores: np.ndarray) -> np.ndarray:
    """1 for the best score, 0 for the worst, evenly spaced by rank (ties broken by position)."""
    if len(scores) < 2:
        return np.ones(len(scores), dtype=np.float32)
    ranks = np.empty(len(scores), dtype=np.float32)
    ranks[np.argsort(-scores, kind="stable")] = np.arange(len(scores), dtype=np.float32)
    return 1.0 - ranks / (len(scores) - 1)


@dataclass(frozen=True)
class Upserted:
    """What became of an item sent to :meth:`Runtime.upsert_items`."""

    recommendable: bool  # the live model can rank it now
    category: str  # as stored: as sent, or guessed when it came without one
    category_guessed: bool
    category_probability: float | None  # the guess's probability (also when too unsure to store)


class Runtime:
    """The live model plus the store, ready to answer.

    ``on_cache(hit)`` is told of every lookup in the per-user result cache (the server counts them).
    ``user_key`` turns a user id a request names into the id the store holds (a pseudonym, when the
    home's settings ask for them); answers show the id as asked.
    """

    def __init__(
        self,
        store: Store,
        registry: Registry,
        *,
        on_cache: Callable[[bool], None] | None = None,
        user_key: Callable[[str], str] = as_stored,
    ) -> None:
        self.store = store
        self.registry = registry
        self.on_cache = on_cache
        self.user_key = user_key
        self._write_lock = threading.RLock()  # serialises swaps and upserts; readers never take it
        self._encode_lock = threading.Lock()  # fast tokenizers are not safe to share between threads
        self._encoders: dict[str, TextEncoder] = {}
        self.loaded = self.load_live()
        self.experiment: Experiment | None = None  # the running A/B test (follow_experiment)
        self._arms: dict[str, LoadedVersion] = {}  # its versions other than the live one

    @classmethod
    def open(cls, home: str | Path, *, on_cache: Callable[[bool], None] | None = None) -> Runtime:
        home = Path(home)
        opened = Home.open(home)
        if not opened.has_registry():
            raise FileNotFoundError(f"no model in {home}: run `streamrec train --home {home}` first")
        store = opened.open_store()
        return cls(store, opened.registry, on_cache=on_cache, user_key=opened.settings.privacy.user_key())

    @property
    def home(self) -> Path:
        return self.registry.root.parent

    # ----- loading and hot-swapping -----

    def load_live(self) -> LoadedVersion:
        version = self.registry.live()
        if version is None:
            raise LookupError("no live model version: train or promote one first")
        return self._build(version)

    def _build(self, version: str, *, fresh_search: bool = False) -> LoadedVersion:
        """Load ``version`` completely (weights, item table, search index) without touching ``loaded``."""
        info = self.registry.get(version)
        items = self.registry.items(version)
        model = SASRec.load(self.registry.path(version))
        table = model.item_table()
        text_model = text_model_of(info)
        # An ID-only model's untrained items have zero rows: a million of them would swamp the
        # ANN graph (and none can be ranked), so the retriever holds the scorable rows only.
        unscorable = model.unscorable()
        retrieved = np.setdiff1d(np.arange(len(items)), unscorable) if len(unscorable) else None
        rows = table[1:] if retrieved is None else table[1:][torch.from_numpy(retrieved).to(table.device)]
        current: LoadedVersion | None = getattr(self, "loaded", None)
        search = current.search if current is not None and not fresh_search else None
        if search is None or search.text_model != text_model:
            search = self._build_search(text_model)
        loaded = LoadedVersion(
            version,
            model,
            items,
            {item: code for code, item in enumerate(items)},
            table,
            search,
            # a hybrid model's trained rows are searched apart from its text-only ones (retrieval.py)
            make_retriever(len(rows), apart=None if retrieved is not None else model.learned_rows()).build(
                rows.float().cpu().numpy()
            ),
            retrieved,
            text_model,
            info,
            CategoryHead.load(self.registry.path(version)),
            LMReranker.load(self.registry.path(version)),
        )
        added = [item for item in search.item_ids if item not in loaded.index]
        return self._with_text_rows(loaded, added) if added else loaded

    def _build_search(self, text_model: str) -> SearchIndex:
        revision = self.store.catalog.revision()  # read first: a later upsert makes it stale, not lost
        catalogue = self.store.catalog.all()
        ids = [item.item_id for item in catalogue]
        matrix = (
            self.encode_items(text_model, [item.text for item in catalogue])
            if catalogue
            else np.zeros((0, 0), dtype=np.float32)
        )
        return SearchIndex(
            text_model,
            ids,
            {item: row for row, item in enumerate(ids)},
            matrix,
            {item.item_id: item.category for item in catalogue},
            {item.item_id: item.title for item in catalogue},
            revision,
        )

    def _with_text_rows(self, loaded: LoadedVersion, item_ids: Sequence[str]) -> LoadedVersion:
        """A copy of ``loaded`` whose table (re)computes ``item_ids``' rows from their search embeddings.

        Items outside the vocabulary are appended. Id-only models, and text models whose
        embedding width differs from the search index's, are returned unchanged. A model whose
        language model was tuned reads the items' texts through its own tuned encoder instead.
        """
        model, search = loaded.model, loaded.search
        if not item_ids or search is None or not model.uses_text:
            return loaded
        if not model.text_tuned and search.matrix.shape[1] != model.text_dim:
            log.warning("search embeddings do not fit %s's text projection: new items wait", loaded.version)
            return loaded
        items, index = list(loaded.items), dict(loaded.index)
        for item in item_ids:
            if item not in index:
                index[item] = len(items)
                items.append(item)
        codes = [index[item] for item in item_ids]
        if model.text_tuned:
            catalogue = [self.store.catalog.get(item) for item in item_ids]
            text = model.tuned_text(
                [item.text if item else name for item, name in zip(catalogue, item_ids, strict=True)]
            )
        else:
            text = search.matrix[[search.rows[item] for item in item_ids]]
        rows = model.items_from_text(text, [c if c < model.n_items else None for c in codes])
        assert loaded.table is not None
        table = loaded.table
        if len(items) + 1 > table.shape[0]:
            grow = table.new_zeros(len(items) + 1 - table.shape[0], table.shape[1])
            table = torch.cat([table, grow])
        else:
            table = table.clone()
        table[torch.tensor(codes, device=table.device) + 1] = rows
        retriever = None if loaded.retriever is None else loaded.retriever.copy()
        if retriever is not None:
            known = np.array([c for c in codes if c < len(retriever)], dtype=np.int64)
            if len(known):
                retriever.replace(
                    known, table[torch.from_numpy(known).to(table.device) + 1].float().cpu().numpy()
                )
            retriever.add(table[len(retriever) + 1 :].float().cpu().numpy())
        return dataclasses.replace(loaded, items=items, index=index, table=table, retriever=retriever)

    def swap_to(self, version: str) -> LoadedVersion:
        """Serve ``version``: it is loaded fully first, then replaces the current one in one assignment."""
        with self._write_lock:
            self.loaded = self._build(version)
            log.info("serving model %s", version)
            return self.loaded

    def promote(self, version: str) -> VersionInfo:
        """Make ``version`` live and serve it; a version that fails to load is never promoted."""
        with self._write_lock:
            ready = self.loaded if self.loaded.version == version else self._build(version)
            info = self.registry.promote(version)
            self.loaded = ready
            return info

    def rollback(self) -> VersionInfo:
        """Serve the version live before this one again (LookupError if there is none)."""
        with self._write_lock:
            target = self.registry.rollback_target()
            if target is None:
                raise LookupError("no earlier live version to roll back to")
            ready = self._build(target)
            info = self.registry.rollback()
            self.loaded = ready
            return info

    def refresh(self) -> bool:
        """Swap to the registry's live version if another process promoted one; True if swapped."""
        live = self.registry.live()
        if live is None or live == self.loaded.version:
            return False
        with self._write_lock:
            live = self.registry.live()
            if live is None or live == self.loaded.version:
                return False
            self.swap_to(live)
            return True

    def follow_experiment(self) -> Experiment | None:
        """Follow the registry's running experiment: load its versions before its first request."""
        current = experiments.running(self.registry)
        if current is not None:
            for version in (current.a, current.b):
                self.version(version)
        self.experiment = current
        wanted = {current.a, current.b} if current is not None else set()
        self._arms = {name: loaded for name, loaded in self._arms.items() if name in wanted}
        return current

    def arm_of(self, user_id: str) -> tuple[str, str] | None:
        """``(label, version)`` of the experiment arm ``user_id`` is in; None when none runs."""
        experiment = self.experiment
        if experiment is None:
            return None
        arm = experiment.arm_of(user_id)
        return experiment.label(arm), experiment.version_of(arm)

    def version(self, name: str | None) -> LoadedVersion:
        """The live version (``None``), or another stored one an experiment answers with."""
        loaded = self.loaded
        if name is None or name == loaded.version:
            return loaded
        other = self._arms.get(name)
        if other is None:
            with self._write_lock:
                other = self._arms.get(name)
                if other is None:
                    other = self._arms[name] = self._build(name)
        return other

    def follow_catalogue(self) -> bool:
        """Reload if another process changed the catalogue since this view was built; True if so."""
        search = self.loaded.search
        if search is None or self.store.catalog.revision() == search.revision:
            return False
        self.reload()
        return True

    def reload(self) -> LoadedVersion:
        """Rebuild the live version and the search index from disk (catalogue edits by other processes)."""
        with self._write_lock:
            version = self.registry.live()
            if version is None:
                raise LookupError("no live model version: train or promote one first")
            self.loaded = self._build(version, fresh_search=True)
            return self.loaded

    # ----- text -----

    def _encoder_for(self, text_model: str) -> TextEncoder:
        """One encoder per text model, with the home's embedding cache for item texts."""
        encoder = self._encoders.get(text_model)
        if encoder is None:
            encoder = self._encoders[text_model] = Home.open(self.home).text_encoder(text_model)
        return encoder

    def encode_items(self, text_model: str, texts: Sequence[str]) -> np.ndarray:
        with self._encode_lock:
            return self._encoder_for(text_model).encode(list(texts))

    def warm_up(self) -> None:
        """Load the query encoder now, so the first search does not wait seconds for it."""
        search = self.loaded.search
        if search is not None:
            self.encode_query(search.text_model, "warm up")

    def encode_query(self, text_model: str, text: str) -> np.ndarray:
        with self._encode_lock:
            return self._encoder_for(text_model).encode([text], use_cache=False)[0]

    # ----- catalogue writes -----

    def forget_user(self, user_id: str, requested_by: str) -> ForgetRecord:
        """Erase the user from the store (:mod:`streamrec.privacy`) and drop every cached answer."""
        record = forget_in(self.store, self.user_key(user_id), requested_by, trained_since(self.registry))
        self.loaded.answers.clear()
        return record

    def upsert_items(self, items: Sequence[Item]) -> dict[str, Upserted]:
        """Store items durably, make them searchable, and scorable where the model reads text.

        An item without a category gets the live version's prediction when it is at least
        :data:`CATEGORY_MIN_PROBABILITY` likely. Returns item id -> what became of it. Cost is
        one copy of the search matrix and the item table per call: upsert many items in one call.
        """
        latest = {item.item_id: item for item in items}
        guesses = self._guess_categories([item for item in latest.values() if not item.category])
        for item_id, (category, probability) in guesses.items():
            if probability >= CATEGORY_MIN_PROBABILITY:
                latest[item_id] = dataclasses.replace(latest[item_id], category=category)
        self.store.catalog.upsert(list(latest.values()))
        revision = self.store.catalog.revision()
        with self._write_lock:
            loaded = self.loaded
            search = loaded.search
            assert search is not None
            # Only this write since the view was built: the view stays current. Otherwise another
            # process wrote too, and follow_catalogue will reload everything.
            revision = revision if revision == search.revision + 1 else search.revision
            vectors = self.encode_items(search.text_model, [item.text for item in latest.values()])
            ids, rows = list(search.item_ids), dict(search.rows)
            matrix = search.matrix if len(search.matrix) else np.zeros((0, vectors.shape[1]), np.float32)
            fresh = [item for item in latest if item not in rows]
            matrix = np.concatenate([matrix, np.zeros((len(fresh), matrix.shape[1]), np.float32)])
            for item in fresh:
                rows[item] = len(ids)
                ids.append(item)
            matrix[[rows[item] for item in latest]] = vectors
            categories = {**search.categories, **{i.item_id: i.category for i in latest.values()}}
            titles = {**search.titles, **{i.item_id: i.title for i in latest.values()}}
            search = SearchIndex(search.text_model, ids, rows, matrix, categories, titles, revision)
            updated = self._with_text_rows(dataclasses.replace(loaded, search=search), list(latest))
            self.loaded = updated
        return {
            item_id: Upserted(
                item_id in updated.index,
                item.category,
                item_id in guesses and item.category != "",
                guesses[item_id][1] if item_id in guesses else None,
            )
            for item_id, item in latest.items()
        }

    def _guess_categories(self, items: Sequence[Item]) -> dict[str, tuple[str, float]]:
        """The live version's most likely category for each item, with its probability."""
        loaded = self.loaded
        head = loaded.categories
        if head is None or not items:
            return {}
        text = self.encode_items(loaded.text_model, [item.text for item in items])  # no category in it
        if text.shape[1] != head.text_dim:
            return {}
        # An item the model already knows (PUT again without a category) has history; a new one none.
        codes = np.array([loaded.index.get(item.item_id, -1) for item in items])
        known = (codes >= 0) & (codes < loaded.model.n_items)
        rows = loaded.model.id_rows(codes[known])
        behaviour = None
        if rows is not None:
            behaviour = np.zeros((len(items), rows.shape[1]), np.float32)
            behaviour[known] = rows
        return {item.item_id: guess for item, guess in zip(items, head.predict(text, behaviour), strict=True)}

    # ----- reads -----

    def trending(
        self, k: int, exclude: set[str] = frozenset(), category: str | None = None
    ) -> list[tuple[str, float]]:
        since = self.store.log.last_offset() - TRENDING_WINDOW
        limit = k + len(exclude) if category is None else max(1000, 50 * k + len(exclude))
        counts = self.store.log.popular_items(since, limit)
        ranked = [(item, float(n)) for item, n in counts if item not in exclude]
        if category is not None:
            ranked = [(item, n) for item, n in ranked if self.category(item) == category]
        return ranked[:k]

    def category(self, item_id: str) -> str | None:
        """The item's catalogue category (None when it has none or the catalogue lacks it)."""
        search = self.loaded.search
        if search is not None and item_id in search.categories:
            return search.categories[item_id]
        item = self.store.catalog.get(item_id)
        return item.category if item else None

    @staticmethod
    @torch.no_grad()
    def _states(loaded: LoadedVersion, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """The model's hidden states ``[len(histories), hidden]`` after each history (item codes)."""
        return loaded.model.user_states(histories, loaded.table)

    @classmethod
    def _scores(cls, loaded: LoadedVersion, history: np.ndarray) -> np.ndarray:
        """Scores of every item in ``loaded.items`` (trained and added) after ``history`` (codes)."""
        assert loaded.table is not None
        with torch.no_grad():
            scores = (cls._states(loaded, [history]) @ loaded.table[1:].T)[0].float().cpu().numpy()
        if loaded.retrieved is not None:  # an ID-only model ranks only the rows it trained (set at load)
            unscorable = np.ones(len(scores), dtype=bool)
            unscorable[loaded.retrieved] = False
            scores[unscorable] = -np.inf
        return scores

    def _rank(
        self, loaded: LoadedVersion, history: np.ndarray, k: int, *, exclude_seen: bool, category: str | None
    ) -> list[tuple[str, float]]:
        if category is None and loaded.retriever is not None:
            return self._search(loaded, [history], [k], [exclude_seen])[0]
        scores = self._scores(loaded, history)
        if exclude_seen and len(history):
            scores[history] = -np.inf
        if category is None:
            codes, values = top_k(scores, k)
            return [(loaded.items[c], float(s)) for c, s in zip(codes, values, strict=True)]
        # Score everything, then walk down the ranking keeping the category's items.
        categories = loaded.search.categories if loaded.search is not None else {}
        ranked = []
        for code in np.argsort(-scores, kind="stable"):
            if not np.isfinite(scores[code]) or len(ranked) == k:
                break
            if categories.get(loaded.items[code]) == category:
                ranked.append((loaded.items[code], float(scores[code])))
        return ranked

    def _answer(
        self, loaded: LoadedVersion, recent: list[str], k: int, *, exclude_seen: bool, category: str | None
    ) -> tuple[list[tuple[str, float]], str]:
        history = np.array([loaded.index[i] for i in recent if i in loaded.index], dtype=np.int64)
        if len(history):
            return self._rank(loaded, history, k, exclude_seen=exclude_seen, category=category), "model"
        return self.trending(k, set(recent) if exclude_seen else set(), category), "trending"

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        category: str | None = None,
        diversity: float = 0.0,
        explain: bool = False,
    ) -> dict[str, Any]:
        """The user's top-k (see :meth:`recommend_many`)."""
        request = RecommendRequest(user_id, k, exclude_seen, category, diversity=diversity, explain=explain)
        return self.recommend_many([request])[0]

    def recommend_many(self, requests: Sequence[RecommendRequest]) -> list[dict[str, Any]]:
        """Each request's top-k from the version it names (the live one by default)."""
        if all(request.version is None for request in requests):
            return self._recommend_with(self.loaded, requests)
        answers: list[dict[str, Any]] = [{}] * len(requests)
        for version in {request.version for request in requests}:
            chosen = [n for n, request in enumerate(requests) if request.version == version]
            together = self._recommend_with(self.version(version), [requests[n] for n in chosen])
            for n, answer in zip(chosen, together, strict=True):
                answers[n] = answer
        return answers

    def _recommend_with(
        self, loaded: LoadedVersion, requests: Sequence[RecommendRequest]
    ) -> list[dict[str, Any]]:
        """Each request's top-k; the model scores every uncached one together, in one forward pass.

        A model answer is cached in the loaded version's :class:`ResultCache`. It is a function
        of the loaded version and the user's events alone, so the user's newest log offset and
        the parameters are the key: a new event moves the offset, a swap or upsert brings a
        new, empty cache. A hit costs one index lookup, not a read of the recent items.
        Trending answers depend on everyone's events and are never cached. Answers may be
        shared: callers must not change them.
        """
        answers: list[dict[str, Any] | None] = [None] * len(requests)
        batched: list[tuple[int, tuple, np.ndarray]] = []  # (request, cache key, history) to score together
        for n, request in enumerate(requests):
            stored_id = self.user_key(request.user_id)
            key = (self.store.log.newest_offset(stored_id), *dataclasses.astuple(request))
            answers[n] = loaded.answers.get(key)
            if self.on_cache is not None:
                self.on_cache(answers[n] is not None)
            if answers[n] is not None:
                continue
            # An event landing now only makes this answer fresher than its key: the next request misses.
            recent = self.store.log.recent_items(stored_id, loaded.model.config.max_len)
            history = np.array([loaded.index[i] for i in recent if i in loaded.index], dtype=np.int64)
            if len(history) and request.category is None and loaded.retriever is not None:
                batched.append((n, key, history))
                continue
            answers[n] = answer = self._recommendations(
                loaded,
                request.user_id,
                recent,
                request.k,
                exclude_seen=request.exclude_seen,
                category=request.category,
                diversity=request.diversity,
                explain=request.explain,
            )
            if answer["source"] == "model":
                loaded.answers.put(key, answer)
        if batched:
            chosen = [requests[n] for n, _, _ in batched]
            together = self._search(
                loaded,
                [history for _, _, history in batched],
                [self._candidates(loaded, request.k, request.diversity) for request in chosen],
                [request.exclude_seen for request in chosen],
            )
            for (n, key, history), ranked in zip(batched, together, strict=True):
                request = requests[n]
                ranked = self._reranked(loaded, history, ranked, request.k, request.diversity)
                ranked = self._diversified(loaded, ranked, request.k, request.diversity)
                explained = history if request.explain else None
                answers[n] = answer = self._answer_json(loaded, request.user_id, ranked, "model", explained)
                loaded.answers.put(key, answer)
        done = [answer for answer in answers if answer is not None]
        assert len(done) == len(requests)
        return done

    def _search(
        self, loaded: LoadedVersion, histories: list[np.ndarray], ks: list[int], exclude_seen: list[bool]
    ) -> list[list[tuple[str, float]]]:
        """Top-``ks[i]`` after each history through the retriever: one forward pass, one search."""
        assert loaded.retriever is not None
        states = self._states(loaded, histories).float().cpu().numpy()
        banned = [
            loaded.rows_of(np.unique(history)) if exclude else np.zeros(0, np.int64)
            for history, exclude in zip(histories, exclude_seen, strict=True)
        ]
        rows, values = loaded.retriever.search(states, max(ks), exclude=banned)
        ranked = []
        for found, scores, k in zip(rows, values, ks, strict=True):
            keep = found[:k] >= 0
            codes = loaded.codes_of(found[:k][keep])
            ranked.append([(loaded.items[c], float(v)) for c, v in zip(codes, scores[:k][keep], strict=True)])
        return ranked

    def recommend_session(
        self,
        items: Sequence[str],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        category: str | None = None,
        diversity: float = 0.0,
        explain: bool = False,
    ) -> dict[str, Any]:
        """Recommendations for an anonymous session's items (oldest first); unknown ids are ignored."""
        loaded = self.loaded
        recent = list(items)[-loaded.model.config.max_len :]
        return self._recommendations(
            loaded,
            None,
            recent,
            k,
            exclude_seen=exclude_seen,
            category=category,
            diversity=diversity,
            explain=explain,
        )

    def _recommendations(
        self,
        loaded: LoadedVersion,
        user_id: str | None,
        recent: list[str],
        k: int,
        *,
        exclude_seen: bool,
        category: str | None,
        diversity: float = 0.0,
        explain: bool = False,
    ) -> dict[str, Any]:
        wanted = self._candidates(loaded, k, diversity)
        ranked, source = self._answer(loaded, recent, wanted, exclude_seen=exclude_seen, category=category)
        history = np.array([loaded.index[i] for i in recent if i in loaded.index], dtype=np.int64)
        if source == "model":
            ranked = self._reranked(loaded, history, ranked, k, diversity)
        ranked = self._diversified(loaded, ranked, k, diversity)
        return self._answer_json(loaded, user_id, ranked, source, history if explain else None)

    @staticmethod
    def item_vectors(loaded: LoadedVersion, items: Sequence[str]) -> np.ndarray:
        """The model's item vectors of ``items`` (zeros for items it has no row for)."""
        assert loaded.table is not None
        rows = np.array([loaded.index.get(item, -1) + 1 for item in items], dtype=np.int64)
        return loaded.table[torch.from_numpy(rows)].float().cpu().numpy()

    @staticmethod
    def _candidates(loaded: LoadedVersion, k: int, diversity: float) -> int:
        """How many of the model's best items an answer is picked from (more when a reranker
        re-scores them)."""
        wanted = candidates_for(k, diversity)
        return max(wanted, RERANK_CANDIDATES) if loaded.reranker is not None else wanted

    def _reranked(
        self,
        loaded: LoadedVersion,
        history: np.ndarray,
        ranked: list[tuple[str, float]],
        k: int,
        diversity: float,
    ) -> list[tuple[str, float]]:
        """``ranked`` re-scored by the version's LM reranker, best first, as many as the answer needs."""
        if loaded.reranker is None or not ranked:
            return ranked
        history_texts = [self.item_text(loaded.items[code]) for code in history[-HISTORY_ITEMS:]]
        scores = loaded.reranker.rescore(
            np.array([score for _, score in ranked], dtype=np.float32),
            history_texts,
            [self.item_text(item) for item, _ in ranked],
        )
        order = np.argsort(-scores, kind="stable")[: candidates_for(k, diversity)]
        return [(ranked[j][0], float(scores[j])) for j in order]

    def item_text(self, item_id: str) -> str:
        """What the language model reads of an item (its id when the catalogue lacks it), as in training."""
        item = self.store.catalog.get(item_id)
        return item.text if item else item_id

    def _diversified(
        self, loaded: LoadedVersion, ranked: list[tuple[str, float]], k: int, diversity: float
    ) -> list[tuple[str, float]]:
        """The top ``k`` of ``ranked`` picked by maximal marginal relevance at ``diversity``."""
        if diversity <= 0 or len(ranked) <= 1:
            return ranked[:k]
        scores = np.array([score for _, score in ranked], dtype=np.float32)
        picked = mmr(scores, self.item_vectors(loaded, [item for item, _ in ranked]), k, diversity)
        return [ranked[j] for j in picked]

    def _answer_json(
        self,
        loaded: LoadedVersion,
        user_id: str | None,
        ranked: list[tuple[str, float]],
        source: str,
        explained_by: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """The answer; with ``explained_by`` (history codes), each item names the history items behind it."""
        entries = [self._describe(item, score) for item, score in ranked]
        if explained_by is not None:
            newest_first = dict.fromkeys(explained_by[::-1].tolist())
            history = [loaded.items[code] for code in newest_first]
            shown = self.item_vectors(loaded, [item for item, _ in ranked])
            reasons = because(shown, self.item_vectors(loaded, history))
            for entry, found in zip(entries, reasons, strict=True):
                entry["because"] = [
                    {"item_id": history[j], "title": self.title(history[j]), "similarity": round(s, 4)}
                    for j, s in found
                ]
        return {"user_id": user_id, "model_version": loaded.version, "source": source, "items": entries}

    def similar(self, item_id: str, k: int = 10) -> dict[str, Any]:
        """Nearest items by cosine of the model's item embeddings; by text for items the model lacks.

        Raises ``KeyError`` naming the item when neither the model nor the catalogue knows it.
        """
        loaded = self.loaded
        code = loaded.index.get(item_id)
        search = loaded.search
        if code is not None and loaded.table is not None:
            table = loaded.table[1:].float()
            vectors = table / table.norm(dim=1, keepdim=True).clamp_min(1e-12)
            sims = (vectors @ vectors[code]).cpu().numpy()
            names, source = loaded.items, "model"
        elif search is not None and item_id in search.rows:
            code = search.rows[item_id]
            sims = search.matrix @ search.matrix[code]
            names, source = search.item_ids, "text"
        else:
            raise KeyError(f"unknown item {item_id!r}: not in the catalogue nor in model {loaded.version}")
        sims[code] = -np.inf
        codes, values = top_k(sims, k)
        return {
            "item_id": item_id,
            "model_version": loaded.version,
            "source": source,
            "items": [self._describe(names[c], float(s)) for c, s in zip(codes, values, strict=True)],
        }

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        user_id: str | None = None,
        candidates: int = SEARCH_CANDIDATES,
        personal_weight: float = PERSONAL_WEIGHT,
        diversity: float = 0.0,
    ) -> dict[str, Any]:
        """Semantic search over the catalogue, re-ranked for ``user_id`` when they have history.

        Retrieval takes the ``candidates`` items whose text embedding is closest (cosine) to the
        query's. With a known user the final score is ``cosine + personal_weight * (r - 0.5)``,
        ``r`` the item's rank-normalised model score among the candidates (see PERSONAL_WEIGHT).
        ``diversity`` picks the top ``k`` by maximal marginal relevance over the items' text vectors.
        """
        loaded = self.loaded
        search = loaded.search
        result: dict[str, Any] = {"query": query, "user_id": user_id, "model_version": loaded.version}
        if search is None or not len(search):
            return {**result, "source": "search", "items": []}
        sims = search.matrix @ self.encode_query(search.text_model, query)
        codes, relevance = top_k(sims, max(candidates, k))
        final, source = relevance.astype(np.float32), "search"
        if user_id:
            recent = self.store.log.recent_items(self.user_key(user_id), loaded.model.config.max_len)
            history = np.array([loaded.index[i] for i in recent if i in loaded.index], dtype=np.int64)
            if len(history):
                scores = self._scores(loaded, history)
                model_codes = [loaded.index.get(search.item_ids[c]) for c in codes]
                personal = np.array(
                    [-np.inf if m is None else scores[m] for m in model_codes], dtype=np.float32
                )
                final = final + personal_weight * (_rank_normalised(personal) - 0.5)
                source = "personalised"
        order = mmr(final, search.matrix[codes], k, diversity)
        return {
            **result,
            "source": source,
            "items": [self._describe(search.item_ids[codes[j]], float(final[j])) for j in order],
        }

    def title(self, item_id: str) -> str:
        """The item's catalogue title ("" when the catalogue does not know it)."""
        search = self.loaded.search
        if search is not None and item_id in search.titles:
            return search.titles[item_id]
        item = self.store.catalog.get(item_id)
        return item.title if item else ""

    def _describe(self, item_id: str, score: float) -> dict[str, Any]:
        return {"item_id": item_id, "score": round(score, 5), "title": self.title(item_id)}

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
