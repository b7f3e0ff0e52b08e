"""After retrieval: spread a list out, and say why each item is in it.

**Diversity** is maximal marginal relevance (Carbonell & Goldstein, 1998): items are
picked one at a time, each the candidate with the best ``(1 - λ) · relevance - λ ·
(its highest cosine to an item already picked)``, relevance being the candidates' scores
scaled to [0, 1]. λ = 0 keeps the ranking; larger λ trades relevance for variety.

**Explanations** name, for each recommended item, the items of the user's history closest
to it (cosine of the model's item vectors): the history items that make it a neighbour.
"""

from __future__ import annotations

import numpy as np

CANDIDATES_PER_ITEM = 5  # a diversified top-k is picked from the top 5·k by score
EXPLAINING_ITEMS = 3  # history items named per recommended item


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def candidates_for(k: int, diversity: float) -> int:
    """How many of the best-scored items a top-``k`` at this ``diversity`` is picked from."""
    return k if diversity <= 0 else CANDIDATES_PER_ITEM * k


def mmr(scores: np.ndarray, vectors: np.ndarray, k: int, diversity: float) -> np.ndarray:
    """Positions (into the candidates ``scores`` / ``vectors``) of the ``k`` picked, in pick order."""
    n = len(scores)
    if diversity <= 0 or n <= 1:
        return np.argsort(-scores, kind="stable")[:k]
    spread = float(scores.max() - scores.min())
    relevance = (scores - scores.min()) / spread if spread > 0 else np.ones(n)
    unit = unit_rows(vectors.astype(np.float32))
    similarity = unit @ unit.T
    first = int(np.argmax(relevance))
    picked = [first]
    closest = similarity[first].copy()  # each candidate's highest cosine to the picked ones
    available = np.ones(n, dtype=bool)
    available[first] = False
    while len(picked) < min(k, n):
        gain = (1 - diversity) * relevance - diversity * closest
        gain[~available] = -np.inf
        best = int(np.argmax(gain))
        picked.append(best)
        available[best] = False
        np.maximum(closest, similarity[best], out=closest)
    return np.array(picked)


def because(
    recommended: np.ndarray, history: np.ndarray, top: int = EXPLAINING_ITEMS
) -> list[list[tuple[int, float]]]:
    """For each recommended vector, ``(position in history, cosine)`` of its ``top`` closest
    history vectors, closest first (each history item once)."""
    if not len(history):
        return [[] for _ in recommended]
    similarity = unit_rows(recommended.astype(np.float32)) @ unit_rows(history.astype(np.float32)).T
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :top]
    return [[(int(j), float(row[j])) for j in picks] for row, picks in zip(similarity, order, strict=True)]


def intra_list_diversity(vectors: np.ndarray) -> float:
    """1 - the mean cosine between the list's items, over every pair (0: all alike)."""
    n = len(vectors)
    if n < 2:
        return 0.0
    unit = unit_rows(vectors.astype(np.float32))
    similarity = unit @ unit.T
    return float(1 - (similarity.sum() - np.trace(similarity)) / (n * (n - 1)))
