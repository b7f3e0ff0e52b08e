"""Pretrained text encoders and the cache of item text embeddings."""

from streamrec.text.cache import EmbeddingCache
from streamrec.text.encoder import DEFAULT_TEXT_MODEL, TextEncoder

__all__ = ["DEFAULT_TEXT_MODEL", "EmbeddingCache", "TextEncoder"]
