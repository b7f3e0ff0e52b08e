"""A million-item catalogue: sampled softmax learns it, and the HNSW index the server builds from
100,000 items on finds what exact search finds.

A chain of 60 items is scattered over a million codes; users walk it. A full softmax would
score the million items at every position; sampled softmax scores 500 drawn ones. An
ID-only model can rank only the items it trained on, so the server's retriever holds those
rows alone (``LoadedVersion.retrieved``); the index is then tested on 300,000 clustered vectors with
spread norms, the shape of a table whose every item has trained (three times the size from
which the server uses it; ``streamrec bench catalogue`` measures it at 1.4 million, with its
build time, in results/catalogue-1m.json).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chains import N_ITEMS, TINY, chain_data
from streamrec.bench.retrieval import clustered_vectors, recall_at_k
from streamrec.models.base import TrainingData
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.serving.retrieval import ANN_THRESHOLD, ANNRetriever, ExactRetriever, make_retriever

pytestmark = pytest.mark.slow

CATALOGUE = 1_000_000


def test_sampled_softmax_learns_a_chain_among_a_million_items() -> None:
    rng = np.random.default_rng(0)
    codes = rng.choice(CATALOGUE, size=N_ITEMS, replace=False)  # chain position -> catalogue code
    data = TrainingData([codes[s] for s in chain_data(users=400).sequences], CATALOGUE)
    config = SASRecConfig(item_tower="id", **{**TINY, "epochs": 12}, loss="sampled", negatives=500)
    model = SASRec(config).fit(data, progress=False)
    table = model.item_table()
    assert table.shape == (CATALOGUE + 1, config.hidden)
    scorable = np.setdiff1d(np.arange(CATALOGUE), model.unscorable())
    assert set(scorable) == set(codes)  # the million-minus-60 untrained rows are never ranked
    retriever = make_retriever(len(scorable)).build(table[1:][torch.from_numpy(scorable)].numpy())
    next_in_top10 = []
    for position in range(N_ITEMS):
        history = codes[[(position - 2) % N_ITEMS, (position - 1) % N_ITEMS, position]]
        state = model.user_states([history], table).numpy()
        seen = np.searchsorted(scorable, np.unique(history))
        found = scorable[retriever.search(state, 10, exclude=[seen])[0][0]]
        next_in_top10.append(codes[(position + 1) % N_ITEMS] in found)
    assert np.mean(next_in_top10) >= 0.8


def test_hnsw_finds_the_exact_top_10_among_300_thousand_vectors() -> None:
    items = 3 * ANN_THRESHOLD
    vectors, queries = clustered_vectors(items, 32, 200, seed=3)
    retriever = make_retriever(items)
    assert isinstance(retriever, ANNRetriever)
    retriever.build(vectors)
    exclude = [np.arange(n, n + 5) for n in range(len(queries))]
    found = retriever.search(queries, 10, exclude=exclude)[0]
    truth = ExactRetriever().build(vectors).search(queries, 10, exclude=exclude)[0]
    assert recall_at_k(found, truth) >= 0.95
