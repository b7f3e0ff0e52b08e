"""Which category an item belongs to, read from its text and, once it has history, its behaviour.

A softmax regression over two blocks of features: the item's text vector, encoded
*without* its category (so the head learns to read the words, not the label), and
the model's learned ID row for the item (zero for an item nobody has touched). Half
the training rows hide the behaviour block, so one head serves a catalogue item and
a brand-new one alike. The server fills a missing category at ``PUT /items`` with
it; ``report`` says how often it is right on items it did not learn from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

WEIGHTS_FILE = "categories.safetensors"
META_FILE = "categories.json"
MIN_ITEMS_PER_CLASS = 3  # rarer categories are never predicted: too few examples to learn them from


@dataclass
class CategoryHead:
    classes: list[str]
    weight: torch.Tensor  # [text_dim + behaviour_dim, classes]
    bias: torch.Tensor  # [classes]
    text_dim: int
    behaviour_scale: float = 1.0  # ID rows divided by this: about unit length, like the text vectors
    report: dict[str, float | int] = field(default_factory=dict)

    @property
    def behaviour_dim(self) -> int:
        return self.weight.shape[0] - self.text_dim

    @classmethod
    def fit(
        cls,
        text: np.ndarray,
        behaviour: np.ndarray | None,
        labels: list[str],
        *,
        holdout: float = 0.2,
        epochs: int = 300,
        seed: int = 0,
    ) -> CategoryHead | None:
        """Learn from the items with a label (``""``: none); None when fewer than two categories qualify.

        ``text[i]`` is item i's text vector without its category, ``behaviour[i]`` its ID row
        (zeros without history). A held-out share measures the head first (``report``); the
        head returned then learns from every labelled item.
        """
        counts: dict[str, int] = {}
        for label in labels:
            if label:
                counts[label] = counts.get(label, 0) + 1
        classes = sorted(c for c, n in counts.items() if n >= MIN_ITEMS_PER_CLASS)
        if len(classes) < 2:
            return None
        code = {c: i for i, c in enumerate(classes)}
        rows = np.array([i for i, label in enumerate(labels) if label in code], dtype=np.int64)
        y = np.array([code[labels[i]] for i in rows], dtype=np.int64)
        behaviour = np.zeros((len(text), 0), np.float32) if behaviour is None else behaviour
        norms = np.linalg.norm(behaviour, axis=1)
        scale = float(norms[norms > 0].mean()) if (norms > 0).any() else 1.0
        features = np.concatenate([text, behaviour / scale], axis=1).astype(np.float32)[rows]
        has_history = (norms[rows] > 0) if behaviour.shape[1] else np.zeros(len(rows), dtype=bool)

        rng = np.random.default_rng(seed)
        order = rng.permutation(len(rows))
        held = order[: int(len(rows) * holdout)]
        learn = order[int(len(rows) * holdout) :]
        text_dim = text.shape[1]
        trial = cls._train(features[learn], y[learn], len(classes), text_dim, epochs, seed)
        text_only = features[held].copy()
        text_only[:, text_dim:] = 0
        majority = np.bincount(y[learn], minlength=len(classes)).argmax()
        report: dict[str, float | int] = {
            "classes": len(classes),
            "labelled_items": len(rows),
            "held_out": len(held),
            "accuracy_text_only": _accuracy(trial, text_only, y[held]),
            "accuracy_majority_class": round(float(np.mean(y[held] == majority)), 4) if len(held) else 0.0,
        }
        warm = held[has_history[held]]
        if len(warm):
            report["accuracy_with_behaviour"] = _accuracy(trial, features[warm], y[warm])
            report["held_out_with_history"] = len(warm)
        weight, bias = cls._train(features, y, len(classes), text_dim, epochs, seed)
        return cls(classes, weight, bias, text_dim, scale, report)

    @staticmethod
    def _train(
        x: np.ndarray, y: np.ndarray, n_classes: int, text_dim: int, epochs: int, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-batch softmax regression; each epoch hides half the rows' behaviour block."""
        generator = torch.Generator().manual_seed(seed)
        inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
        weight = torch.zeros(x.shape[1], n_classes, requires_grad=True)
        bias = torch.zeros(n_classes, requires_grad=True)
        optimizer = torch.optim.Adam([weight, bias], lr=0.05, weight_decay=1e-5)
        for _ in range(epochs):
            hide = torch.rand(len(inputs), 1, generator=generator) < 0.5
            mask = torch.ones_like(inputs)
            mask[:, text_dim:] = (~hide).float()
            loss = F.cross_entropy((inputs * mask) @ weight + bias, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return weight.detach(), bias.detach()

    def predict(self, text: np.ndarray, behaviour: np.ndarray | None = None) -> list[tuple[str, float]]:
        """The most likely category of each item and its probability."""
        x = torch.zeros(len(text), self.weight.shape[0])
        x[:, : self.text_dim] = torch.as_tensor(text, dtype=torch.float32)
        if behaviour is not None and self.behaviour_dim:
            x[:, self.text_dim :] = torch.as_tensor(behaviour, dtype=torch.float32) / self.behaviour_scale
        probabilities = torch.softmax(x @ self.weight + self.bias, dim=1)
        best = probabilities.max(dim=1)
        return [(self.classes[int(i)], float(p)) for p, i in zip(best.values, best.indices, strict=True)]

    def save(self, folder: Path) -> None:
        save_file(
            {"weight": self.weight.contiguous(), "bias": self.bias.contiguous()}, str(folder / WEIGHTS_FILE)
        )
        meta = {
            "classes": self.classes,
            "text_dim": self.text_dim,
            "behaviour_scale": self.behaviour_scale,
            "report": self.report,
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: Path) -> CategoryHead | None:
        """The head saved with a version, or None for a version without one."""
        if not (folder / META_FILE).exists():
            return None
        meta = json.loads((folder / META_FILE).read_text())
        state = load_file(str(folder / WEIGHTS_FILE))
        return cls(
            meta["classes"],
            state["weight"],
            state["bias"],
            meta["text_dim"],
            meta["behaviour_scale"],
            meta["report"],
        )


def _accuracy(trained: tuple[torch.Tensor, torch.Tensor], x: np.ndarray, y: np.ndarray) -> float:
    if not len(y):
        return 0.0
    weight, bias = trained
    predicted = (torch.from_numpy(x) @ weight + bias).argmax(dim=1).numpy()
    return round(float(np.mean(predicted == y)), 4)
