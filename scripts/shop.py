"""Simulated users shopping on a running server: each visit asks for recommendations, then sends
back the clicks and purchases the user's planted tastes produce (with the answer's request_id).

    python scripts/shop.py --url http://127.0.0.1:8000 --truth demo-home/sim/truth.json --visits 300

The tastes are the synthetic stream's (``streamrec simulate`` writes ``truth.json``); the
reactions are :class:`streamrec.data.shoppers.Shoppers`'. ``make demo`` runs it during its A/B test.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import httpx

from streamrec.data.shoppers import Shoppers


def shop(url: str, truth: dict, visits: int, seed: int, key: str) -> dict[str, int]:
    shoppers = Shoppers(truth, seed=seed)
    order = shoppers.sample(len(shoppers.users))
    counts = {"visits": 0, "clicks": 0, "purchases": 0}
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=30) as http:
        for n in range(visits):
            user = order[n % len(order)]
            answer = http.get(f"/recommend/{user}", params={"k": 10})
            answer.raise_for_status()
            shown = answer.json()
            events = shoppers.respond(user, shown)
            if events:
                http.post("/events", json=events).raise_for_status()
            counts["visits"] += 1
            counts["clicks"] += sum(e["event_type"] == "click" for e in events)
            counts["purchases"] += sum(e["event_type"] == "purchase" for e in events)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--truth", type=Path, required=True, help="truth.json of `streamrec simulate`")
    parser.add_argument("--visits", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    truth = json.loads(args.truth.read_text())
    print(json.dumps(shop(args.url, truth, args.visits, args.seed, os.environ.get("STREAMREC_API_KEY", ""))))


if __name__ == "__main__":
    main()
