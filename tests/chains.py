"""A tiny sequential dataset for model tests: users walk a chain i → i+1 (mod N) with a little noise."""

import numpy as np

from streamrec.models.base import TrainingData

N_ITEMS = 60
# A model small enough to train in seconds on 2 CPU cores.
TINY = dict(hidden=32, layers=1, heads=1, max_len=20, dropout=0.0, lr=5e-3, batch_size=32, patience=50)


def chain_data(users: int = 150, seed: int = 0) -> TrainingData:
    """Each user walks the chain from a random start; 10 % of steps jump to a random item."""
    rng = np.random.default_rng(seed)
    sequences = []
    for _ in range(users):
        item = int(rng.integers(N_ITEMS))
        walk = []
        for _ in range(int(rng.integers(8, 16))):
            walk.append(item)
            item = (item + 1) % N_ITEMS if rng.random() < 0.9 else int(rng.integers(N_ITEMS))
        sequences.append(np.array(walk, dtype=np.int64))
    return TrainingData(sequences, N_ITEMS)
