"""A fit from scratch on several processes: PyTorch DistributedDataParallel around the one loop.

:func:`train_distributed` starts ``config.processes`` processes on this machine
(gloo on CPU, NCCL on CUDA, one GPU each) and each runs
:func:`~streamrec.training.loop.train_network` with the same seed, so all draw
the same batches in the same order. Each step's batch of ``batch_size`` rows is
dealt out among them, rank ``r`` taking rows ``r, r + N, …``, and each scales its
loss by its share of the batch's learned positions: the gradient DDP averages is
then the one a single process computes on the whole batch (exactly for the
next-item loss; auxiliary losses are weighted by the same shares).

So the global batch, the steps per epoch, the learning rate and its schedule are
the single process's: N processes take the same steps, each on 1/N of the rows,
and reach the same model up to float rounding (with dropout: up to its different
random masks). An epoch's last batch with fewer rows than processes gives the
processes without a row a stand-in that weighs 0, so all take every step.

Rank 0 validates and sends the score to the others, as it sends its clock for
the time budget, so every process stops at the same epoch and keeps the same
best weights; rank 0's weights come back.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from streamrec.models.base import TrainingData
from streamrec.models.sasrec_net import SASRecConfig, SASRecNet
from streamrec.training.loop import Loss, OneProcess, Step, TrainingBatches, TrainingLog, train_network

Valid = tuple[list[np.ndarray], np.ndarray] | None


class Estimator(Protocol):
    """What distributed training needs of the model it fits (``models.sasrec.SASRec`` is one)."""

    config: SASRecConfig
    device: torch.device
    text_embeddings: np.ndarray | None
    net: SASRecNet | None

    def __init__(self, config: SASRecConfig, text_embeddings: np.ndarray | None = None) -> None: ...

    def build_for(self, data: TrainingData) -> SASRecNet: ...

    def validation(self, valid: Valid) -> Callable[[], float] | None: ...


class Replicas(OneProcess):
    """One of ``size`` processes training one model together (what the loop asks, answered for DDP)."""

    def __init__(self, rank: int, size: int, device: torch.device) -> None:
        self.rank, self.size = rank, size
        self.device = device  # where this process's collectives run: NCCL needs CUDA tensors

    def data_parallel(self, net: SASRecNet, loss: Loss) -> Step:
        module = DistributedDataParallel(
            _LossOf(net, loss),
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            forward_sync_buffers=False,  # the buffers (text embeddings, masks) never change in training
            find_unused_parameters=True,  # the auxiliary heads learn only when a batch has their targets
        )

        def step(batches: TrainingBatches, rows: np.ndarray, device: torch.device) -> torch.Tensor:
            mine, share = self.share(batches, rows)
            return module(batches.batch(mine, int(batches.lengths[mine].max()), device)) * share

        return step

    def share(self, batches: TrainingBatches, rows: np.ndarray) -> tuple[np.ndarray, float]:
        """This rank's rows of a global batch, and the factor that makes DDP's mean the batch's loss.

        Each rank's loss is a weighted mean over its own positions; DDP averages the
        ranks' gradients. ``size × (its weight / the batch's)`` times its mean makes that
        average the weighted mean over the whole batch, as one process computes it.
        """
        mine = rows[self.rank :: self.size]
        if not len(mine):  # fewer rows than processes: a stand-in that weighs 0
            return rows[:1], 0.0
        total = float(batches.weights[rows].sum())
        return mine, self.size * float(batches.weights[mine].sum()) / total if total > 0 else 0.0

    def first(self, value: Callable[[], float]) -> float:
        sent = torch.tensor([value() if self.rank == 0 else 0.0], dtype=torch.float64, device=self.device)
        dist.broadcast(sent, src=0)
        return float(sent.item())

    def average(self, value: float) -> float:
        total = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return float(total.item()) / self.size

    def max_difference(self, net: nn.Module) -> float:
        """The largest difference between any rank's weights and rank 0's (0.0: DDP kept them in sync)."""
        mine = torch.cat([p.detach().flatten().double() for p in net.parameters()]).to(self.device)
        theirs = mine.clone()
        dist.broadcast(theirs, src=0)
        gap = (mine - theirs).abs().max().reshape(1)
        dist.all_reduce(gap, op=dist.ReduceOp.MAX)
        return float(gap.item())


class _LossOf(nn.Module):
    """The network behind a forward that returns a batch's loss: DDP syncs what a forward used."""

    def __init__(self, net: SASRecNet, loss: Loss) -> None:
        super().__init__()
        self.net = net
        self.loss = loss

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss(batch)


