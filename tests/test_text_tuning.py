"""The language model learns with the recommender: LoRA on MiniLM, saved with the version, updated."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from chains import N_ITEMS, TINY, chain_data
from streamrec.config import UpdateSettings
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.models.text_tuner import TextTuner
from streamrec.text import TextEncoder

COLOURS = ["red", "green", "blue", "black", "white", "yellow"]
TEXTS = [f"{COLOURS[i % 6]} cotton shirt number {i}" for i in range(N_ITEMS + 4)]
TUNED = SASRecConfig(item_tower="hybrid", text_tuning="lora", text_tuning_items=8, epochs=2, **TINY)


@pytest.fixture(scope="module")
def frozen_text() -> np.ndarray:
    return TextEncoder().encode(TEXTS)


def lora_b_norm(state: dict[str, torch.Tensor]) -> float:
    """LoRA's B matrices start at zero: their norm is how far training moved the adapters."""
    return float(sum(t.norm() for name, t in state.items() if "lora_B" in name))


def test_untrained_adapters_give_the_frozen_encoders_vectors(frozen_text: np.ndarray) -> None:
    tuner = TextTuner("all-MiniLM-L6-v2", TEXTS)
    np.testing.assert_allclose(tuner.encode_all().numpy(), frozen_text, atol=1e-4)


def test_a_tuned_fit_moves_the_adapters_ships_a_consistent_table_and_reloads(
    tmp_path: Path, frozen_text: np.ndarray
) -> None:
    data = chain_data(60)
    model = SASRec(TUNED, frozen_text[:N_ITEMS], TEXTS[:N_ITEMS]).fit(data, progress=False)
    assert model.net is not None and model.net.text_tuner is None  # dropped after training
    assert model.text_lora and all("lora_" in name for name in model.text_lora)
    assert lora_b_norm(model.text_lora) > 0
    # the shipped table is what the tuned encoder says, not the frozen vectors
    tuner = TextTuner("all-MiniLM-L6-v2", TEXTS[:N_ITEMS])
    tuner.load_lora_state(model.text_lora)
    shipped = model.net.text_embeddings[1:].numpy()
    np.testing.assert_allclose(shipped, tuner.encode_all().numpy(), atol=1e-5)
    assert np.abs(shipped - frozen_text[:N_ITEMS]).max() > 1e-4

    model.save(tmp_path / "v1")
    loaded = SASRec.load(tmp_path / "v1")
    assert loaded.config.text_tuning == "lora"
    assert loaded.text_lora.keys() == model.text_lora.keys()
    histories = data.sequences[:5]
    np.testing.assert_allclose(loaded.score(histories), model.score(histories), atol=1e-5)


def test_an_update_moves_the_adapters_and_encodes_new_items_with_them(
    tmp_path: Path, frozen_text: np.ndarray
) -> None:
    data = chain_data(60)
    model = SASRec(TUNED, frozen_text[:N_ITEMS], TEXTS[:N_ITEMS]).fit(data, progress=False)
    model.save(tmp_path / "v1")
    live = SASRec.load(tmp_path / "v1")
    before = {name: t.clone() for name, t in live.text_lora.items()}
    grown = replace(
        data,
        n_items=N_ITEMS + 4,
        sequences=[*data.sequences, np.array([1, 2, N_ITEMS, N_ITEMS + 1, 5])],
        learn=[np.zeros(len(s), bool) for s in data.sequences] + [np.ones(5, bool)],
    )
    live.partial_fit(
        grown, UpdateSettings(strategy="finetune"), text_embeddings=frozen_text, item_texts=TEXTS
    )
    assert live.n_items == N_ITEMS + 4
    assert any(not torch.equal(before[name], t) for name, t in live.text_lora.items())
    tuner = TextTuner("all-MiniLM-L6-v2", TEXTS)
    tuner.load_lora_state(live.text_lora)
    assert live.net is not None
    np.testing.assert_allclose(live.net.text_embeddings[1:].numpy(), tuner.encode_all().numpy(), atol=1e-5)


def test_text_tuning_says_what_it_needs(frozen_text: np.ndarray) -> None:
    with pytest.raises(ValueError, match="item_tower='id'"):
        SASRec(replace(TUNED, item_tower="id")).fit(chain_data(5), progress=False)
    with pytest.raises(ValueError, match="needs every item's text"):
        SASRec(TUNED, frozen_text[:N_ITEMS]).fit(chain_data(5), progress=False)
    with pytest.raises(ValueError, match="one process"):
        SASRec(replace(TUNED, processes=2), frozen_text[:N_ITEMS], TEXTS).fit(chain_data(5), progress=False)


def test_a_tuned_model_grows_new_items_in_its_own_text_space(frozen_text: np.ndarray) -> None:
    """New items must not sit in the shipped encoder's space: the model learned on the tuned one."""
    model = SASRec(TUNED, frozen_text[:N_ITEMS], TEXTS).fit(chain_data(60), progress=False)
    grown = model.grow(N_ITEMS + 4, frozen_text)
    assert grown.net is not None
    new_rows = grown.net.text_embeddings[N_ITEMS + 1 :].numpy()
    np.testing.assert_allclose(new_rows, model.tuned_text(TEXTS[N_ITEMS:]), atol=1e-5)
    assert np.abs(new_rows - frozen_text[N_ITEMS:]).max() > 1e-4
    with pytest.raises(ValueError, match="was not tuned"):
        SASRec(replace(TUNED, text_tuning="frozen")).tuned_text(["a shirt"])


def test_the_server_scores_a_new_item_through_the_versions_tuned_encoder(tmp_path: Path) -> None:
    from streamrec.config import Settings
    from streamrec.data.synthetic import StreamConfig, generate
    from streamrec.events import EventSchema
    from streamrec.home import Home
    from streamrec.items import Item, validate_item
    from streamrec.serving.runtime import Runtime
    from streamrec.store import open_store
    from streamrec.training.continual import train_and_register

    stream = generate(StreamConfig(users=40, items=50, events=800, seed=2))
    with open_store(tmp_path) as store:
        store.catalog.upsert(validate_item(record) for record in stream.items)
        store.log.append([EventSchema().validate(event) for event in stream.events()])
    config = SASRecConfig(hidden=16, layers=1, max_len=20, epochs=2, text_tuning="lora", text_tuning_items=4)
    train_and_register(Home(tmp_path, Settings()), config, text_model="all-MiniLM-L6-v2", progress=False)
    with Runtime.open(tmp_path) as runtime:
        model = runtime.loaded.model
        assert model.text_tuned
        item = Item("brand-new", title="Comet telescope nebula kit", category="kit")
        assert runtime.upsert_items([item])["brand-new"].recommendable
        loaded = runtime.loaded
        row = loaded.table[loaded.index["brand-new"] + 1]
        expected = model.items_from_text(model.tuned_text([item.text]), [None])[0]
        torch.testing.assert_close(row, expected)
        shipped = model.items_from_text(TextEncoder().encode([item.text]), [None])[0]
        assert (row - shipped).abs().max() > 1e-5  # not the shipped encoder's vector
