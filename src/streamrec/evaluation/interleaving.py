"""Team-draft interleaving: both rankers answer every user, in one list, and clicks vote.

An A/B split compares two groups of users; their differences in taste add noise that
only many users average out. Interleaving shows each user one list drawn from both
rankings (Radlinski et al. 2008, "team draft"): in every round a coin decides which
ranker picks first, and each picks its best item not in the list yet, so the two
"teams" share the top positions fairly. A click on an item credits the team that put
it there; the ranker whose team earns more clicks in an answer wins that answer.
Per-user preference is measured within the same list, at the same moment, so it
needs far fewer users than a split (Chapelle et al. 2012 report 10-100×).

:func:`team_draft` merges two answers; :func:`preferences` credits the clicks of the
recorded impressions per user, for :func:`streamrec.experiments.judge`.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from streamrec.store import Impression
from streamrec.store.base import LoggedEvent


def team_draft(
    a: Sequence[str], b: Sequence[str], k: int, rng: random.Random | None = None
) -> list[tuple[str, str]]:
    """The first ``k`` of the two rankings interleaved: ``(item, team)`` pairs, ``team`` ``a`` or ``b``.

    Each round, a fair coin decides which ranker picks first; the team with fewer picks so
    far always picks next, so after every round both teams hold as many positions.
    """
    rng = rng or random.Random()
    merged: list[tuple[str, str]] = []
    taken: set[str] = set()
    rankings = {"a": list(a), "b": list(b)}
    cursor = {"a": 0, "b": 0}
    picks = {"a": 0, "b": 0}

    def pick(team: str) -> bool:
        ranking = rankings[team]
        while cursor[team] < len(ranking) and ranking[cursor[team]] in taken:
            cursor[team] += 1
        if cursor[team] == len(ranking):
            return False
        item = ranking[cursor[team]]
        taken.add(item)
        merged.append((item, team))
        picks[team] += 1
        return True

    while len(merged) < k:
        if picks["a"] != picks["b"]:
            first = "a" if picks["a"] < picks["b"] else "b"
        else:
            first = "a" if rng.random() < 0.5 else "b"
        if not pick(first) and not pick("b" if first == "a" else "a"):
            break  # both rankings are used up
    return merged


def interleave_answers(
    a: dict[str, Any], b: dict[str, Any], k: int, rng: random.Random | None = None
) -> tuple[dict[str, Any], str]:
    """Two recommendation answers merged by :func:`team_draft`: the answer and its ``teams`` string.

    Each entry keeps the score its own ranker gave it (the two scales differ, so the list
    is in draft order, not by score); ``model_version`` names both versions, ``a+b``.
    """
    entries = {"a": {e["item_id"]: e for e in a["items"]}, "b": {e["item_id"]: e for e in b["items"]}}
    merged = team_draft([e["item_id"] for e in a["items"]], [e["item_id"] for e in b["items"]], k, rng)
    answer = {
        **a,
        "model_version": f"{a['model_version']}+{b['model_version']}",
        "source": a["source"] if a["source"] == b["source"] else f"{a['source']}+{b['source']}",
        "items": [entries[team][item] for item, team in merged],
    }
    return answer, "".join(team for _, team in merged)


@dataclass
class UserPreference:
    """One user's interleaved answers: how many had a credited event, and how many each team won."""

    answers: int = 0
    credited: int = 0  # answers with at least one credited event
    wins_a: int = 0
    wins_b: int = 0
    events_a: int = 0
    events_b: int = 0


def preferences(
    impressions: Iterable[Impression],
    events: Iterable[LoggedEvent],
    *,
    event_types: Sequence[str],
    window: float,
) -> dict[str, UserPreference]:
    """Per user, the interleaved answers' outcomes: events of ``event_types`` that carry an
    answer's ``request_id`` and name one of its items credit that item's team."""
    wanted = set(event_types)
    attributed: dict[str, list[LoggedEvent]] = defaultdict(list)
    for logged in events:
        if logged.event.request_id is not None and logged.event.event_type in wanted:
            attributed[logged.event.request_id].append(logged)
    users: dict[str, UserPreference] = defaultdict(UserPreference)
    for impression in impressions:
        if impression.teams is None:
            continue
        team_of = dict(zip(impression.items, impression.teams, strict=True))
        row = users[impression.user_id or impression.request_id]
        row.answers += 1
        credit = {"a": 0, "b": 0}
        for logged in attributed.get(impression.request_id, ()):
            team = team_of.get(logged.event.item_id)
            if team is not None and logged.event.timestamp < impression.timestamp + window:
                credit[team] += 1
        row.events_a += credit["a"]
        row.events_b += credit["b"]
        if credit["a"] or credit["b"]:
            row.credited += 1
            row.wins_a += credit["a"] > credit["b"]
            row.wins_b += credit["b"] > credit["a"]
    return dict(users)