def train_distributed(model: Estimator, data: TrainingData, valid: Valid, *, progress: bool) -> TrainingLog:
    """Fit ``model.net`` (freshly built) on ``config.processes`` processes; rank 0's weights land in it."""
    size = model.config.processes
    devices = [rank_device(model.device, rank, size) for rank in range(size)]  # fails early on too few GPUs
    threads = max(1, torch.get_num_threads() // size)  # the cores this process had, shared out
    with tempfile.TemporaryDirectory(prefix="streamrec-ddp-") as folder:
        mp.spawn(
            _train_rank,
            args=(
                type(model),  # the estimator each rank rebuilds (passed in: no import back to models)
                size,
                free_port(),
                model.config,
                model.text_embeddings,
                devices,
                data,
                valid,
                progress,
                threads,
                folder,
            ),
            nprocs=size,
            join=True,
        )
        assert model.net is not None
        model.net.load_state_dict(load_file(str(Path(folder) / "weights.safetensors")))
        return TrainingLog(**json.loads((Path(folder) / "log.json").read_text()))


def rank_device(device: torch.device, rank: int, size: int) -> torch.device:
    """Where ``rank`` trains: its own GPU from ``device``'s on, or the CPU every rank shares."""
    if device.type != "cuda":
        return device
    first = device.index or 0
    if first + size > torch.cuda.device_count():
        raise ValueError(
            f"processes={size} from {device} needs {size} GPUs (one per process),"
            f" found {torch.cuda.device_count() - first}"
        )
    return torch.device("cuda", first + rank)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (rank 0 binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _train_rank(
    rank: int,
    estimator: type[Estimator],
    size: int,
    port: int,
    config: SASRecConfig,
    text: np.ndarray | None,
    devices: list[torch.device],
    data: TrainingData,
    valid: Valid,
    progress: bool,
    threads: int,
    folder: str,
) -> None:
    """One process's fit (started by :func:`train_distributed`); rank 0 writes the weights and log."""
    torch.set_num_threads(threads)
    device = devices[rank]
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size)
    try:
        replica = estimator(replace(config, device=str(device)), text)
        replica.net = replica.build_for(data)
        replicas = Replicas(rank, size, device if backend == "nccl" else torch.device("cpu"))
        log = train_network(
            replica.net,
            data,
            replica.config,
            validate=replica.validation(valid),
            progress=progress and rank == 0,
            replicas=replicas,
        )
        log.processes = size
        log.replica_max_diff = replicas.max_difference(replica.net)
        if rank == 0:
            state = {k: v.detach().cpu().contiguous() for k, v in replica.net.state_dict().items()}
            save_file(state, str(Path(folder) / "weights.safetensors"))
            (Path(folder) / "log.json").write_text(json.dumps(asdict(log)))
        # No rank tears its connections down while the other still writes or reads: gloo
        # aborts a process whose peer vanished mid-exchange (seen once in CI as SIGABRT).
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # Gloo's worker threads can still abort the interpreter's own teardown ("terminate called without
    # an active exception", SIGABRT at exit: twice in CI, after the barrier above): the rank's work is
    # on disk, so it leaves without that teardown. A rank that failed raises above, for spawn to report.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
