"""SASRec with a text-aware item tower: the sequential model streamrec keeps learning.

A causal transformer reads a user's most recent items and, at every position,
predicts the next one by a dot product with every item's embedding (tied
input/output embeddings). An item's embedding depends on ``item_tower``:

* ``id``: a learned row per item (classic SASRec);
* ``text``: a learned projection of the item's pretrained text embedding;
* ``hybrid``: the sum of both. Items without training history have a zero ID
  row, so they are scored from their text alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from streamrec.models.base import Recommender, TrainingData

ItemTower = Literal["id", "text", "hybrid"]
WEIGHTS_FILE = "model.safetensors"
NETWORK_FILE = "network.json"


@dataclass
class SASRecConfig:
    """Architecture and training settings; defaults follow the published SASRec-CE runs."""

    item_tower: ItemTower = "hybrid"
    hidden: int = 64  # embedding and transformer width
    layers: int = 2  # transformer blocks
    heads: int = 1  # attention heads
    max_len: int = 200  # most recent items the model reads
    dropout: float = 0.1
    id_dropout: float = 0.0  # chance per step to hide an item's ID row (hybrid): trains text to stand alone
    # optimisation
    lr: float = 1e-3
    lr_schedule: Literal["constant", "cosine"] = "constant"  # cosine: to 0 by `epochs` or `max_minutes`
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 100
    patience: int = 10  # epochs without a better validation NDCG@10 before stopping
    max_minutes: float | None = None  # training-time ceiling: no epoch starts that would end past it
    loss: Literal["full", "sampled"] = "full"  # full softmax, or sampled softmax with log-Q correction
    negatives: int = 3000  # sampled negatives per batch (loss="sampled")
    matmul_dtype: str = "auto"  # softmax products in bfloat16 where the hardware is fast at it
    # multi-task: next-item loss weight per event type, and auxiliary heads' weights (λ)
    type_weights: dict[str, float] = field(default_factory=dict)
    aux_event_type_weight: float = 0.0  # λ for predicting the next event's type
    aux_value_weight: float = 0.0  # λ for predicting the next event's value (e.g. rating)
    seed: int = 0
    device: str | None = None  # None: CUDA when available, else CPU

    def to_dict(self) -> dict:
        return asdict(self)


class SASRecNet(nn.Module):
    """The network: item tower, positional embeddings, causal transformer, aux heads.

    Item code 0 is padding; real items are ``1 .. n_items`` here (codes + 1).
    """

    def __init__(
        self, config: SASRecConfig, n_items: int, text_embeddings: torch.Tensor | None, n_event_types: int = 0
    ) -> None:
        super().__init__()
        self.config = config
        self.n_items = n_items
        hidden = config.hidden
        uses_id = config.item_tower in ("id", "hybrid")
        uses_text = config.item_tower in ("text", "hybrid")
        if uses_text and text_embeddings is None:
            raise ValueError(f"item_tower={config.item_tower!r} needs text embeddings for every item")
        self.id_embedding = nn.Embedding(n_items + 1, hidden, padding_idx=0) if uses_id else None
        if uses_text:
            assert text_embeddings is not None and text_embeddings.shape[0] == n_items
            padded = torch.cat([torch.zeros(1, text_embeddings.shape[1]), text_embeddings.float()])
            self.register_buffer("text_embeddings", padded)  # [n_items + 1, text_dim]
            self.text_projection = nn.Linear(text_embeddings.shape[1], hidden)
        else:
            self.text_embeddings = None
            self.text_projection = None
        # 1 where an item's ID row was trained; cold items score from text alone.
        self.register_buffer("id_trained", torch.ones(n_items + 1))
        self.position_embedding = nn.Embedding(config.max_len, hidden)
        self.input_dropout = nn.Dropout(config.dropout)
        block = nn.TransformerEncoderLayer(
            hidden,
            config.heads,
            dim_feedforward=hidden,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            block, config.layers, norm=nn.LayerNorm(hidden), enable_nested_tensor=False
        )
        self.event_type_head = nn.Linear(hidden, n_event_types) if n_event_types > 1 else None
        self.value_head = nn.Linear(hidden, 1)
        self.register_buffer("causal_mask", nn.Transformer.generate_square_subsequent_mask(config.max_len))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if module.padding_idx is not None:
                nn.init.zeros_(module.weight[module.padding_idx])

    def item_table(self) -> torch.Tensor:
        """Every item's embedding ``[n_items + 1, hidden]``; row 0 is padding."""
        table = None
        if self.id_embedding is not None:
            table = self.id_embedding.weight * self.id_trained[:, None]
            if self.training and self.config.id_dropout > 0 and self.text_projection is not None:
                keep = torch.rand(table.shape[0], 1, device=table.device) >= self.config.id_dropout
                table = table * keep
        if self.text_projection is not None:
            text = self.text_projection(self.text_embeddings)
            text = text * (torch.arange(text.shape[0], device=text.device) > 0)[:, None]
            table = text if table is None else table + text
        assert table is not None
        return table

    def encode(self, items: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Hidden states ``[B, L, hidden]`` for right-padded item sequences ``[B, L]``.

        Right padding plus a causal mask means a real position only ever
        attends to real, earlier positions; padded positions are never read.
        """
        length = items.shape[1]
        real = items > 0
        positions = torch.arange(length, device=items.device)
        x = table[items] * math.sqrt(self.config.hidden) + self.position_embedding(positions)
        x = self.input_dropout(x) * real.unsqueeze(-1)
        mask = self.causal_mask[:length, :length]
        return self.encoder(x, mask=mask, is_causal=True)

    def last_hidden(self, items: torch.Tensor, lengths: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        hidden = self.encode(items, table)
        return hidden[torch.arange(len(items), device=items.device), lengths - 1]


def right_pad(histories: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``[B, L]`` item codes + 1 (0 pads the right) and each row's length, newest ``max_len`` kept."""
    lengths = np.array([min(len(h), max_len) for h in histories], dtype=np.int64)
    width = max(1, int(lengths.max()) if len(lengths) else 1)
    batch = np.zeros((len(histories), width), dtype=np.int64)
    for row, (history, n) in enumerate(zip(histories, lengths, strict=True)):
        if n:
            batch[row, :n] = np.asarray(history[-n:], dtype=np.int64) + 1
    return batch, np.maximum(lengths, 1)


class SASRec(Recommender):
    """The estimator: ``fit`` / ``score`` around :class:`SASRecNet`.

    ``text_embeddings`` (``[n_items, text_dim]``, row = item code) is required
    for the ``text`` and ``hybrid`` towers.
    """

    def __init__(self, config: SASRecConfig | None = None, text_embeddings: np.ndarray | None = None) -> None:
        self.config = config or SASRecConfig()
        self.text_embeddings = text_embeddings
        self.net: SASRecNet | None = None
        self.type_names: list[str] = []
        self.training_log = None

    @property
    def device(self) -> torch.device:
        if self.config.device:
            return torch.device(self.config.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def build(self, n_items: int, type_names: list[str]) -> SASRecNet:
        """A fresh network for ``n_items`` items (weights seeded by the config)."""
        torch.manual_seed(self.config.seed)
        text = None
        if self.config.item_tower != "id":
            if self.text_embeddings is None or len(self.text_embeddings) != n_items:
                got = None if self.text_embeddings is None else len(self.text_embeddings)
                raise ValueError(f"text_embeddings must have one row per item ({n_items}), got {got}")
            text = torch.as_tensor(self.text_embeddings, dtype=torch.float32)
        self.type_names = list(type_names)
        self.n_items = n_items
        return SASRecNet(self.config, n_items, text, len(type_names)).to(self.device)

    def fit(
        self,
        data: TrainingData,
        *,
        valid: tuple[list[np.ndarray], np.ndarray] | None = None,
        progress: bool = True,
    ) -> SASRec:
        from streamrec.evaluation.offline import evaluate
        from streamrec.training.loop import train_network

        self.net = self.build(data.n_items, data.type_names)
        seen = (
            np.bincount(np.concatenate(data.sequences), minlength=data.n_items) > 0 if data.sequences else []
        )
        self.net.id_trained[1:] = torch.as_tensor(np.asarray(seen, dtype=np.float32), device=self.device)
        validate = None
        if valid is not None:
            histories, targets = valid

            def validate() -> float:
                return evaluate(self, histories, targets, ks=(10,), unfiltered=False)["ndcg@10"]

        self.training_log = train_network(self.net, data, self.config, validate=validate, progress=progress)
        return self

    @torch.no_grad()
    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        if self.net is None:
            raise RuntimeError("SASRec is not fitted: call fit() or load a saved version first")
        self.net.eval()
        table = self.net.item_table()
        items, lengths = right_pad(list(histories), self.config.max_len)
        states = self.net.last_hidden(
            torch.from_numpy(items).to(self.device), torch.from_numpy(lengths).to(self.device), table
        )
        scores = (states @ table[1:].T).float()
        if self.net.text_projection is None:  # an ID-only model cannot rank items it never trained on
            scores[:, self.net.id_trained[1:] == 0] = -torch.inf
        return scores.cpu().numpy()

    def grow(self, n_items: int, text_embeddings: np.ndarray | None = None) -> SASRec:
        """A copy over ``n_items`` items: every existing weight bit-identical, new items appended.

        A new item's ID row starts at zero (hybrid tower: its embedding is then
        its text's projection, so it is recommendable at once) or small random
        (ID tower), and stays masked (``id_trained`` 0) until an update trains
        it. ``text_embeddings`` covers all ``n_items``; known items keep the
        text rows this model was trained with.
        """
        if self.net is None:
            raise RuntimeError("SASRec is not fitted: nothing to grow")
        known = self.n_items
        if n_items < known:
            raise ValueError(f"cannot shrink the item table from {known} to {n_items} items")
        text = None
        if self.config.item_tower != "id":
            if text_embeddings is None or len(text_embeddings) < n_items:
                got = None if text_embeddings is None else len(text_embeddings)
                raise ValueError(f"text_embeddings must cover all {n_items} items, got {got}")
            old_text = self.net.text_embeddings[1:].cpu().numpy()
            text = np.concatenate([old_text, np.asarray(text_embeddings[known:n_items], dtype=np.float32)])
        grown = SASRec(self.config, text)
        grown.net = grown.build(n_items, self.type_names)
        state = grown.net.state_dict()
        for name, tensor in self.net.state_dict().items():
            if state[name].shape == tensor.shape:
                state[name] = tensor.clone()
                continue
            rows = state[name].clone()  # an item-indexed table: known rows, then the new ones
            rows[: known + 1] = tensor
            if name == "id_trained" or (name == "id_embedding.weight" and text is not None):
                rows[known + 1 :] = 0
            state[name] = rows
        grown.net.load_state_dict(state)
        return grown

    def save(self, folder: Path) -> None:
        """Weights as safetensors plus the config as JSON: loading needs nothing else (no pickle)."""
        if self.net is None:
            raise RuntimeError("nothing to save: the model is not fitted")
        folder.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.net.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE))
        meta = {"config": self.config.to_dict(), "n_items": self.n_items, "type_names": self.type_names}
        (folder / NETWORK_FILE).write_text(json.dumps(meta, indent=2))

    @staticmethod
    def load_config(folder: Path, *, device: str | None = None) -> SASRecConfig:
        """A saved model's settings, without reading its weights."""
        return _saved_config(json.loads((folder / NETWORK_FILE).read_text()), device)

    @classmethod
    def load(cls, folder: Path, *, device: str | None = None) -> SASRec:
        meta = json.loads((folder / NETWORK_FILE).read_text())
        config = _saved_config(meta, device)
        state = load_file(str(folder / WEIGHTS_FILE))
        text = state.get("text_embeddings")
        model = cls(config, None if text is None else text[1:].numpy())
        model.net = model.build(meta["n_items"], meta["type_names"])
        model.net.load_state_dict(state)
        model.net.eval()
        return model


def _saved_config(meta: dict, device: str | None) -> SASRecConfig:
    return SASRecConfig(**{**meta["config"], "device": device})
