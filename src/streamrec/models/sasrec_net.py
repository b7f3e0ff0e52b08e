"""The SASRec network with a text-aware item tower, in one file: config, modules, padding.

A causal transformer reads a user's most recent items and, at every position,
predicts the next one by a dot product with every item's embedding (tied
input/output embeddings). An item's embedding depends on ``item_tower``:

* ``id``: a learned row per item (classic SASRec);
* ``text``: a learned projection of the item's pretrained text embedding;
* ``hybrid``: the sum of both. Items without training history have a zero ID
  row, so they are scored from their text alone.

The estimator around it (fit, partial_fit, score, save) is :mod:`streamrec.models.sasrec`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np
import torch
from torch import nn

ItemTower = Literal["id", "text", "hybrid"]


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
    # The language model: "frozen" reads fixed text vectors; "lora" trains LoRA adapters on it too
    text_tuning: Literal["frozen", "lora"] = "frozen"
    text_model: str = "all-MiniLM-L6-v2"  # the language model the text vectors come from
    text_lora_rank: int = 8
    text_lr_scale: float = 0.1  # the adapters' learning rate as a share of `lr`
    text_tuning_items: int = 16  # items a step re-encodes with gradients (from the batch's targets)
    text_max_tokens: int = 64  # tokens of an item's text the tuned encoder reads
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
    # Differential privacy (training/private.py): DP-SGD spending at most this ε per user; None: not private
    dp_epsilon: float | None = None
    dp_delta: float | None = None  # None: 1 / (10 × users)
    dp_max_grad_norm: float = 1.0  # each user's gradient is clipped to this norm
    seed: int = 0
    device: str | None = None  # None: CUDA when available, else CPU
    # A fit from scratch on this many processes (DDP); the global batch stays batch_size rows.
    processes: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    def with_tower(self, tower: str) -> SASRecConfig:
        """These settings with item tower ``tower``; ``"hybrid+lora"`` also tunes the language model."""
        base, _, tuning = tower.partition("+")
        return replace(self, item_tower=base, text_tuning=tuning or self.text_tuning)


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
        # Attached only while training with text_tuning="lora" (streamrec.models.text_tuner):
        # the rows of `text_embeddings` are then its cached outputs.
        self.text_tuner: nn.Module | None = None
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

    def item_table(self, fresh: torch.Tensor | None = None) -> torch.Tensor:
        """Every item's embedding ``[n_items + 1, hidden]``; row 0 is padding.

        ``fresh`` (item codes + 1, training with a text tuner): these items' text rows are
        re-encoded with gradients into the tuner, and the cached rows follow them.
        """
        table = None
        if self.id_embedding is not None:
            table = self.id_embedding.weight * self.id_trained[:, None]
            if self.training and self.config.id_dropout > 0 and self.text_projection is not None:
                keep = torch.rand(table.shape[0], 1, device=table.device) >= self.config.id_dropout
                table = table * keep
        if self.text_projection is not None:
            text = self.text_embeddings
            if fresh is not None and self.text_tuner is not None and len(fresh):
                vectors = self.text_tuner(fresh - 1)
                text = text.index_put((fresh,), vectors)
                self.text_embeddings[fresh] = vectors.detach()
            text = self.text_projection(text)
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
