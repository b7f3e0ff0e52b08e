"""Two processes (DDP, gloo) take the single process's steps: same global batch, same model, ranks in sync."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from chains import TINY, chain_data
from streamrec.cli import main
from streamrec.evaluation.offline import evaluate, leave_one_out
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.training.distributed import Replicas, free_port

# 129 training rows in batches of 32: each epoch ends on a one-row batch, so rank 1 takes a stand-in.
USERS = 129
# No dropout and float32 products: the two runs then differ by float rounding only.
EXACT = SASRecConfig(item_tower="id", epochs=3, matmul_dtype="float32", **TINY)


def fit(config: SASRecConfig, split) -> SASRec:
    valid = (split.valid_histories, split.valid_targets)
    return SASRec(config).fit(split.train, valid=valid, progress=False)


def test_two_processes_reach_the_single_process_model_step_for_step() -> None:
    split = leave_one_out(chain_data(USERS))
    one = fit(EXACT, split)
    two = fit(SASRecConfig(**{**EXACT.to_dict(), "processes": 2}), split)
    log_one, log_two = one.training_log, two.training_log
    assert log_one is not None and log_two is not None
    assert (log_two.processes, log_two.replica_max_diff) == (2, 0.0)  # the ranks' weights are identical
    assert (log_two.steps, log_two.epochs, log_two.best_epoch) == (log_one.steps, log_one.epochs, 3)
    for a, b in zip(log_one.history, log_two.history, strict=True):  # epoch loss over the global batches
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["valid_ndcg@10"] == pytest.approx(a["valid_ndcg@10"], abs=1e-6)

    histories = split.test_histories
    gap = np.abs(two.score(histories) - one.score(histories)).max()
    # The same rows per step taken as 64 (what keeping 32 rows per rank would mean) land far away.
    doubled = fit(SASRecConfig(**{**EXACT.to_dict(), "batch_size": 64}), split)
    assert gap < 1e-4 and np.abs(doubled.score(histories) - one.score(histories)).max() > 0.1
    ndcg_one = evaluate(one, histories, split.test_targets)["ndcg@10"]
    ndcg_two = evaluate(two, histories, split.test_targets)["ndcg@10"]
    assert ndcg_one > 0.5  # learned the chains
    assert ndcg_two == pytest.approx(ndcg_one, rel=0.03)


def _difference(rank: int, port: int, offset: float, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        net = torch.nn.Linear(4, 3)
        with torch.no_grad():
            net.weight[1, 2] += offset * rank  # rank 1 out of step by `offset`
        gap = Replicas(rank, 2, torch.device("cpu")).max_difference(net)
        Path(out, f"rank{rank}.json").write_text(json.dumps(gap))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_the_sync_check_sees_a_rank_out_of_step(tmp_path: Path) -> None:
    """What the first test's ``replica_max_diff == 0.0`` rests on: the check can tell ranks apart."""
    mp.spawn(_difference, args=(free_port(), 0.25, str(tmp_path)), nprocs=2, join=True)
    gaps = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert gaps == [pytest.approx(0.25), pytest.approx(0.25)]  # every rank learns the largest gap


def test_streamrec_train_nproc_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The command line: the version is fitted on two processes and keeps the setting for its refits."""
    sim, home = tmp_path / "sim", tmp_path / "recs"
    assert main(["simulate", "--out", str(sim), "--users", "60", "--items", "50", "--events", "900"]) == 0
    assert main(["ingest", str(sim), "--home", str(home), "--quiet"]) == 0
    capsys.readouterr()
    options = ["--item-tower", "id", "--hidden", "16", "--layers", "1", "--max-len", "20", "--epochs", "2"]
    assert main(["train", "--home", str(home), "--nproc", "2", *options, "--json", "--quiet"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["status"] == "live" and info["metrics"]["ndcg@10"] > 0
    network = json.loads((home / "models" / info["version"] / "network.json").read_text())
    assert network["config"]["processes"] == 2  # a drift refit or `full` update of it runs on two as well
