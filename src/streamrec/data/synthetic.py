"""A deterministic synthetic event stream with planted, documented structure.

This is streamrec's test bed: training, continual learning, drift detection,
cold start from text and serving are all checked against it, so every
pattern below is planted on purpose and recorded in ``truth.json``
(see ``docs/synthetic.md`` for the full description).

* **Topics in the text.** Every item belongs to one latent topic. Each topic
  has its own vocabulary of distinct English words (astronomy: telescope,
  nebula, orbit…). Titles are 3–5 words, 2–4 of them from the item's topic
  and at most one generic word ("guide", "deluxe"…), and the description is
  a short sentence with two more topic words, so a sentence encoder groups
  items by topic. The ``category`` is a product format (book, kit, video…)
  drawn independently of the topic: the topic is never leaked as a label.
  Beyond :data:`TOPIC_VOCABULARY`'s 12 topics, vocabularies are reused (the
  topic name gets a suffix such as ``astronomy-2``), and such twins cannot be
  told apart by text.
* **Sequential habits.** Within each topic, items form chains (4–10 initial
  items each). With probability ``sequential_strength`` a user's next item is
  the planted successor of their previous item (when it exists and is already
  released); otherwise it is drawn from the user's current topic preference,
  then Zipf-like (weight ``1 / rank ** 0.8``) within the topic among released items.
  A first-order "follow the successor" oracle therefore beats popularity by
  a wide margin.
* **Taste drift.** Each user's topic preference is a Dirichlet draw
  concentrated on a main topic (and, for half of the users, a secondary
  one). Each phase has its own "trend" over topics, from which main topics
  are drawn; at each ``drift_at`` point a ``drift_strength`` share of users
  get a new preference whose main topic differs from their old one. Because
  the trend changes too, global popularity shifts with the preferences.
* **New items.** ``new_item_fraction`` of the items are released during the
  timeline (spread over its first 95%); each is appended to the end of a
  chain of its topic on release, so it gets traffic both from its
  predecessor's followers and from the popularity draw. Events never
  reference an item before its ``created_at``.
* **Sessions and time.** Users act in sessions (about 8 events, some 90 s
  apart) that start uniformly over the timeline; timestamps are integer
  epoch seconds, non-decreasing per user. ``events.jsonl`` is in global time
  order, ties broken by user then by the user's own order.
* **Event types.** Mostly ``view``; ``click``, ``add_to_cart`` and
  ``purchase`` too, the last two more likely the more the user prefers the
  item's topic. ``value`` and ``context`` are left out. ``event_id`` is
  ``sim-<seed>-<index>`` (index in the file), so re-ingesting is idempotent.

Everything comes from one ``np.random.default_rng(seed)``: the same config
writes byte-identical files.

>>> stream = generate(StreamConfig(users=20, items=40, events=300, seed=1))
>>> stream.n_events, len(stream.items), len(stream.truth["topics"])
(300, 40, 8)
>>> next(stream.events())["event_id"]
'sim-1-000000'
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DAY = 86_400
EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase")
# Per topic: 15 distinct words that only this topic uses (checked at import).
TOPIC_VOCABULARY: dict[str, tuple[str, ...]] = {
    "astronomy": (
        "telescope", "nebula", "orbit", "comet", "galaxy", "planet", "asteroid", "eclipse",
        "constellation", "meteor", "supernova", "lunar", "solar", "cosmos", "observatory",
    ),
    "cooking": (
        "skillet", "recipe", "braise", "saute", "pastry", "dough", "spatula", "simmer",
        "marinade", "broth", "casserole", "roast", "whisk", "seasoning", "kitchen",
    ),
    "gardening": (
        "compost", "seedling", "trowel", "perennial", "mulch", "greenhouse", "pruning", "tulip",
        "soil", "fertilizer", "hedge", "orchard", "bulb", "watering", "herb",
    ),
    "woodworking": (
        "chisel", "lathe", "dovetail", "plywood", "sawdust", "joinery", "walnut", "sander",
        "clamp", "veneer", "mortise", "workbench", "carving", "oak", "router",
    ),
    "music": (
        "guitar", "melody", "chord", "rhythm", "piano", "drum", "harmony", "tempo",
        "violin", "lyric", "symphony", "amplifier", "bass", "jazz", "acoustic",
    ),
    "fitness": (
        "kettlebell", "workout", "cardio", "stretching", "dumbbell", "treadmill", "endurance", "squat",
        "yoga", "pilates", "sprint", "muscle", "protein", "marathon", "training",
    ),
    "photography": (
        "camera", "lens", "aperture", "shutter", "tripod", "exposure", "portrait", "darkroom",
        "zoom", "flash", "landscape", "focus", "film", "pixel", "viewfinder",
    ),
    "sailing": (
        "sail", "anchor", "harbor", "keel", "mast", "regatta", "nautical", "rudder",
        "compass", "tide", "yacht", "voyage", "buoy", "dinghy", "mooring",
    ),
    "knitting": (
        "yarn", "needle", "wool", "crochet", "stitch", "pattern", "sweater", "scarf",
        "cardigan", "mitten", "skein", "purl", "cable", "blanket", "cozy",
    ),
    "chess": (
        "checkmate", "gambit", "bishop", "knight", "rook", "pawn", "endgame", "opening",
        "castling", "grandmaster", "tactics", "stalemate", "queen", "tournament", "chessboard",
    ),
    "birdwatching": (
        "binoculars", "warbler", "heron", "migration", "feather", "sparrow", "owl", "hawk",
        "nest", "songbird", "plumage", "finch", "wetland", "falcon", "birdsong",
    ),
    "coffee": (
        "espresso", "barista", "latte", "grinder", "arabica", "cappuccino", "brew", "crema",
        "mocha", "bean", "pourover", "cafe", "kettle", "filter", "aroma",
    ),
}  # fmt: skip
# Topic-free words: at most one per title, so they blur topics only a little.
GENERIC_WORDS: tuple[str, ...] = (
    "guide", "handbook", "essentials", "collection", "classic", "deluxe", "starter", "complete",
    "pocket", "masterclass", "basics", "companion", "edition", "journal", "primer",
)  # fmt: skip
# Product formats: the category, drawn independently of the topic.
CATEGORIES: tuple[str, ...] = ("book", "kit", "video", "course", "magazine", "poster", "podcast", "box set")

_ALL_WORDS = [w for words in TOPIC_VOCABULARY.values() for w in words] + list(GENERIC_WORDS)
assert len(_ALL_WORDS) == len(set(_ALL_WORDS)), "topic vocabularies must not share words"

SESSION_MEAN_EVENTS = 8.0  # mean events per session (geometric)
GAP_MEAN_SECONDS = 90.0  # mean seconds between events of a session (1 + exponential)
CHAIN_LENGTHS = (4, 10)  # initial chain lengths, inclusive
ZIPF_EXPONENT = 0.8  # within-topic popularity weight = 1 / (rank + 1) ** exponent
OLD_ITEM_AGE_DAYS = 365  # items present at the start were created up to a year before
NEW_ITEM_SPAN = 0.95  # new items are released over this share of the timeline
MIN_EVENTS_PER_USER = 5
TREND_CONCENTRATION = 1.0  # Dirichlet concentration of each phase's topic trend


@dataclass(frozen=True)
class StreamConfig:
    """What to simulate; every default is what ``streamrec simulate`` uses."""

    users: int = 500
    items: int = 800
    events: int = 50_000
    seed: int = 7
    topics: int = 8  # latent topics; up to 12 have their own vocabulary
    new_item_fraction: float = 0.3  # share of items released after the start, spread over time
    drift_at: tuple[float, ...] = (0.5,)  # timeline fractions where user tastes shift
    drift_strength: float = 0.8  # share of users whose preferred topics are re-drawn at each drift point
    sequential_strength: float = 0.6  # P(next item is the planted successor of the previous one)
    start: float = 1_704_067_200.0  # 2024-01-01T00:00:00Z
    duration_days: float = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "drift_at", tuple(float(f) for f in self.drift_at))
        for name in ("users", "items", "topics"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.events < 0:
            raise ValueError(f"events must be non-negative, got {self.events}")
        for name in ("new_item_fraction", "drift_strength", "sequential_strength"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if list(self.drift_at) != sorted(set(self.drift_at)) or any(not 0 < f < 1 for f in self.drift_at):
            raise ValueError(f"drift_at must be increasing fractions in (0, 1), got {self.drift_at}")
        if self.duration_days <= 0:
            raise ValueError(f"duration_days must be positive, got {self.duration_days}")
        if self.initial_items < self.topics:
            raise ValueError(
                f"need at least one initial item per topic: {self.initial_items} initial items "
                f"for {self.topics} topics (raise items or lower new_item_fraction)"
            )

    @property
    def new_items(self) -> int:
        return round(self.items * self.new_item_fraction)

    @property
    def initial_items(self) -> int:
        return self.items - self.new_items

    @property
    def end(self) -> int:
        """First second after the timeline (events lie in ``[start, end)``)."""
        return int(self.start) + round(self.duration_days * DAY)


@dataclass(frozen=True)
class SyntheticStream:
    """A generated stream: events as columns in file (time) order, items as records, and the truth.

    Columns hold integer codes: user ``u`` is ``users[u]``, item ``i`` is
    ``items[i]["item_id"]``, event type ``k`` is ``EVENT_TYPES[k]``.
    """

    config: StreamConfig
    users: list[str]
    items: list[dict[str, Any]]
    user: np.ndarray  # int32 [n_events]
    item: np.ndarray  # int32 [n_events]
    timestamp: np.ndarray  # int64 [n_events], epoch seconds
    event_type: np.ndarray  # int8 [n_events]
    truth: dict[str, Any] = field(repr=False)

    @property
    def n_events(self) -> int:
        return len(self.user)

    def event_id(self, index: int) -> str:
        return f"sim-{self.config.seed}-{index:0{_id_width(self.n_events)}d}"

    def events(self) -> Iterator[dict[str, Any]]:
        """Raw event records (as ``events.jsonl`` holds them), in file order."""
        users, items = self.users, [record["item_id"] for record in self.items]
        columns = zip(
            self.user.tolist(),
            self.item.tolist(),
            self.timestamp.tolist(),
            self.event_type.tolist(),
            strict=True,
        )
        for index, (u, i, t, k) in enumerate(columns):
            yield {
                "user_id": users[u],
                "item_id": items[i],
                "event_type": EVENT_TYPES[k],
                "timestamp": t,
                "event_id": self.event_id(index),
            }


def _id_width(n: int) -> int:
    return max(6, len(str(max(n - 1, 0))))


def topic_names(count: int) -> list[str]:
    """Topic names; past the vocabulary list, names repeat with a suffix (``astronomy-2``)."""
    base = list(TOPIC_VOCABULARY)
    return [base[k % len(base)] + (f"-{k // len(base) + 1}" if k >= len(base) else "") for k in range(count)]


def _vocabulary(topic: int) -> tuple[str, ...]:
    words = list(TOPIC_VOCABULARY.values())
    return words[topic % len(words)]


def _make_items(config: StreamConfig, rng: np.random.Generator) -> dict[str, Any]:
    """Topics, release times, popularity weights, chains and text of every item."""
    n, n_topics, start = config.items, config.topics, int(config.start)
    n_old, n_new = config.initial_items, config.new_items
    # Old items: topics round-robin (each topic gets one), then shuffled; new items: random topics.
    old_topic = rng.permutation(np.arange(n_old) % n_topics)
    new_topic = rng.integers(0, n_topics, n_new)
    topic = np.concatenate([old_topic, new_topic]).astype(np.int64)
    old_created = start - rng.integers(1, OLD_ITEM_AGE_DAYS * DAY, n_old)
    span = (config.end - start) * NEW_ITEM_SPAN
    new_created = start + np.sort(rng.uniform(0, span, n_new)).astype(np.int64)
    created = np.concatenate([old_created, new_created]).astype(np.int64)
    # Zipf-like popularity within each topic, by a random rank (new items included).
    weight = np.zeros(n)
    for k in range(n_topics):
        members = np.flatnonzero(topic == k)
        ranks = rng.permutation(len(members))
        weight[members] = 1.0 / (ranks + 1.0) ** ZIPF_EXPONENT
    # Chains: old items of a topic, shuffled and cut; new items appended to a random chain's end.
    successor = np.full(n, -1, dtype=np.int64)
    chains: list[list[int]] = []
    chains_of_topic: list[list[int]] = []
    for k in range(n_topics):
        members = rng.permutation(np.flatnonzero(topic[:n_old] == k)).tolist()
        own = []
        while members:
            length = int(rng.integers(CHAIN_LENGTHS[0], CHAIN_LENGTHS[1] + 1))
            chains.append(members[:length])
            own.append(len(chains) - 1)
            members = members[length:]
        chains_of_topic.append(own)
    for item in range(n_old, n):  # in release order
        own = chains_of_topic[topic[item]]
        chain = chains[own[int(rng.integers(0, len(own)))]]
        chain.append(item)
    for chain in chains:
        for before, after in itertools.pairwise(chain):
            successor[before] = after
    # Text: 2–4 topic words plus a generic word (always when only 2 topic words), 3–5 words in all.
    records = []
    for item in range(n):
        vocabulary = _vocabulary(int(topic[item]))
        k_words = int(rng.integers(2, 5))
        chosen = rng.choice(len(vocabulary), size=k_words + 2, replace=False)
        words = [vocabulary[j] for j in chosen[:k_words]]
        if k_words == 2 or rng.random() < 0.4:
            generic = GENERIC_WORDS[int(rng.integers(0, len(GENERIC_WORDS)))]
            words = [*words, generic] if rng.random() < 0.7 else [generic, *words]
        category = CATEGORIES[int(rng.integers(0, len(CATEGORIES)))]
        extra = [vocabulary[j] for j in chosen[k_words:]]
        records.append(
            {
                "item_id": f"i{item}",
                "title": " ".join(word.capitalize() for word in words),
                "description": f"A {category} about {extra[0]} and {extra[1]}.",
                "category": category,
                "created_at": int(created[item]),
            }
        )
    return {
        "topic": topic,
        "created": created,
        "weight": weight,
        "successor": successor,
        "chains": chains,
        "records": records,
    }


def _make_preferences(config: StreamConfig, rng: np.random.Generator) -> dict[str, Any]:
    """Per-phase topic trends and user preferences; drifted users change their main topic."""
    n_users, n_topics, phases = config.users, config.topics, len(config.drift_at) + 1
    trend = rng.dirichlet(np.full(n_topics, TREND_CONCENTRATION), size=phases)
    prefs = np.zeros((n_users, phases, n_topics))
    main = np.zeros((n_users, phases), dtype=np.int64)
    drifted: list[np.ndarray] = []

    def draw(users: np.ndarray, phase: int, avoid: np.ndarray | None) -> None:
        for u in users.tolist():
            p = trend[phase].copy()
            if avoid is not None and n_topics > 1:
                p[avoid[u]] = 0.0
            m = int(rng.choice(n_topics, p=p / p.sum()))
            alpha = np.full(n_topics, 0.1)
            alpha[m] = 4.0
            if n_topics > 1 and rng.random() < 0.5:
                second = (m + 1 + int(rng.integers(0, n_topics - 1))) % n_topics
                alpha[second] = 2.0
            pref = rng.dirichlet(alpha)
            top = int(np.argmax(pref))
            pref[m], pref[top] = pref[top], pref[m]  # the main topic is the largest share
            prefs[u, phase], main[u, phase] = pref, m

    draw(np.arange(n_users), 0, None)
    for phase in range(1, phases):
        prefs[:, phase], main[:, phase] = prefs[:, phase - 1], main[:, phase - 1]
        chosen = np.sort(rng.permutation(n_users)[: round(n_users * config.drift_strength)])
        draw(chosen, phase, main[:, phase - 1])
        drifted.append(chosen)
    return {"trend": trend, "prefs": prefs, "main": main, "drifted": drifted}


def _event_counts(config: StreamConfig, rng: np.random.Generator) -> np.ndarray:
    """Events per user: a floor of 5 (when the budget allows), the rest by a lognormal activity."""
    floor = min(MIN_EVENTS_PER_USER, config.events // config.users)
    activity = rng.lognormal(0.0, 1.0, config.users)
    extra = rng.multinomial(config.events - floor * config.users, activity / activity.sum())
    return floor + extra


def generate(config: StreamConfig | None = None) -> SyntheticStream:
    """Simulate the stream described by ``config`` (default :class:`StreamConfig`)."""
    config = config or StreamConfig()
    rng = np.random.default_rng(config.seed)
    catalogue = _make_items(config, rng)
    taste = _make_preferences(config, rng)
    topic, created, successor = catalogue["topic"], catalogue["created"], catalogue["successor"]
    start, end = int(config.start), config.end
    drift_ts = np.array([start + round(f * (end - start)) for f in config.drift_at], dtype=np.int64)

    # Events are laid out user by user (each user's in their own order), then sorted by time.
    counts = _event_counts(config, rng)
    n = int(counts.sum())
    user = np.repeat(np.arange(config.users), counts)
    first = np.zeros(n, dtype=bool)
    first[(np.cumsum(counts) - counts)[counts > 0]] = True
    # Sessions: a new one with probability 1/mean, starting uniformly over the timeline.
    new_session = (rng.random(n) < 1.0 / SESSION_MEAN_EVENTS) | first
    session = np.cumsum(new_session) - 1
    session_user = user[new_session]
    raw_start = rng.integers(start, end, len(session_user))
    session_start = raw_start[np.lexsort((raw_start, session_user))]  # sorted within each user
    gap = np.where(new_session, 0, 1 + np.floor(rng.exponential(GAP_MEAN_SECONDS - 1, n))).astype(np.int64)
    walked = np.cumsum(gap)
    offset = walked - walked[new_session][session]
    timestamp = session_start[session] + offset
    # A long session may run past the next one's start: keep each user's times non-decreasing.
    stride = np.int64(10 * end)
    timestamp = np.maximum.accumulate(timestamp + user * stride) - user * stride
    timestamp = np.minimum(timestamp, end - 1)
    phase = np.searchsorted(drift_ts, timestamp, side="right")

    # Fresh draws: topic from the user's current preference, then Zipf among released items.
    cumulative = np.cumsum(taste["prefs"], axis=2)[user, phase]
    topic_draw = (cumulative < rng.random(n)[:, None] * cumulative[:, -1:]).sum(axis=1)
    topic_draw = np.minimum(topic_draw, config.topics - 1)
    pick = rng.random(n)
    fresh = np.zeros(n, dtype=np.int64)
    for k in range(config.topics):
        rows = np.flatnonzero(topic_draw == k)
        members = np.flatnonzero(topic == k)
        members = members[np.argsort(created[members], kind="stable")]
        released = np.searchsorted(created[members], timestamp[rows], side="right")
        cum_weight = np.cumsum(catalogue["weight"][members])
        chosen = np.searchsorted(cum_weight, pick[rows] * cum_weight[released - 1], side="right")
        fresh[rows] = members[np.minimum(chosen, released - 1)]
    follow = rng.random(n) < config.sequential_strength

    # The habit: follow the previous item's successor when it is already released.
    item = fresh.tolist()
    follow_l, first_l, time_l = follow.tolist(), first.tolist(), timestamp.tolist()
    successor_l, created_l = successor.tolist(), created.tolist()
    previous = -1
    for index in range(n):
        if first_l[index]:
            previous = -1
        if follow_l[index] and previous >= 0:
            nxt = successor_l[previous]
            if nxt >= 0 and created_l[nxt] <= time_l[index]:
                item[index] = nxt
        previous = item[index]
    items = np.array(item, dtype=np.int64)

    # Event types: add-to-cart and purchase grow with the user's preference for the item's topic.
    affinity = taste["prefs"][user, phase, topic[items]] if n else np.zeros(0)
    cut_purchase = 0.01 + 0.07 * affinity
    cut_cart = cut_purchase + 0.03 + 0.07 * affinity
    cut_click = cut_cart + 0.18
    draw = rng.random(n)
    kind = np.where(draw < cut_purchase, 3, np.where(draw < cut_cart, 2, np.where(draw < cut_click, 1, 0)))

    order = np.argsort(timestamp, kind="stable")  # ties: by user, then the user's own order
    users = [f"u{u}" for u in range(config.users)]
    truth = _truth(config, catalogue, taste, drift_ts, users)
    return SyntheticStream(
        config=config,
        users=users,
        items=catalogue["records"],
        user=user[order].astype(np.int32),
        item=items[order].astype(np.int32),
        timestamp=timestamp[order].astype(np.int64),
        event_type=kind[order].astype(np.int8),
        truth=truth,
    )


def _truth(
    config: StreamConfig,
    catalogue: dict[str, Any],
    taste: dict[str, Any],
    drift_ts: np.ndarray,
    users: list[str],
) -> dict[str, Any]:
    """The planted structure, keyed by the ids the files use."""
    ids = [record["item_id"] for record in catalogue["records"]]
    topic, weight, successor = catalogue["topic"], catalogue["weight"], catalogue["successor"]
    share = np.zeros_like(weight)
    for k in range(config.topics):
        members = topic == k
        share[members] = weight[members] / weight[members].sum()
    return {
        "config": {**asdict(config), "drift_at": list(config.drift_at)},
        "start": int(config.start),
        "end": config.end,
        "topics": topic_names(config.topics),
        "drift_timestamps": drift_ts.tolist(),
        "phase_topic_trend": np.round(taste["trend"], 4).tolist(),
        "item_topic": dict(zip(ids, topic.tolist(), strict=True)),
        "item_created_at": dict(zip(ids, catalogue["created"].tolist(), strict=True)),
        "new_items": ids[config.initial_items :],
        "item_popularity": dict(zip(ids, np.round(share, 5).tolist(), strict=True)),
        "successors": {ids[i]: ids[s] for i, s in enumerate(successor.tolist()) if s >= 0},
        "chains": [[ids[i] for i in chain] for chain in catalogue["chains"]],
        "user_main_topic": dict(zip(users, taste["main"].tolist(), strict=True)),
        "user_preferences": dict(zip(users, np.round(taste["prefs"], 4).tolist(), strict=True)),
        "drifted_users": [[users[u] for u in chosen.tolist()] for chosen in taste["drifted"]],
    }


def write(stream: SyntheticStream, out_dir: Path | str) -> None:
    """Write ``events.jsonl`` (time order), ``items.jsonl`` and ``truth.json`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    users, items = stream.users, [record["item_id"] for record in stream.items]
    prefix, width = f"sim-{stream.config.seed}-", _id_width(stream.n_events)
    columns = (
        stream.user.tolist(),
        stream.item.tolist(),
        stream.event_type.tolist(),
        stream.timestamp.tolist(),
    )
    chunk = 100_000
    with open(out / "events.jsonl", "w", encoding="utf-8", newline="\n") as handle:
        for begin in range(0, stream.n_events, chunk):
            rows = zip(*(column[begin : begin + chunk] for column in columns), strict=True)
            handle.write(
                "".join(
                    f'{{"user_id": "{users[u]}", "item_id": "{items[i]}", "event_type": "{EVENT_TYPES[k]}", '
                    f'"timestamp": {t}, "event_id": "{prefix}{index:0{width}d}"}}\n'
                    for index, (u, i, k, t) in enumerate(rows, start=begin)
                )
            )
    with open(out / "items.jsonl", "w", encoding="utf-8", newline="\n") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in stream.items)
    with open(out / "truth.json", "w", encoding="utf-8", newline="\n") as handle:
        json.dump(stream.truth, handle)
        handle.write("\n")


def simulate(out_dir: Path | str, **config_kwargs: Any) -> StreamConfig:
    """Generate a stream from ``StreamConfig(**config_kwargs)`` and write it to ``out_dir``."""
    config = StreamConfig(**config_kwargs)
    write(generate(config), out_dir)
    return config
