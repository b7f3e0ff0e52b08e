"""The category head: learns from text and behaviour, never from the label itself, and round-trips."""

from pathlib import Path

import numpy as np
import pytest

from streamrec.items import Item, without_category
from streamrec.models.categories import CategoryHead
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.store import open_store
from streamrec.training.fit import category_head, prepare

CLASSES = ["shoe", "lamp", "book"]


def blobs(n: int, *, text_signal: float, behaviour_signal: float, seed: int = 0):
    """Items whose text and behaviour vectors lean towards their class's direction by the given amounts."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(len(CLASSES), size=n)
    text_centres, behaviour_centres = rng.normal(size=(3, 16)), rng.normal(size=(3, 8))
    text = rng.normal(size=(n, 16)) + text_signal * text_centres[labels]
    behaviour = rng.normal(size=(n, 8)) + behaviour_signal * behaviour_centres[labels]
    return text.astype(np.float32), behaviour.astype(np.float32), [CLASSES[i] for i in labels]


def test_behaviour_adds_what_the_text_does_not_say() -> None:
    text, behaviour, labels = blobs(600, text_signal=0.3, behaviour_signal=2.0)
    head = CategoryHead.fit(text, behaviour, labels)
    assert head is not None
    report = head.report
    assert report["classes"] == 3 and report["held_out"] == 120
    assert report["accuracy_text_only"] > report["accuracy_majority_class"] + 0.1
    assert report["accuracy_with_behaviour"] > report["accuracy_text_only"] + 0.2


def test_saved_heads_predict_the_same_and_rare_or_single_categories_are_never_learned(tmp_path: Path) -> None:
    text, _, labels = blobs(300, text_signal=2.0, behaviour_signal=0.0)
    labels[:2] = ["rare", "rare"]  # fewer than MIN_ITEMS_PER_CLASS
    head = CategoryHead.fit(text, None, labels)
    assert head is not None and "rare" not in head.classes and head.behaviour_dim == 0
    head.save(tmp_path)
    loaded = CategoryHead.load(tmp_path)
    assert loaded is not None and loaded.predict(text[:20]) == head.predict(text[:20])
    assert CategoryHead.load(tmp_path / "elsewhere") is None
    assert CategoryHead.fit(text, None, ["shoe"] * len(labels)) is None


class WordCounter:
    """A stand-in text encoder: one dimension per word, so what the head may read is plain to see."""

    vocabulary = ("category:", "shoe", "lamp", "book", "blue", "red")

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        words = [text.lower().replace(".", " ").split() for text in texts]
        return np.array([[w.count(v) for v in self.vocabulary] for w in words], dtype=np.float32)


def test_the_head_reads_item_text_without_the_category(tmp_path: Path) -> None:
    """Titles carry no hint of the category: a head that saw the label in its input would score 100 %."""
    rng = np.random.default_rng(3)
    items = [
        Item(f"i{n}", title=str(rng.choice(["blue", "red"])), category=CLASSES[n % 3]) for n in range(90)
    ]
    with open_store(tmp_path) as store:
        store.catalog.upsert(items)
        prepared = prepare(store)
        model = SASRec(SASRecConfig(item_tower="text", epochs=1), np.zeros((90, 4), np.float32))
        model.net = model.build(90, [])
        head = category_head(store, prepared.items, model, WordCounter())  # type: ignore[arg-type]
    assert head is not None
    assert head.report["accuracy_text_only"] <= 0.6
    assert "accuracy_with_behaviour" not in head.report  # a text-only model has no ID rows


@pytest.mark.parametrize("codes", [None, np.array([2, 0])])
def test_id_rows_are_zero_until_trained(codes: np.ndarray | None) -> None:
    model = SASRec(SASRecConfig(item_tower="id", hidden=8, epochs=1))
    model.net = model.build(3, [])
    model.net.id_trained[2] = 0  # item code 1 untrained
    rows = model.id_rows(codes)
    assert rows is not None and rows.shape == (3 if codes is None else 2, 8)
    if codes is None:
        assert not rows[1].any() and rows[0].any()


def test_an_attribute_that_repeats_the_category_is_left_out_too() -> None:
    """MovieLens films carry their genres twice: as the category and as an attribute."""
    film = Item(
        "m1", title="Heat", category="Action, Crime", attributes={"genres": ["Action", "Crime"], "year": 1995}
    )
    assert without_category(film).text == "Heat. year: 1995"
    assert without_category(Item("m2", title="Up", category="kids")).text == "Up"
