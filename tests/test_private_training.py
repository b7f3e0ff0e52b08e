"""Differentially private fits (training/private.py): the ε spent, what they still learn, what they refuse."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from chains import N_ITEMS, TINY, chain_data
from streamrec.cli import main
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.training.private import default_delta

CONFIG = SASRecConfig(item_tower="id", **{**TINY, "epochs": 12, "batch_size": 64})


def next_in_top3(model: SASRec) -> float:
    histories = [np.array([(p - 2) % N_ITEMS, (p - 1) % N_ITEMS, p]) for p in range(N_ITEMS)]
    top = np.argsort(-model.score(histories), axis=1)[:, :3]
    return float(np.mean([(p + 1) % N_ITEMS in top[p] for p in range(N_ITEMS)]))


def test_a_private_fit_spends_its_epsilon_and_still_learns_what_many_users_share() -> None:
    data = chain_data(users=400)
    model = SASRec(replace(CONFIG, dp_epsilon=8.0)).fit(data, progress=False)
    spent = model.training_log.privacy
    assert 7.5 <= spent["epsilon"] <= 8.0 and spent["delta"] == default_delta(400)
    assert spent["noise_multiplier"] > 0.5 and spent["users"] == 400 and spent["steps"] == 12 * 6
    # The chain is what every user does: learnable under DP. Untrained it is a 3-in-60 guess.
    assert next_in_top3(model) >= 0.6
    # Far more noise (ε = 0.1) drowns it: the noise is real, not a label.
    drowned = SASRec(replace(CONFIG, dp_epsilon=0.1)).fit(data, progress=False)
    assert drowned.training_log.privacy["noise_multiplier"] > 5 * spent["noise_multiplier"]
    assert next_in_top3(drowned) < next_in_top3(model)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dp_epsilon": 0.0}, "dp_epsilon: must be positive"),
        ({"dp_epsilon": 1.0, "dp_delta": 2.0}, "dp_delta: must be between 0 and 1"),
        ({"dp_epsilon": 1.0, "loss": "sampled"}, "sampled softmax draws negatives by popularity"),
        ({"dp_epsilon": 1.0, "processes": 2}, "runs on one process"),
        (
            {"dp_epsilon": 1.0, "item_tower": "hybrid", "text_tuning": "lora"},
            "keeps the language model frozen",
        ),
    ],
)
def test_settings_a_private_fit_cannot_honour_are_refused_by_name(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SASRec(replace(CONFIG, **change), np.zeros((N_ITEMS, 8), np.float32), ["x"] * N_ITEMS).fit(
            chain_data(users=20), progress=False
        )


def test_train_records_the_epsilon_spent_in_the_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home, sim = tmp_path / "home", tmp_path / "sim"
    assert main(["simulate", "--out", str(sim), "--users", "60", "--items", "40", "--events", "1500"]) == 0
    assert main(["ingest", str(sim), "--home", str(home), "--quiet"]) == 0
    capsys.readouterr()
    command = [
        "train",
        "--home",
        str(home),
        "--dp-epsilon",
        "3",
        "--epochs",
        "2",
        "--hidden",
        "16",
        "--quiet",
    ]
    assert main([*command, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["privacy"]["target_epsilon"] == 3.0 and 0 < info["privacy"]["epsilon"] <= 3.0
    assert info["update"]["tuning"]["skipped"].startswith("a differentially private fit")
    assert main(["train", "--home", str(home), "--dp-epsilon", "3", "--rerank", "lm", "--quiet"]) == 2
