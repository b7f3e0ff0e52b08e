"""Dataset readers: exact records, order and locations on tiny fixtures; README counts on the real data."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamrec.data import (
    BENCHMARK_DATASETS,
    FORMATS,
    detect_format,
    open_dataset,
    open_named_dataset,
)
from streamrec.data.base import Dataset
from streamrec.data.movielens import ML100K_GENRES
from streamrec.events import EventSchema
from streamrec.ingest import ingest_dataset
from streamrec.store import open_store

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def events(dataset: Dataset) -> list[tuple[str, dict]]:
    return list(dataset.events())


def items(dataset: Dataset) -> list[tuple[str, dict]]:
    return list(dataset.items())


def write_gz(path: Path, data: bytes) -> Path:
    with gzip.open(path, "wb") as handle:
        handle.write(data)
    return path


# --- generic files -------------------------------------------------------------------------------


class TestJsonl:
    def test_bad_and_blank_lines(self, tmp_path: Path) -> None:
        path = tmp_path / "log.jsonl"
        path.write_text(
            '{"user_id": "u1", "item_id": "i1", "event_type": "view", "timestamp": 5}\n'
            "\n"
            '{"user_id": "u2", "item_id": \n'
            "[1, 2]\n"
            '{"user_id": "u3", "item_id": "i3", "event_type": "click"}\n',
            encoding="utf-8",
        )
        got = events(open_dataset(path))
        assert [where for where, _ in got] == [
            "log.jsonl line 1",
            "log.jsonl line 3",
            "log.jsonl line 4",
            "log.jsonl line 5",
        ]
        assert got[0][1] == {"user_id": "u1", "item_id": "i1", "event_type": "view", "timestamp": 5}
        assert got[1][1]["__invalid__"].startswith("invalid JSON: Expecting value")
        assert got[2][1] == [1, 2]  # not an object: passed on for validation to reject
        assert got[3][1] == {"user_id": "u3", "item_id": "i3", "event_type": "click"}

    def test_invalid_utf8_line_is_reported_not_raised(self, tmp_path: Path) -> None:
        path = tmp_path / "events.jsonl"
        path.write_bytes(b'{"title": "caf\xe9"}\n{"user_id": "u1"}\n')
        got = events(open_dataset(path))
        assert got[0][1]["__invalid__"].startswith("not UTF-8")
        assert got[1] == ("events.jsonl line 2", {"user_id": "u1"})

    def test_mapping_and_gzip(self, tmp_path: Path) -> None:
        lines = [{"uid": 7, "sku": "a", "event_type": "view", "item_id": "shadowed"}]
        write_gz(tmp_path / "e.jsonl.gz", "".join(json.dumps(r) + "\n" for r in lines).encode())
        dataset = open_dataset(tmp_path / "e.jsonl.gz", mapping={"user_id": "uid", "item_id": "sku"})
        expected = {"user_id": 7, "item_id": "a", "event_type": "view"}
        assert events(dataset) == [("e.jsonl.gz line 1", expected)]
        assert dataset.source_files == [tmp_path / "e.jsonl.gz"]
        assert any("user_id<-uid" in note for note in dataset.notes)

    def test_bad_line_reaches_ingest_as_a_reject(self, tmp_path: Path) -> None:
        path = tmp_path / "events.jsonl"
        path.write_text('{"user_id": "u1", "item_id": "i1", "event_type": "view", "timestamp": 5}\n{oops\n')
        with open_store(tmp_path / "home") as store:
            summary = ingest_dataset(
                open_dataset(path),
                store,
                EventSchema(),
                on_error="skip",
                reject_path=tmp_path / "rejects.jsonl",
                progress=False,
            )
        assert (summary.accepted, summary.rejected) == (1, 1)
        reject = json.loads((tmp_path / "rejects.jsonl").read_text())
        assert reject["record"] == "events.jsonl line 2"
        assert reject["problem"].startswith("invalid JSON")


class TestCsv:
    def test_strings_empty_cells_mapping_and_line_numbers(self, tmp_path: Path) -> None:
        path = tmp_path / "clicks.csv"
        path.write_text(
            "uid,sku,event_type,ts,value,item_id\n"
            'u1,"a,b",view,2024-05-01T12:00:00Z,,x\n'
            "\n"
            'u2,"multi\nline",click,1714564800,2.5,y\n'
            "u3,c,view\n",
            encoding="utf-8",
        )
        mapping = {"user_id": "uid", "item_id": "sku", "timestamp": "ts"}
        got = events(open_dataset(path, mapping=mapping))
        assert got == [
            (
                "clicks.csv line 2",
                {
                    "user_id": "u1",
                    "item_id": "a,b",
                    "event_type": "view",
                    "timestamp": "2024-05-01T12:00:00Z",
                    "value": None,
                },
            ),
            (
                "clicks.csv line 4",
                {
                    "user_id": "u2",
                    "item_id": "multi\nline",
                    "event_type": "click",
                    "timestamp": "1714564800",
                    "value": "2.5",
                },
            ),
            ("clicks.csv line 6", {"__invalid__": "has 3 fields, the header has 6"}),
        ]
        # The strings validate into the same event streamrec gets from JSON.
        event = EventSchema().validate(got[0][1], where=got[0][0])
        assert event.timestamp == 1714564800.0 and event.value is None

    def test_gzip_with_bom(self, tmp_path: Path) -> None:
        write_gz(tmp_path / "events.csv.gz", "\ufeffuser_id,item_id,event_type\nu1,i1,view\n".encode())
        dataset = open_dataset(tmp_path)
        assert dataset.name == f"csv:{tmp_path.name}"
        expected = {"user_id": "u1", "item_id": "i1", "event_type": "view"}
        assert events(dataset) == [("events.csv.gz line 2", expected)]

    def test_mapping_errors_name_the_problem(self, tmp_path: Path) -> None:
        path = tmp_path / "events.csv"
        path.write_text("uid,item_id,event_type\n")
        with pytest.raises(ValueError, match="no column 'user'"):
            open_dataset(path, mapping={"user_id": "user"})
        with pytest.raises(ValueError, match="'usr_id' is not an event or item field"):
            open_dataset(path, mapping={"usr_id": "uid"})


def test_parquet_types_times_and_mapping(tmp_path: Path) -> None:
    table = pa.table(
        {
            "uid": pa.array([1, 2, None], pa.int64()),
            "item_id": ["a", "b", "c"],
            "event_type": ["view", "purchase", "view"],
            "at": pa.array([1_714_564_800_000, 1_714_564_801_500, None], pa.timestamp("ms", tz="UTC")),
            "value": [None, 9.5, 1.0],
        }
    )
    pq.write_table(table, tmp_path / "events.parquet", row_group_size=2)
    dataset = open_dataset(tmp_path / "events.parquet", mapping={"user_id": "uid", "timestamp": "at"})
    assert events(dataset) == [
        (
            "events.parquet row 1",
            {"user_id": 1, "item_id": "a", "event_type": "view", "timestamp": 1714564800.0, "value": None},
        ),
        (
            "events.parquet row 2",
            {"user_id": 2, "item_id": "b", "event_type": "purchase", "timestamp": 1714564801.5, "value": 9.5},
        ),
        (
            "events.parquet row 3",
            {"user_id": None, "item_id": "c", "event_type": "view", "timestamp": None, "value": 1.0},
        ),
    ]


class TestDirectory:
    def test_simulate_layout(self, tmp_path: Path) -> None:
        (tmp_path / "events.jsonl").write_text(
            '{"user_id": "u1", "item_id": "i2", "event_type": "view", "timestamp": 9}\n'
            '{"user_id": "u1", "item_id": "i1", "event_type": "view", "timestamp": 3}\n'
        )
        (tmp_path / "items.jsonl").write_text('{"item_id": "i1", "title": "One"}\n')
        (tmp_path / "truth.json").write_text("{}")
        assert detect_format(tmp_path) == "jsonl"
        dataset = open_dataset(tmp_path)
        assert dataset.has_timestamps
        assert [r["item_id"] for _, r in events(dataset)] == ["i2", "i1"]  # source order, not time order
        assert items(dataset) == [("items.jsonl line 1", {"item_id": "i1", "title": "One"})]
        assert dataset.source_files == [tmp_path / "events.jsonl"]

    def test_items_file_in_another_format_and_for_a_single_file(self, tmp_path: Path) -> None:
        (tmp_path / "events.jsonl").write_text('{"user_id": "u1", "item_id": "i1", "event_type": "view"}\n')
        (tmp_path / "items.csv").write_text("item_id,title,category\ni1,One,\n")
        assert items(open_dataset(tmp_path)) == [
            ("items.csv line 2", {"item_id": "i1", "title": "One", "category": None})
        ]
        single = open_dataset(tmp_path / "events.jsonl", items=tmp_path / "items.csv")
        assert [r["item_id"] for _, r in items(single)] == ["i1"]

    def test_two_events_files_are_ambiguous(self, tmp_path: Path) -> None:
        (tmp_path / "events.jsonl").write_text("")
        (tmp_path / "events.csv").write_text("user_id\n")
        with pytest.raises(ValueError, match="more than one"):
            open_dataset(tmp_path)
        assert events(open_dataset(tmp_path, "csv")) == []


# --- MovieLens -----------------------------------------------------------------------------------


def make_ml100k(folder: Path) -> Path:
    folder.mkdir()
    (folder / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n")
    (folder / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(ML100K_GENRES)) + "\n")
    flags_toy = "|".join("1" if g in ("Animation", "Children's", "Comedy") else "0" for g in ML100K_GENRES)
    flags_mis = "|".join("1" if g == "Drama" else "0" for g in ML100K_GENRES)
    flags_none = "|".join("0" for _ in ML100K_GENRES)
    (folder / "u.item").write_bytes(
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags_toy}\n".encode("iso-8859-1")
        + f"2|Misérables, Les|01-Jan-1996||http://y|{flags_mis}\n".encode("iso-8859-1")
        + f"3|unknown||||{flags_none}\n".encode("iso-8859-1")
    )
    return folder


def make_ml1m(folder: Path) -> Path:
    folder.mkdir()
    (folder / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n"
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "2::Kådisbellan (1993)::Drama\n".encode("iso-8859-1")
    )
    write_gz(folder / "ratings_users1-2999.dat.gz", b"1::1193::5::978300760\n1::1::4::978300275\n")
    write_gz(folder / "ratings_all_no_timestamp.dat.gz", b"1::1193::5\n1::1::4\n3000::2::1\n")
    return folder


class TestMovieLens:
    def test_100k(self, tmp_path: Path) -> None:
        dataset = open_dataset(make_ml100k(tmp_path / "ml-100k"))
        assert (dataset.name, dataset.has_timestamps) == ("movielens-100k", True)
        assert dataset.source_files == [tmp_path / "ml-100k" / "u.data"]
        assert events(dataset) == [
            (
                "u.data line 1",
                {
                    "user_id": "196",
                    "item_id": "242",
                    "event_type": "rating",
                    "value": 3,
                    "timestamp": 881250949,
                },
            ),
            (
                "u.data line 2",
                {
                    "user_id": "186",
                    "item_id": "302",
                    "event_type": "rating",
                    "value": 3,
                    "timestamp": 891717742,
                },
            ),
            (
                "u.data line 3",
                {
                    "user_id": "22",
                    "item_id": "377",
                    "event_type": "rating",
                    "value": 1,
                    "timestamp": 878887116,
                },
            ),
        ]
        assert items(dataset) == [
            (
                "u.item line 1",
                {
                    "item_id": "1",
                    "title": "Toy Story (1995)",
                    "category": "Animation, Children's, Comedy",
                    "attributes": {"genres": ["Animation", "Children's", "Comedy"], "year": 1995},
                },
            ),
            # No year in the title: it comes from the release date.
            (
                "u.item line 2",
                {
                    "item_id": "2",
                    "title": "Misérables, Les",
                    "category": "Drama",
                    "attributes": {"genres": ["Drama"], "year": 1996},
                },
            ),
            ("u.item line 3", {"item_id": "3", "title": "unknown"}),
        ]

    def test_1m_default_file_has_timestamps(self, tmp_path: Path) -> None:
        folder = make_ml1m(tmp_path / "ml-1m")
        dataset = open_dataset(folder)
        assert (dataset.name, dataset.has_timestamps) == ("movielens-1m", True)
        assert dataset.source_files == [folder / "ratings_users1-2999.dat.gz"]
        assert "ratings file: ratings_users1-2999.dat.gz" in dataset.notes[0]
        assert events(dataset) == [
            (
                "ratings_users1-2999.dat.gz line 1",
                {
                    "user_id": "1",
                    "item_id": "1193",
                    "event_type": "rating",
                    "value": 5,
                    "timestamp": 978300760,
                },
            ),
            (
                "ratings_users1-2999.dat.gz line 2",
                {"user_id": "1", "item_id": "1", "event_type": "rating", "value": 4, "timestamp": 978300275},
            ),
        ]
        got = items(dataset)
        assert [r["item_id"] for _, r in got] == ["1", "1193", "2"]  # every movie, in file order
        assert got[2] == (
            "movies.dat line 3",
            {
                "item_id": "2",
                "title": "Kådisbellan (1993)",
                "category": "Drama",
                "attributes": {"genres": ["Drama"], "year": 1993},
            },
        )

    def test_1m_without_timestamps_and_preferred_file(self, tmp_path: Path) -> None:
        folder = make_ml1m(tmp_path / "ml-1m")
        dataset = open_dataset(folder, ratings_file="ratings_all_no_timestamp.dat.gz")
        assert not dataset.has_timestamps
        assert any("no timestamps" in note for note in dataset.notes)
        assert events(dataset)[2] == (
            "ratings_all_no_timestamp.dat.gz line 3",
            {"user_id": "3000", "item_id": "2", "event_type": "rating", "value": 1},
        )
        (folder / "ratings.dat").write_text("9::1::2::978300760\n6::1::x::y\n6::1\n")
        chosen = open_dataset(folder)
        assert chosen.source_files == [folder / "ratings.dat"]
        assert events(chosen)[1:] == [
            (
                "ratings.dat line 2",
                {"user_id": "6", "item_id": "1", "event_type": "rating", "value": "x", "timestamp": "y"},
            ),  # left for validation to name the field
            ("ratings.dat line 3", {"__invalid__": "expected 4 '::'-separated fields, got 2"}),
        ]

    def test_ratings_file_errors(self, tmp_path: Path) -> None:
        folder = make_ml1m(tmp_path / "ml-1m")
        with pytest.raises(ValueError, match="ratings file not found"):
            open_dataset(folder, ratings_file="nope.dat")
        (folder / "ratings_users1-2999.dat.gz").unlink()
        (folder / "ratings_other.dat").write_text("")
        with pytest.raises(ValueError, match="pick one with ratings_file="):
            open_dataset(folder, "movielens")


# --- SASRec and S3-Rec ---------------------------------------------------------------------------


def make_sasrec(root: Path, *, maps: bool = True) -> Path:
    folder = root / "ml-1m-sasrec"
    folder.mkdir(parents=True)
    write_gz(folder / "ml-1m.txt.gz", b"1 2\n1 1\n2 2\n")
    if maps:
        (folder / "sas_to_original_items.txt").write_text("1 1193\n2 1\n3 2\n")
        (folder / "sas_to_original_users.txt").write_text("1 5988\n2 10\n")
    make_ml1m(root / "ml-1m")
    return folder


class TestSasrec:
    def test_original_ids_and_titles_of_occurring_items(self, tmp_path: Path) -> None:
        folder = make_sasrec(tmp_path)
        assert detect_format(folder) == "sasrec"
        dataset = open_dataset(folder)
        assert (dataset.name, dataset.has_timestamps) == ("sasrec-ml-1m", False)
        assert dataset.source_files[0] == folder / "ml-1m.txt.gz"
        assert events(dataset) == [
            ("ml-1m.txt.gz line 1", {"user_id": "5988", "item_id": "1", "event_type": "rating"}),
            ("ml-1m.txt.gz line 2", {"user_id": "5988", "item_id": "1193", "event_type": "rating"}),
            ("ml-1m.txt.gz line 3", {"user_id": "10", "item_id": "1", "event_type": "rating"}),
        ]
        got = items(dataset)  # sas item 3 (MovieID 2) never occurs, so it is left out
        assert [(where, r["item_id"], r["title"]) for where, r in got] == [
            ("movies.dat line 2", "1193", "One Flew Over the Cuckoo's Nest (1975)"),
            ("movies.dat line 1", "1", "Toy Story (1995)"),
        ]

    def test_unmapped_id_is_reported(self, tmp_path: Path) -> None:
        folder = make_sasrec(tmp_path)
        (folder / "sas_to_original_items.txt").write_text("1 1193\n")
        got = events(open_dataset(folder, "sasrec"))
        problem = "item 2 is not in sas_to_original_items.txt"
        assert got[0] == ("ml-1m.txt.gz line 1", {"__invalid__": problem})

    def test_without_maps_ids_stay_and_there_are_no_items(self, tmp_path: Path) -> None:
        folder = make_sasrec(tmp_path, maps=False)
        dataset = open_dataset(folder)
        assert events(dataset)[0][1] == {"user_id": "1", "item_id": "2", "event_type": "rating"}
        assert items(dataset) == []


def make_s3rec(folder: Path, name: str = "Beauty") -> Path:
    folder.mkdir()
    (folder / f"{name}.txt").write_text("1 1 2 3\n2 3 1\n")
    (folder / f"{name}_item_titles.tsv").write_text(
        "item_id\tasin\ttitle\n1\tB001\tNail polish, red\n2\tB002\t\n3\tB003\tSoap\twith a tab\n",
        encoding="utf-8",
    )
    return folder


class TestS3rec:
    def test_sequences_and_titles(self, tmp_path: Path) -> None:
        folder = make_s3rec(tmp_path / "beauty")
        assert detect_format(folder) == "s3rec"
        dataset = open_dataset(folder)
        assert (dataset.name, dataset.has_timestamps) == ("s3rec-beauty", False)
        assert dataset.source_files == [folder / "Beauty.txt"]
        assert events(dataset) == [
            ("Beauty.txt line 1 item 1", {"user_id": "1", "item_id": "1", "event_type": "purchase"}),
            ("Beauty.txt line 1 item 2", {"user_id": "1", "item_id": "2", "event_type": "purchase"}),
            ("Beauty.txt line 1 item 3", {"user_id": "1", "item_id": "3", "event_type": "purchase"}),
            ("Beauty.txt line 2 item 1", {"user_id": "2", "item_id": "3", "event_type": "purchase"}),
            ("Beauty.txt line 2 item 2", {"user_id": "2", "item_id": "1", "event_type": "purchase"}),
        ]
        assert items(dataset) == [
            (
                "Beauty_item_titles.tsv line 2",
                {"item_id": "1", "title": "Nail polish, red", "attributes": {"asin": "B001"}},
            ),
            ("Beauty_item_titles.tsv line 3", {"item_id": "2", "attributes": {"asin": "B002"}}),
            (
                "Beauty_item_titles.tsv line 4",
                {"item_id": "3", "title": "Soap\twith a tab", "attributes": {"asin": "B003"}},
            ),
        ]

    def test_any_name_and_ambiguity(self, tmp_path: Path) -> None:
        folder = make_s3rec(tmp_path / "toys", "Toys_and_Games")
        assert open_dataset(folder).name == "s3rec-toys_and_games"
        (folder / "notes.txt").write_text("")
        with pytest.raises(ValueError, match=r"several \.txt files \(Toys_and_Games.txt, notes.txt\)"):
            open_dataset(folder)
        assert open_dataset(folder / "Toys_and_Games.txt", "s3rec").name == "s3rec-toys_and_games"


# --- open_dataset --------------------------------------------------------------------------------


class TestOpenDataset:
    def test_formats_and_detection(self, tmp_path: Path) -> None:
        assert FORMATS == ("jsonl", "csv", "parquet", "movielens", "sasrec", "s3rec")
        make_ml100k(tmp_path / "ml-100k")
        assert detect_format(tmp_path / "ml-100k") == "movielens"
        assert detect_format(tmp_path / "ml-100k" / "u.data") == "movielens"
        assert detect_format(make_ml1m(tmp_path / "ml-1m")) == "movielens"
        assert open_dataset(tmp_path / "ml-100k" / "u.data").name == "movielens-100k"
        named = {"a.jsonl": "jsonl", "a.ndjson.gz": "jsonl", "a.CSV": "csv", "a.parquet": "parquet"}
        for name, fmt in named.items():
            (tmp_path / name).write_text("")
            assert detect_format(tmp_path / name) == fmt

    def test_clear_errors(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="no such file or directory"):
            open_dataset(tmp_path / "missing")
        with pytest.raises(ValueError, match=r"cannot tell the dataset format; expected events\.jsonl"):
            open_dataset(tmp_path)
        (tmp_path / "data.bin").write_text("")
        with pytest.raises(ValueError, match="cannot tell the format from the file name"):
            open_dataset(tmp_path / "data.bin")
        with pytest.raises(ValueError, match="unknown format 'xml'"):
            open_dataset(tmp_path, "xml")
        with pytest.raises(ValueError, match="no events file"):
            open_dataset(tmp_path, "jsonl")
        folder = make_ml100k(tmp_path / "ml-100k")
        with pytest.raises(ValueError, match="does not take option 'ratings_file'"):
            open_dataset(folder, "sasrec", ratings_file="u.data")
        with pytest.raises(ValueError, match="column mapping applies to"):
            open_dataset(folder, mapping={"user_id": "uid"})

    def test_named_datasets(self, tmp_path: Path) -> None:
        assert set(BENCHMARK_DATASETS) == {"ml-100k", "ml-1m", "ml-1m-ts", "beauty"}
        make_sasrec(tmp_path)
        assert open_named_dataset("ml-1m", tmp_path).name == "sasrec-ml-1m"  # the root of all datasets
        assert open_named_dataset("ml-1m-ts", tmp_path / "ml-1m").name == "movielens-1m"  # the folder itself
        with pytest.raises(ValueError, match="unknown dataset 'ml-20m'"):
            open_named_dataset("ml-20m", tmp_path)


# --- the real datasets ---------------------------------------------------------------------------


def counts(dataset: Dataset) -> tuple[int, int, int]:
    users, items_seen, n = set(), set(), 0
    for _, record in dataset.events():
        n += 1
        users.add(record["user_id"])
        items_seen.add(record["item_id"])
    return n, len(users), len(items_seen)


@pytest.mark.skipif(not DATASETS.exists(), reason=f"{DATASETS} (the shared benchmark datasets) is not here")
class TestSharedDatasets:
    """The counts stated in each dataset's README."""

    def test_ml_100k(self) -> None:
        dataset = open_named_dataset("ml-100k", DATASETS)
        assert counts(dataset) == (100_000, 943, 1_682)
        assert len(items(dataset)) == 1_682

    def test_ml_1m_sasrec(self) -> None:
        dataset = open_named_dataset("ml-1m", DATASETS)
        assert not dataset.has_timestamps
        assert counts(dataset) == (999_611, 6_040, 3_416)
        got = items(dataset)
        assert len(got) == 3_416 and all(record.get("title") for _, record in got)
        assert next(dataset.events())[1]["user_id"] == "5988"  # SASRec's user 1

    def test_beauty(self) -> None:
        dataset = open_named_dataset("beauty", DATASETS)
        assert counts(dataset) == (198_502, 22_363, 12_101)
        got = items(dataset)
        assert len(got) == 12_101
        # 7 products have an empty name in the source titles file itself.
        assert sum(1 for _, record in got if record.get("title")) == 12_094
        assert all(record["attributes"]["asin"] for _, record in got)

    def test_ml_1m_with_timestamps(self) -> None:
        dataset = open_named_dataset("ml-1m-ts", DATASETS)
        assert dataset.has_timestamps
        assert counts(dataset)[:2] == (487_650, 2_999)

    def test_ml_1m_all_ratings_without_timestamps(self) -> None:
        dataset = open_dataset(DATASETS / "ml-1m", ratings_file="ratings_all_no_timestamp.dat.gz")
        assert not dataset.has_timestamps
        assert counts(dataset)[:2] == (1_000_209, 6_040)
        assert "timestamp" not in next(dataset.events())[1]
