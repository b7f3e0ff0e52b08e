"""LoRA adapters (peft) on a sequence network: what the ``adapter`` update strategy trains."""

from __future__ import annotations

from typing import Any

from streamrec.models.sasrec import SASRecNet

# Modules LoRA adapts: attention (peft wraps nn.MultiheadAttention), feed-forward, text projection.
ADAPTER_TARGETS = ["self_attn", "linear1", "linear2", "text_projection"]
LORA_RANK = 8
LORA_ALPHA = 16


def with_lora(net: SASRecNet, rank: int = LORA_RANK, alpha: int = LORA_ALPHA) -> Any:
    """Wrap ``net`` in place with LoRA adapters on the targets it has; only the adapters stay trainable.

    Returns peft's wrapper, whose ``merge_and_unload()`` folds the adapters back into ``net``.
    """
    import peft

    targets = [t for t in ADAPTER_TARGETS if any(name.endswith(t) for name, _ in net.named_modules())]
    lora = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0)
    return peft.get_peft_model(net, lora)
