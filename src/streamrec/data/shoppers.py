"""Simulated users who react to what they are shown, by the synthetic stream's planted tastes.

The synthetic stream (:mod:`streamrec.data.synthetic`) records every user's true topic
preferences per phase in its ``truth``. A :class:`Shoppers` visit shows a user a list
and answers with what they did: each item at rank ``r`` (0 first) is looked at with
probability ``1 / (1 + r) ** 0.5`` (people read lists from the top), and one looked at is
clicked with probability ``click_scale × preference(user, topic of the item)``, capped at
0.9; a click becomes a purchase with probability ``buy_scale × preference``. So a list
that matches the user's current taste earns more clicks and purchases: an online test
between two versions can then be checked against the truth it should find.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

POSITION_DECAY = 0.5


@dataclass(frozen=True)
class Reaction:
    item_id: str
    event_type: str  # click or purchase


class Shoppers:
    """The users of a synthetic stream's ``truth``, with their tastes of ``phase`` (-1: the last)."""

    def __init__(
        self,
        truth: dict[str, Any],
        *,
        phase: int = -1,
        click_scale: float = 0.6,
        buy_scale: float = 0.3,
        seed: int = 0,
    ) -> None:
        self.item_topic: dict[str, int] = truth["item_topic"]
        self.preferences = {user: np.asarray(p)[phase] for user, p in truth["user_preferences"].items()}
        self.users = sorted(self.preferences)
        self.click_scale, self.buy_scale = click_scale, buy_scale
        self.rng = np.random.default_rng(seed)

    def preference(self, user: str, item: str) -> float:
        topic = self.item_topic.get(item)
        return 0.0 if topic is None else float(self.preferences[user][topic])

    def react(self, user: str, shown: Sequence[str]) -> list[Reaction]:
        """What ``user`` does with the list ``shown`` (best first): clicks, and purchases after clicks."""
        reactions = []
        for rank, item in enumerate(shown):
            liking = self.preference(user, item)
            if self.rng.random() >= (1 + rank) ** -POSITION_DECAY:
                continue  # not looked at
            if self.rng.random() < min(0.9, self.click_scale * liking):
                reactions.append(Reaction(item, "click"))
                if self.rng.random() < self.buy_scale * liking:
                    reactions.append(Reaction(item, "purchase"))
        return reactions

    def respond(self, user: str, answer: dict[str, Any]) -> list[dict[str, Any]]:
        """The events ``user`` sends back after seeing ``answer`` (a recommendation response),
        each naming the answer's ``request_id``."""
        reactions = self.react(user, [entry["item_id"] for entry in answer["items"]])
        return [
            {
                "user_id": user,
                "item_id": r.item_id,
                "event_type": r.event_type,
                "request_id": answer["request_id"],
            }
            for r in reactions
        ]

    def sample(self, count: int) -> list[str]:
        """``count`` users drawn without replacement (all of them when there are fewer)."""
        chosen = self.rng.permutation(len(self.users))[:count]
        return [self.users[i] for i in chosen]
