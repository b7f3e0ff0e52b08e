"""The command line end to end: simulate → ingest → stats, and its error messages."""

import json
from pathlib import Path

import pytest

from streamrec.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_simulate_ingest_twice_and_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sim, home = tmp_path / "sim", tmp_path / "recs"
    assert (
        run(capsys, "simulate", "--out", str(sim), "--users", "40", "--items", "60", "--events", "800")[0]
        == 0
    )
    code, out, _ = run(capsys, "ingest", str(sim), "--home", str(home), "--json", "--quiet")
    first = json.loads(out)
    assert code == 0 and (first["accepted"], first["rejected"], first["duplicates"]) == (800, 0, 0)
    assert first["items"] == 60
    code, out, _ = run(capsys, "ingest", str(sim), "--home", str(home), "--json", "--quiet")
    second = json.loads(out)
    assert (second["accepted"], second["duplicates"]) == (0, 800)
    code, out, _ = run(capsys, "stats", "--home", str(home), "--json")
    stats = json.loads(out)
    assert code == 0
    assert (stats["events"], stats["last_offset"], stats["catalog_items"]) == (800, 800, 60)
    assert stats["users"] <= 40 and stats["items"] <= 60


def test_bad_file_fails_naming_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "events.jsonl"
    lines = [
        {"user_id": "a", "item_id": "x", "event_type": "view", "timestamp": 10},
        {"user_id": "a", "item_id": "y", "event_type": "view", "timestamp": "soon"},
    ]
    source.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    home = tmp_path / "recs"
    code, _, err = run(capsys, "ingest", str(source), "--home", str(home), "--quiet")
    assert code == 1
    assert "events.jsonl line 2" in err and "field 'timestamp'" in err
    assert "nothing from this dataset was committed" in err
    assert json.loads(run(capsys, "stats", "--home", str(home), "--json")[1])["events"] == 0

    code, out, _ = run(
        capsys, "ingest", str(source), "--home", str(home), "--quiet", "--json", "--on-error", "skip"
    )
    summary = json.loads(out)
    assert (code, summary["accepted"], summary["rejected"]) == (0, 1, 1)
    rejected = json.loads(Path(summary["rejects_file"]).read_text().splitlines()[0])
    assert rejected["field"] == "timestamp" and rejected["raw"]["timestamp"] == "soon"


def test_csv_with_column_mapping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "clicks.csv"
    source.write_text(
        "uid,sku,kind,when\n1,A,click,2024-01-01T00:00:00Z\n1,B,purchase,2024-01-02T00:00:00Z\n"
    )
    mapping = "user_id=uid,item_id=sku,event_type=kind,timestamp=when"
    code, out, _ = run(
        capsys, "ingest", str(source), "--home", str(tmp_path / "h"), "--map", mapping, "--json", "--quiet"
    )
    assert code == 0 and json.loads(out)["accepted"] == 2


def test_clear_errors_for_missing_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "ingest", str(tmp_path / "nope.jsonl"), "--home", str(tmp_path / "h"))
    assert code == 2 and "nope.jsonl" in err
    code, _, err = run(capsys, "stats", "--home", str(tmp_path / "missing"))
    assert code == 2 and "no streamrec home" in err
    code, _, err = run(capsys, "ingest", str(tmp_path), "--home", str(tmp_path / "h"), "--map", "user_id")
    assert code == 2 and "--map: expected FIELD=COLUMN" in err


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (
        ["simulate"],
        ["ingest"],
        ["stats"],
        ["train"],
        ["recommend"],
        ["bench", "ingest"],
        ["bench", "offline"],
    ):
        with pytest.raises(SystemExit) as raised:
            main([*command, "--help"])
        assert raised.value.code == 0
        assert "usage: streamrec" in capsys.readouterr().out


def test_train_weighs_event_types_from_the_home_and_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamrec.home import Home
    from streamrec.models.sasrec import SASRec

    sim, home = tmp_path / "sim", tmp_path / "recs"
    run(capsys, "simulate", "--out", str(sim), "--users", "40", "--items", "60", "--events", "1200")
    run(capsys, "ingest", str(sim), "--home", str(home), "--quiet")
    (home / "streamrec.toml").write_text("[model]\ntype_weights = { add_to_cart = 2.0, purchase = 1.5 }\n")
    small = ("--epochs", "1", "--hidden", "16", "--layers", "1", "--item-tower", "id", "--quiet", "--json")
    code, out, err = run(capsys, "train", "--home", str(home), "--type-weight", "purchase=3", *small)
    assert code == 0, err
    version = json.loads(out)["version"]
    config = SASRec.load(Home.open(home).registry.path(version)).config
    assert config.type_weights == {"add_to_cart": 2.0, "purchase": 3.0}  # the command line wins
    code, _, err = run(capsys, "train", "--home", str(home), "--type-weight", "buy=3", *small)
    assert code == 2 and "--type-weight: unknown event type 'buy'" in err
    (home / "streamrec.toml").write_text("[model]\ntype_weights = { purchase = -1 }\n")
    code, _, err = run(capsys, "stats", "--home", str(home))
    assert code == 2 and "model.type_weights.purchase: Input should be greater than or equal to 0" in err
