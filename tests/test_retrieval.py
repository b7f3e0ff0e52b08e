"""Top-k retrieval (exact and HNSW), int8 dynamic quantisation, and the retrieval benchmark's output."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from chains import N_ITEMS, TINY, chain_data
from streamrec.bench.retrieval import clustered_vectors, recall_at_k, run_retrieval_benchmark
from streamrec.config import Settings
from streamrec.data.synthetic import StreamConfig, generate
from streamrec.events import EventSchema
from streamrec.home import Home
from streamrec.items import Item
from streamrec.models.base import top_k
from streamrec.models.quantize import QuantizedSASRec, quantize_dynamic_int8
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.serving.retrieval import ANNRetriever, ExactRetriever, PartitionedRetriever, make_retriever
from streamrec.serving.runtime import Runtime
from streamrec.store import open_store
from streamrec.training.continual import train_and_register

# ----- exact -----


def test_exact_retriever_equals_brute_force_with_exclusions() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 16)).astype(np.float32)
    queries = rng.normal(size=(20, 16)).astype(np.float32)
    exclude = [rng.choice(500, size=int(rng.integers(0, 30)), replace=False) for _ in range(20)]
    ids, scores = ExactRetriever().build(vectors).search(queries, 10, exclude=exclude)
    assert ids.shape == scores.shape == (20, 10) and ids.dtype == np.int64 and scores.dtype == np.float32
    for row in range(20):
        want_ids, want_scores = top_k(vectors @ queries[row], 10, exclude=exclude[row])
        np.testing.assert_array_equal(ids[row], want_ids)
        np.testing.assert_allclose(scores[row], want_scores, rtol=1e-5)


def test_exact_retriever_pads_when_too_few_items_qualify() -> None:
    vectors = np.eye(4, dtype=np.float32)
    ids, scores = ExactRetriever().build(vectors).search(np.ones((1, 4)), 6, exclude=[np.array([0, 1])])
    assert sorted(ids[0, :2]) == [2, 3]
    assert (ids[0, 2:] == -1).all() and np.isneginf(scores[0, 2:]).all()


def test_exact_retriever_add_replace_and_copy() -> None:
    rng = np.random.default_rng(1)
    retriever = ExactRetriever().build(rng.normal(size=(10, 8)).astype(np.float32))
    snapshot = retriever.copy()
    new = rng.normal(size=(3, 8)).astype(np.float32)
    np.testing.assert_array_equal(retriever.add(new), [10, 11, 12])
    assert len(retriever) == 13 and len(snapshot) == 10
    ids, _ = retriever.search(new[1] * 100, 1)
    assert ids[0, 0] == 11
    retriever.replace(np.array([2]), new[1:2] * 200)
    assert retriever.search(new[1], 1)[0][0, 0] == 2
    assert snapshot.search(new[1] * 100, 1)[0][0, 0] < 10


# ----- approximate -----


def test_ann_recall_on_clustered_vectors_and_exclusions() -> None:
    vectors, queries = clustered_vectors(5000, 32, 200, seed=3)
    truth, _ = ExactRetriever().build(vectors).search(queries, 10)
    ann = ANNRetriever(expansion_search=64).build(vectors)
    found, scores = ann.search(queries, 10)
    assert recall_at_k(found, truth) >= 0.9
    np.testing.assert_allclose(scores[:, 0], np.einsum("ij,ij->i", vectors[found[:, 0]], queries), atol=1e-4)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    exclude = [t[:3] for t in truth]
    filtered, _ = ann.search(queries, 10, exclude=exclude)
    assert not any(np.isin(f, e).any() for f, e in zip(filtered, exclude, strict=True))
    assert (filtered >= 0).all()


def test_ann_add_replace_copy_and_single_query() -> None:
    vectors, _ = clustered_vectors(1000, 16, 1, seed=4)
    ann = ANNRetriever().build(vectors)
    snapshot = ann.copy()
    new = np.random.default_rng(5).normal(size=(5, 16)).astype(np.float32) * 10
    np.testing.assert_array_equal(ann.add(new), np.arange(1000, 1005))
    assert len(ann) == 1005 and len(snapshot) == 1000
    ids, _ = ann.search(new[2:3], 1)
    assert ids.shape == (1, 1) and ids[0, 0] == 1002
    assert snapshot.search(new[2:3], 1)[0][0, 0] < 1000
    ann.replace(np.array([7]), new[3:4] * 2)
    assert ann.search(new[3], 1)[0][0, 0] == 7
    assert ann.describe()["items"] == 1005


def test_make_retriever_switches_at_the_threshold() -> None:
    assert isinstance(make_retriever(99_999), ExactRetriever)
    ann = make_retriever(100_000, expansion_search=32)
    assert isinstance(ann, ANNRetriever) and ann.expansion_search == 32
    assert isinstance(make_retriever(50, ann_threshold=10), ANNRetriever)


# ----- partitioned -----


def test_partitioned_retriever_equals_brute_force_through_add_replace_and_copy() -> None:
    rng = np.random.default_rng(6)
    vectors = rng.normal(size=(300, 8)).astype(np.float32)
    apart = np.array([3, 50, 51, 299])
    queries = rng.normal(size=(40, 8)).astype(np.float32)
    exclude = [rng.choice(300, size=int(rng.integers(0, 6)), replace=False) for _ in queries]

    def agree(parted: PartitionedRetriever, table: np.ndarray) -> None:
        truth, truth_scores = ExactRetriever().build(table).search(queries, 7, exclude=exclude)
        found, scores = parted.search(queries, 7, exclude=exclude)
        np.testing.assert_array_equal(found, truth)
        np.testing.assert_allclose(scores, truth_scores, rtol=1e-5)

    parted = PartitionedRetriever(apart, ann_threshold=10**9).build(vectors)  # both parts exact
    agree(parted, vectors)
    snapshot = parted.copy()
    new = rng.normal(size=(4, 8)).astype(np.float32) * 3
    np.testing.assert_array_equal(parted.add(new), np.arange(300, 304))
    vectors = np.concatenate([vectors, new])
    parted.replace(np.array([3, 7, 301]), vectors[[8, 9, 10]] * 2)  # rows in the apart part, the rest, added
    vectors[[3, 7, 301]] = vectors[[8, 9, 10]] * 2
    agree(parted, vectors)
    assert len(snapshot) == 300 and len(parted) == 304
    assert parted.describe()["parts"][0]["items"] == 4


def test_make_retriever_searches_a_hybrid_models_trained_rows_apart() -> None:
    vectors, queries = clustered_vectors(3000, 16, 100, seed=7)
    apart = np.arange(0, 3000, 100)
    parted = make_retriever(3000, ann_threshold=20, apart=apart).build(vectors)
    assert isinstance(parted, PartitionedRetriever)
    assert [p["kind"] for p in parted.describe()["parts"]] == ["ANNRetriever", "ANNRetriever"]
    truth, _ = ExactRetriever().build(vectors).search(queries, 10)
    assert recall_at_k(parted.search(queries, 10)[0], truth) >= 0.9
    assert isinstance(
        make_retriever(3000, ann_threshold=20, apart=np.arange(3000)), ANNRetriever
    )  # nothing apart
    assert isinstance(make_retriever(3000, apart=apart), ExactRetriever)  # below the threshold


# ----- int8 -----


@pytest.fixture(scope="module")
def tiny_model() -> SASRec:
    return SASRec(SASRecConfig(item_tower="id", epochs=2, **TINY, device="cpu")).fit(
        chain_data(), progress=False
    )


def test_int8_scores_agree_with_float32(tiny_model: SASRec) -> None:
    histories = chain_data(60, seed=9).sequences
    before = tiny_model.score(histories)
    int8 = quantize_dynamic_int8(tiny_model)
    assert isinstance(int8, QuantizedSASRec)
    assert "encoder.layers.0.linear1" in int8.quantized_layers
    assert not any("self_attn" in name for name in int8.quantized_layers)
    quantised = int8.score(histories)
    assert quantised.shape == before.shape and quantised.dtype == np.float32
    overlap = [
        len(np.intersect1d(np.argsort(-a)[:10], np.argsort(-b)[:10])) / 10
        for a, b in zip(before, quantised, strict=True)
    ]
    assert np.mean(overlap) >= 0.7
    np.testing.assert_array_equal(tiny_model.score(histories), before)  # the original is untouched
    with pytest.raises(RuntimeError, match="not saved"):
        int8.save(Path("unused"))


def test_int8_with_even_heads_and_text_tower() -> None:
    """Two heads would take the fused encoder path, which cannot read quantised weights."""
    text = np.random.default_rng(2).normal(size=(N_ITEMS, 16)).astype(np.float32)
    config = SASRecConfig(
        item_tower="hybrid", epochs=1, **{**TINY, "device": "cpu", "hidden": 16, "heads": 2}
    )
    model = SASRec(config, text).fit(chain_data(40), progress=False)
    int8 = quantize_dynamic_int8(model)
    assert "text_projection" in int8.quantized_layers
    histories = chain_data(5, seed=3).sequences
    assert int8.score(histories).shape == (5, N_ITEMS)
    kept = quantize_dynamic_int8(model, text_projection=False)
    assert "text_projection" not in kept.quantized_layers


def test_quantising_an_unfitted_model_fails_clearly() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        quantize_dynamic_int8(SASRec(SASRecConfig(**TINY, device="cpu")))


# ----- benchmark -----


def id_model_home(home: Path, catalogue_only: Sequence[Item] = ()) -> Path:
    """A small synthetic log (and ``catalogue_only`` items without events) with a live ID-only model."""
    stream = generate(StreamConfig(users=40, items=50, events=800, seed=5))
    schema = EventSchema()
    with open_store(home) as store:
        store.log.append([schema.validate(event) for event in stream.events()])
        store.catalog.upsert(catalogue_only)
    config = SASRecConfig(item_tower="id", hidden=16, layers=1, max_len=20, epochs=1, device="cpu")
    train_and_register(Home(home, Settings()), config, text_model="unused", progress=False)
    return home


def test_retrieval_benchmark_smoke(tmp_path: Path) -> None:
    home = id_model_home(tmp_path / "home")
    out = tmp_path / "retrieval.json"
    result = run_retrieval_benchmark(
        items=2000, dim=16, queries=20, k=5, out=out, seed=0, model_home=home, expansions=(16, 64)
    )
    written = json.loads(out.read_text())
    assert set(written) >= {"ann", "quantization"} and written == json.loads(json.dumps(result))
    settings = written["ann"]["hnsw"]["settings"]
    assert [s["expansion_search"] for s in settings] == [16, 64]
    assert all(0 <= s["recall@5"] <= 1 for s in settings)
    quantization = written["quantization"]
    assert {"fp32", "int8", "ndcg@10_change", "top10_overlap"} <= set(quantization)
    assert quantization["fp32"]["score_latency"]["p50_ms"] > 0
    assert out.with_suffix(".png").stat().st_size > 0
    assert "fp32 vs int8" in out.with_suffix(".md").read_text()


def test_an_id_model_retrieves_only_the_items_it_trained_on(tmp_path: Path) -> None:
    """Catalogue items without events have zero rows in an ID-only model: never recommended, not indexed."""
    home = id_model_home(tmp_path / "home", [Item(f"shelf{n}", f"Never bought {n}") for n in range(30)])
    with Runtime.open(home) as runtime:
        loaded = runtime.loaded
        shelf = {code for code, item in enumerate(loaded.items) if item.startswith("shelf")}
        assert len(shelf) == 30 and set(loaded.model.unscorable()) == shelf
        assert loaded.retrieved is not None and shelf.isdisjoint(loaded.retrieved)
        assert len(loaded.retriever or []) == len(loaded.items) - 30
        for user in ("u1", "u2", "u3"):
            seen = set(runtime.store.log.recent_items(user, 20))
            answer = runtime.recommend(user, k=len(loaded.items))
            recommended = {entry["item_id"] for entry in answer["items"]}
            assert answer["source"] == "model" and recommended
            assert not recommended & seen and not any(item.startswith("shelf") for item in recommended)
