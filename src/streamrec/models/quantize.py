"""Int8 dynamic quantisation of a trained SASRec, for cheaper CPU serving.

Dynamic quantisation stores a layer's weights as int8 and quantises its input
activations on the fly, per call; no calibration data is needed, which suits a
model that is retrained and hot-swapped often. It only speeds up CPU inference
(the int8 kernels are FBGEMM/oneDNN on x86, QNNPACK on ARM), so CUDA models are refused.

What gets quantised (and what cannot be, in eager mode):

* each transformer block's feed-forward pair (``linear1``, ``linear2``);
* the text tower's projection (``text_projection``), unless ``text_projection=False``;
* the auxiliary heads (``event_type_head``, ``value_head``), which ``score`` never calls.

Attention stays float32: ``nn.MultiheadAttention`` hands its raw ``in_proj_weight`` and
``out_proj.weight`` tensors to the fused attention function, so its projections cannot be
swapped for quantised modules (that is why PyTorch types ``out_proj`` as
``NonDynamicallyQuantizableLinear``). Embeddings, LayerNorms and the final
``hidden @ table.T`` product stay float32 too: for a large catalogue that product, not the
transformer, dominates a request, and :mod:`streamrec.serving.retrieval` is the tool for it.

API status: in torch 2.13 ``torch.ao.quantization.quantize_dynamic`` is marked deprecated in
favour of ``torchao``'s ``quantize_``, and creating ``torch.qint8`` tensors warns that those dtypes
will be removed (pytorch/pytorch#184982); both still work. The two warnings are silenced here so
serving logs stay clean; the call is isolated in :func:`quantize_dynamic_int8`, so moving to
``torchao`` (a new dependency) or to plain ``torch.int8`` weights later stays local.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from streamrec.models.base import TrainingData
from streamrec.models.sasrec import SASRec

__all__ = ["QuantizedSASRec", "quantize_dynamic_int8", "quantized_layer_names"]


class QuantizedSASRec(SASRec):
    """A SASRec whose network holds int8 dynamically quantised layers: score-only.

    Packed int8 weights cannot go to safetensors and cannot be trained, so ``save`` and
    ``fit`` refuse; save the float model and quantise again after loading it.
    """

    quantized_layers: tuple[str, ...] = ()

    def fit(self, data: TrainingData, **kwargs: object) -> SASRec:  # type: ignore[override]
        raise RuntimeError("a quantised SASRec cannot be trained: fit the float model, then quantise it")

    def save(self, folder: Path) -> None:
        raise RuntimeError("a quantised SASRec is not saved: save the float model and quantise after loading")


def _disable_transformer_fast_path(net: nn.Module) -> None:
    """Route quantised encoder layers through their Python forward.

    ``TransformerEncoderLayer``'s fused inference path reads ``linear1.weight`` etc. as plain
    tensors, which a quantised Linear does not have (its ``weight`` is a method). The layer
    skips that path whenever a forward hook is attached, so a no-op pre-hook keeps it off
    per layer, without touching the process-wide ``torch.backends.mha`` switch. (With an odd
    head count, the default of one head included, the fused path is never taken anyway.)
    """
    for module in net.modules():
        if isinstance(module, nn.TransformerEncoderLayer):
            module.register_forward_pre_hook(lambda _module, _args: None)


def quantized_layer_names(net: nn.Module) -> list[str]:
    """Names of the submodules that are int8 dynamically quantised Linear layers."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    return [name for name, module in net.named_modules() if isinstance(module, DynamicQuantizedLinear)]


def quantize_dynamic_int8(model: SASRec, *, text_projection: bool = True) -> QuantizedSASRec:
    """A CPU copy of ``model`` with int8 dynamically quantised Linear layers; ``model`` is untouched.

    ``text_projection=False`` keeps the text tower's projection in float32: worth it where the
    item table is computed once and cached (the serving runtime), since quantising it then saves
    nothing per request but still perturbs every item's embedding.
    """
    net = model.net
    if net is None:
        raise RuntimeError("SASRec is not fitted: nothing to quantise")
    devices = {p.device.type for p in net.parameters()} | {b.device.type for b in net.buffers()}
    if devices != {"cpu"}:
        raise ValueError(
            f"int8 dynamic quantisation runs on CPU only, but the model is on {sorted(devices)}: "
            "load it with SASRec.load(folder, device='cpu')"
        )
    targets = {
        name
        for name, module in net.named_modules()
        if type(module) is nn.Linear and (text_projection or name != "text_projection")
    }
    float_net = copy.deepcopy(net).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor", category=UserWarning)
        qnet = torch.ao.quantization.quantize_dynamic(float_net, targets, dtype=torch.qint8, inplace=True)
    _disable_transformer_fast_path(qnet)
    quantized = QuantizedSASRec(replace(model.config, device="cpu"), model.text_embeddings)
    quantized.net = qnet
    quantized.n_items = model.n_items
    quantized.type_names = list(model.type_names)
    quantized.quantized_layers = tuple(quantized_layer_names(qnet))
    return quantized
