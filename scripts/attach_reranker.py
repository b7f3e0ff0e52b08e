"""Put an untrained LM reranker into a home's live version, to time what the stage costs a request.

A fit ships its reranker only when it ranks its held-aside events better than the model alone
(``streamrec.models.reranker``). To time the stage where it did not, this writes one whose
scoring head is still zero: the same network and the same work per request, and the model's
own ranking. It edits a version in place: run it on a copy of a home.

    cp -r recs /tmp/recs-reranked && python scripts/attach_reranker.py /tmp/recs-reranked
"""

from __future__ import annotations

import argparse

from streamrec.home import Home
from streamrec.models.reranker import LMReranker
from streamrec.text.encoder import DEFAULT_TEXT_MODEL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("home")
    args = parser.parse_args()
    home = Home.open(args.home)
    live = home.registry.live()
    if live is None:
        raise SystemExit(f"no live version in {args.home}")
    info = home.registry.get(live)
    reranker = LMReranker(info.text_model or DEFAULT_TEXT_MODEL)
    note = "untrained; attached by scripts/attach_reranker.py to time it"
    reranker.report = {"enabled": True, "note": note}
    reranker.save(home.registry.path(live))
    print(f"{live} in {args.home} now carries an untrained LM reranker")


if __name__ == "__main__":
    main()
