"""An optional second stage: a cross-encoder re-scores the recommender's top candidates.

The recommender ranks the whole catalogue from one vector per item. A cross-encoder
reads the user's recent item texts and one candidate's text *together*, so the words of
one attend to the words of the other (in the spirit of fine-tuning BERT as a
recommender). That costs one language-model pass per candidate, so it re-scores only
the top :data:`CANDIDATES`.

It starts from the packaged MiniLM weights, with LoRA adapters (peft) on its attention
and a new scoring head whose output is *added* to the recommender's logit. The head
starts at zero, so an untrained reranker ranks exactly as the recommender does and
training (softmax over the candidates, the true next item among them) learns a
correction. It learns from events its version did not train on, where the
recommender's candidates look as they will when serving; a fifth of them is kept aside,
and the reranker is used only if it ranks those better than the recommender alone.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from streamrec.models.base import Scorer
from streamrec.models.text_tuner import lora_language_model

CANDIDATES = 20  # the recommender's top items a request re-scores
HISTORY_ITEMS = 5  # the user's newest items the cross-encoder reads, newest first
MAX_TOKENS = 64  # candidate text + history texts, truncated together
BATCH = 4  # histories per training step (each with CANDIDATES pairs)
CHECK_SHARE = 0.2  # of the examples, kept aside to decide whether the reranker is used
MAX_CHECK = 300
MIN_EXAMPLES = 10
WEIGHTS_FILE = "reranker.safetensors"
META_FILE = "reranker.json"


class CrossEncoder(nn.Module):
    """``forward(candidates, histories)``: one score per (candidate text, history text) pair."""

    def __init__(self, model: str, *, rank: int = 8, alpha: int = 16, max_tokens: int = MAX_TOKENS) -> None:
        super().__init__()
        self.tokenizer, self.encoder = lora_language_model(model, rank=rank, alpha=alpha)
        self.max_tokens = max_tokens
        self.head = nn.Linear(self.encoder.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, candidates: list[str], histories: list[str]) -> torch.Tensor:
        device = self.head.weight.device
        tokens = self.tokenizer(
            candidates,
            histories,
            truncation="longest_first",
            max_length=self.max_tokens,
            padding=True,
            return_tensors="pt",
        ).to(device)
        hidden = self.encoder(**tokens)[0]
        mask = tokens["attention_mask"][..., None].to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)
        return self.head(pooled).squeeze(-1)

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The adapters and the head (the base model is the packaged one): what a version keeps."""
        state = {k: v for k, v in self.encoder.state_dict().items() if "lora_" in k}
        state.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return {k: v.detach().cpu().contiguous() for k, v in state.items()}

    def load_trained_state(self, state: dict[str, torch.Tensor]) -> None:
        head = {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
        self.head.load_state_dict(head)
        missing, unexpected = self.encoder.load_state_dict(
            {k: v for k, v in state.items() if not k.startswith("head.")}, strict=False
        )
        lost = [k for k in missing if "lora_" in k]
        if unexpected or lost:
            raise ValueError(
                f"reranker weights do not fit the encoder: missing {lost}, unexpected {unexpected}"
            )


def history_text(texts: Sequence[str]) -> str:
    """What the cross-encoder reads of a history (oldest first): its newest items, newest first."""
    return " | ".join(reversed(list(texts)[-HISTORY_ITEMS:]))


def _ndcg_at_10(ranks: list[int]) -> float:
    """Mean NDCG@10 of a single relevant item at each 0-based rank (-1: not among the candidates)."""
    return float(np.mean([1 / math.log2(r + 2) if 0 <= r < 10 else 0.0 for r in ranks])) if ranks else 0.0


def top_candidates(scores: np.ndarray, history: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` best-scored item codes not in ``history``, best first."""
    scores = scores.copy()
    scores[history] = -np.inf
    n = min(n, int(np.isfinite(scores).sum()))
    best = np.argpartition(-scores, n - 1)[:n] if n > 0 else np.zeros(0, dtype=np.int64)
    return best[np.argsort(-scores[best], kind="stable")]


class LMReranker:
    """A trained (or fresh) cross-encoder and what its check found; see the module docstring."""

    def __init__(self, text_model: str, *, report: dict[str, Any] | None = None) -> None:
        self.text_model = text_model
        self.net = CrossEncoder(text_model).eval()
        self.report: dict[str, Any] = report or {}

    @property
    def enabled(self) -> bool:
        """Whether it ranked its held-aside examples better than the recommender alone."""
        return bool(self.report.get("enabled"))

    @torch.no_grad()
    def rescore(
        self, base: np.ndarray, history_texts: Sequence[str], candidate_texts: Sequence[str]
    ) -> np.ndarray:
        """The candidates' scores: the recommender's ``base`` plus the cross-encoder's correction."""
        if not len(candidate_texts):
            return np.asarray(base, dtype=np.float32)
        history = history_text(history_texts)
        corrections = self.net(list(candidate_texts), [history] * len(candidate_texts))
        return np.asarray(base, dtype=np.float32) + corrections.float().cpu().numpy()

    def fit(
        self,
        model: Scorer,
        histories: Sequence[np.ndarray],
        targets: np.ndarray,
        item_texts: Sequence[str],
        *,
        minutes: float,
        lr: float = 3e-4,
        seed: int = 0,
        progress: bool = False,
    ) -> LMReranker:
        """Learn from ``targets`` (item codes) after ``histories`` (codes), within ``minutes``.

        The examples are shuffled and a fifth (at most :data:`MAX_CHECK`) kept aside; training
        stops after one pass or at the time limit. ``report`` says what the check found.
        """
        started = time.perf_counter()
        order = np.random.default_rng(seed).permutation(len(targets))
        n_check = min(MAX_CHECK, int(len(order) * CHECK_SHARE))
        check, learn = order[:n_check], order[n_check:]
        if len(order) < MIN_EXAMPLES:
            self.report = {
                "enabled": False,
                "examples": len(order),
                "reason": f"fewer than {MIN_EXAMPLES} examples",
                "minutes": minutes,
                "text_model": self.text_model,
            }
            return self
        trainable = [p for p in self.net.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
        deadline = time.monotonic() + minutes * 60
        self.net.train()
        learned, losses = 0, []
        bar = tqdm(total=len(learn), desc="train reranker", unit="example", disable=not progress)
        for start in range(0, len(learn), BATCH):
            if time.monotonic() > deadline:
                break
            chosen = learn[start : start + BATCH]
            base, candidates, labels = self._examples(model, [histories[i] for i in chosen], targets[chosen])
            pairs = [item_texts[c] for row in candidates for c in row]
            contexts = [
                history_text([item_texts[c] for c in histories[i]])
                for i, row in zip(chosen, candidates, strict=True)
                for _ in row
            ]
            corrections = self.net(pairs, contexts).view(len(chosen), -1)
            loss = F.cross_entropy(torch.as_tensor(base) + corrections, torch.as_tensor(labels))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            learned += len(chosen)
            bar.update(len(chosen))
        bar.close()
        self.net.eval()
        without, with_reranker = self.check(model, [histories[i] for i in check], targets[check], item_texts)
        self.report = {
            "enabled": with_reranker > without,
            "examples": len(order),
            "learned": learned,
            "check_examples": len(check),
            "check_ndcg@10_without": round(without, 5),
            "check_ndcg@10_with": round(with_reranker, 5),
            "first_loss": round(losses[0], 4) if losses else None,
            "last_loss": round(float(np.mean(losses[-10:])), 4) if losses else None,
            "seconds": round(time.perf_counter() - started, 1),
            "candidates": CANDIDATES,
            "minutes": minutes,
            "text_model": self.text_model,
        }
        return self

    def check(
        self, model: Scorer, histories: Sequence[np.ndarray], targets: np.ndarray, item_texts: Sequence[str]
    ) -> tuple[float, float]:
        """NDCG@10 of ``targets`` after ``histories``: the recommender alone, and reranked."""
        alone, reranked = [], []
        scores = model.score(histories) if len(histories) else np.zeros((0, model.n_items))
        for row, history, target in zip(scores, histories, targets, strict=True):
            candidates = top_candidates(row, history, CANDIDATES)
            rescored = self.rescore(
                row[candidates], [item_texts[c] for c in history], [item_texts[c] for c in candidates]
            )
            hit = np.flatnonzero(candidates == target)
            alone.append(int(hit[0]) if len(hit) else -1)
            reranked.append(int(np.sum(rescored > rescored[hit[0]])) if len(hit) else -1)
        return _ndcg_at_10(alone), _ndcg_at_10(reranked)

    @staticmethod
    def _examples(
        model: Scorer, histories: list[np.ndarray], targets: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each history's candidates and their scores, the target always among them (in place of the
        last when the recommender missed it), and the target's position."""
        scores = model.score(histories)
        rows, labels = [], []
        for row, history, target in zip(scores, histories, targets, strict=True):
            candidates = top_candidates(row, history, CANDIDATES)
            hit = np.flatnonzero(candidates == target)
            if not len(hit):
                candidates[-1] = target
                hit = [len(candidates) - 1]
            rows.append(candidates)
            labels.append(int(hit[0]))
        width = min(len(r) for r in rows)
        candidates = np.stack([r[:width] for r in rows])
        labels = np.minimum(np.array(labels), width - 1)
        base = np.take_along_axis(scores, candidates, axis=1).astype(np.float32)
        return base, candidates, labels

    def save(self, folder: Path) -> None:
        save_file(self.net.trained_state(), str(folder / WEIGHTS_FILE))
        meta = {"text_model": self.text_model, "report": self.report}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: Path) -> LMReranker | None:
        """The reranker saved with a version, or None for a version without one."""
        if not (folder / META_FILE).exists():
            return None
        meta = json.loads((folder / META_FILE).read_text())
        reranker = cls(meta["text_model"], report=meta["report"])
        reranker.net.load_trained_state(load_file(str(folder / WEIGHTS_FILE)))
        return reranker


@dataclass
class Reranked:
    """``model``'s scores with each history's top candidates re-scored by ``reranker`` (offline
    evaluation): the candidates rank above every other item, those keep their order."""

    model: Scorer
    reranker: LMReranker
    item_texts: Sequence[str]

    @property
    def n_items(self) -> int:
        return self.model.n_items

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        scores = np.asarray(self.model.score(histories), dtype=np.float32)
        for row, history in zip(scores, histories, strict=True):
            candidates = top_candidates(row, history, CANDIDATES)
            rescored = self.reranker.rescore(
                row[candidates],
                [self.item_texts[c] for c in history],
                [self.item_texts[c] for c in candidates],
            )
            others = np.ones(len(row), dtype=bool)
            others[candidates] = False
            finite = others & np.isfinite(row)
            if finite.any() and len(rescored):
                row[finite] -= max(0.0, float(row[finite].max() - rescored.min())) + 1e-3
            row[candidates] = rescored
        return scores
