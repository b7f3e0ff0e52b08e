"""The item text encoder as a trainable part of the recommender: MiniLM with LoRA on its attention.

A frozen encoder gives each item one fixed vector; here the pretrained language
model itself learns from the next-item loss, through low-rank adapters (peft) on
its attention's query and value projections, so only a few thousand weights move.

Encoding every item's text at every step would cost far more than the
recommender's step, so the item tower reads a *cached* table of text vectors:
each training step re-encodes (with gradients) a sample of the batch's target
items, uses the fresh rows in place of the cached ones, and writes them back.
At the end of every epoch :meth:`TextTuner.encode_all` re-encodes the whole
catalogue, so the version that ships (its best epoch) holds one consistent table; serving never runs the
language model for a known item.
"""

from __future__ import annotations

import warnings
from typing import Any

import peft
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from streamrec.text.encoder import resolve_model_path

# BERT-style attention projections the adapters wrap.
LORA_TARGETS = ["query", "value"]


def lora_language_model(model: str, *, rank: int, alpha: int) -> tuple[Any, nn.Module]:
    """The packaged language model's tokenizer, and the model with LoRA adapters on its attention
    (its own weights frozen)."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    path = resolve_model_path(model)
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=LORA_TARGETS, lora_dropout=0.0)
    with warnings.catch_warnings():  # peft asks transformers a deprecated question: not ours to fix
        warnings.simplefilter("ignore", FutureWarning)
        return AutoTokenizer.from_pretrained(path), peft.get_peft_model(
            AutoModel.from_pretrained(path), config
        )


class TextTuner(nn.Module):
    """``forward(codes)``: unit-norm text vectors of those items, differentiable in the LoRA weights.

    Mean pooling over tokens, then L2 normalisation: the same vectors the frozen
    sentence encoder gives while the adapters are zero (up to ``max_tokens`` truncation).
    """

    def __init__(
        self, model: str, texts: list[str], *, rank: int = 8, alpha: int = 16, max_tokens: int = 64
    ) -> None:
        super().__init__()
        self.tokenizer, self.encoder = lora_language_model(model, rank=rank, alpha=alpha)
        self.max_tokens = max_tokens
        self.register_buffer("token_ids", torch.zeros(0, max_tokens, dtype=torch.int32), persistent=False)
        self.register_buffer("token_mask", torch.zeros(0, max_tokens, dtype=torch.int8), persistent=False)
        self.set_texts(texts)

    def set_texts(self, texts: list[str]) -> None:
        """The items this tuner encodes (item code = position); tokens are never saved with a model."""
        device = self.token_ids.device
        if not texts:
            self.token_ids = torch.zeros(0, self.max_tokens, dtype=torch.int32, device=device)
            self.token_mask = torch.zeros(0, self.max_tokens, dtype=torch.int8, device=device)
            return
        tokens = self.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        )
        self.token_ids = tokens["input_ids"].to(device=device, dtype=torch.int32)
        self.token_mask = tokens["attention_mask"].to(device=device, dtype=torch.int8)

    def train(self, mode: bool = True) -> TextTuner:
        """Always evaluation mode (no dropout): the vectors a step trains through must be the ones
        the cached table and the shipped version hold."""
        return super().train(False)

    @property
    def n_items(self) -> int:
        return int(self.token_ids.shape[0])

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """``[len(codes), dim]`` vectors of items ``codes`` (0-based)."""
        mask = self.token_mask[codes].long()
        width = max(int(mask.sum(1).max()), 1)
        mask = mask[:, :width]
        hidden = self.encoder(input_ids=self.token_ids[codes, :width].long(), attention_mask=mask)[0]
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        return F.normalize(pooled, dim=-1)

    @torch.no_grad()
    def encode_all(self, *, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        """Every item's vector ``[n_items, dim]``, texts of similar lengths batched together."""
        order = torch.argsort(self.token_mask.sum(1, dtype=torch.int32), stable=True)
        out = torch.empty(self.n_items, self.encoder.config.hidden_size, device=self.token_ids.device)
        bar = tqdm(total=self.n_items, desc="encode items", unit="item", disable=not progress)
        for start in range(0, self.n_items, batch_size):
            codes = order[start : start + batch_size]
            out[codes] = self(codes)
            bar.update(len(codes))
        bar.close()
        return out

    def lora_state(self) -> dict[str, torch.Tensor]:
        """The adapters' weights only (the base model is the packaged one): what a saved version keeps."""
        return {k: v.detach().cpu().clone() for k, v in self.encoder.state_dict().items() if "lora_" in k}

    def load_lora_state(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.encoder.load_state_dict(state, strict=False)
        lost = [k for k in missing if "lora_" in k]
        if unexpected or lost:
            raise ValueError(
                f"text LoRA weights do not fit the encoder: missing {lost}, unexpected {unexpected}"
            )
