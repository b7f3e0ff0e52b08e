"""A million-item catalogue: sampled softmax learns it, and the HNSW index the server builds from
100,000 items on answers as exact search over the trained table does.

A chain of 60 items is scattered over the million codes; users walk it. Every item has a
(random, 16-wide) text vector, so every row of the hybrid model's table is a real row, as
in a catalogue whose items all have text. A full softmax would score the million items at
every position; sampled softmax scores 500 drawn ones.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chains import N_ITEMS, TINY, chain_data
from streamrec.bench.retrieval import recall_at_k
from streamrec.models.base import TrainingData
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.serving.retrieval import ANNRetriever, ExactRetriever, make_retriever

pytestmark = pytest.mark.slow

CATALOGUE = 1_000_000


def test_sampled_softmax_and_hnsw_at_a_million_items() -> None:
    rng = np.random.default_rng(0)
    codes = rng.choice(CATALOGUE, size=N_ITEMS, replace=False)  # chain position -> catalogue code
    text = rng.normal(size=(CATALOGUE, 16)).astype(np.float32)
    walks = chain_data(users=400)
    data = TrainingData([codes[s] for s in walks.sequences], CATALOGUE)
    config = SASRecConfig(item_tower="hybrid", **{**TINY, "epochs": 12}, loss="sampled", negatives=500)
    model = SASRec(config, text).fit(data, progress=False)
    table = model.item_table()
    assert table.shape == (CATALOGUE + 1, config.hidden) and not len(model.unscorable())

    retriever = make_retriever(CATALOGUE)
    assert isinstance(retriever, ANNRetriever)
    retriever.build(table[1:].float().numpy())
    exact = ExactRetriever().build(table[1:].float().numpy())

    found, truth, next_in_top10 = [], [], []
    for position in range(N_ITEMS):
        history = codes[[(position - 2) % N_ITEMS, (position - 1) % N_ITEMS, position]]
        with torch.no_grad():
            state = model.user_states([history], table).float().numpy()
        seen = [np.unique(history)]
        found.append(retriever.search(state, 10, exclude=seen)[0][0])
        truth.append(exact.search(state, 10, exclude=seen)[0][0])
        next_in_top10.append(codes[(position + 1) % N_ITEMS] in found[-1])
    assert recall_at_k(np.array(found), np.array(truth)) >= 0.95
    # It learned the chain among a million items: the next one is in the index's top 10.
    assert np.mean(next_in_top10) >= 0.8
