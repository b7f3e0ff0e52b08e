"""The SASRec estimator: ``fit``, ``partial_fit``, ``score``, ``grow``, ``save`` around its network.

The network itself (config, modules) is :mod:`streamrec.models.sasrec_net`;
how it trains (the loop, the update strategies) is :mod:`streamrec.training`.
Saved models are safetensors weights plus a JSON config: loading needs nothing
else (no pickle).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from streamrec.config import UpdateSettings
from streamrec.evaluation.offline import evaluate
from streamrec.models.base import Recommender, TrainingData
from streamrec.models.sasrec_net import ItemTower, SASRecConfig, SASRecNet, right_pad
from streamrec.training.loop import TrainingLog, train_network
from streamrec.training.strategies import IncrementStats, learn_increment, refit_cost

__all__ = ["ItemTower", "SASRec", "SASRecConfig", "SASRecNet", "right_pad"]

WEIGHTS_FILE = "model.safetensors"
TEXT_LORA_PREFIX = "text_lora."  # the text encoder's adapters, saved beside the network's weights
POSITIONS_PER_PASS = 1 << 16  # history positions one scoring pass of the transformer reads
NETWORK_FILE = "network.json"


class SASRec(Recommender):
    """The estimator around :class:`SASRecNet`: ``fit`` from scratch, ``partial_fit`` new events.

    ``text_embeddings`` (``[n_items, text_dim]``, row = item code) is required
    for the ``text`` and ``hybrid`` towers. With ``config.text_tuning="lora"`` the
    language model ``config.text_model`` learns too: ``fit`` and ``partial_fit`` then need
    ``item_texts`` (row = item code), and ``text_lora`` holds its adapters' weights.
    """

    def __init__(
        self,
        config: SASRecConfig | None = None,
        text_embeddings: np.ndarray | None = None,
        item_texts: Sequence[str] | None = None,
    ) -> None:
        self.config = config or SASRecConfig()
        self.text_embeddings = text_embeddings
        self.item_texts = item_texts
        self.text_lora: dict[str, torch.Tensor] = {}
        # (the adapters it was built with, the tuned encoder): tuned_text builds it once per adapters
        self._tuned_encoder: tuple[dict[str, torch.Tensor], nn.Module] | None = None
        self.net: SASRecNet | None = None
        self.type_names: list[str] = []
        self.training_log: TrainingLog | None = None
        # Epochs the last fit from scratch ran: a refit's work, which an update's budget is a share of.
        self.fit_epochs = self.config.epochs
        self.last_update: IncrementStats | None = None

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
        """Learn from scratch on all of ``data``; ``valid`` (histories, targets) picks the best epoch.

        With ``config.processes`` > 1 the fit runs data-parallel on that many processes
        (:mod:`streamrec.training.distributed`), taking the same steps as one process would.
        With ``config.dp_epsilon`` it is differentially private (:mod:`streamrec.training.private`):
        ``valid`` then picks nothing (that would be a choice made on users' data).
        """
        if self.config.processes < 1:
            raise ValueError(f"processes must be at least 1, got {self.config.processes}")
        if self.config.dp_epsilon is not None:
            from streamrec.training.private import check_private

            check_private(self.config)
        tuning = self._check_text_tuning()
        if tuning and self.config.processes > 1:
            raise ValueError("text_tuning='lora' trains on one process: set processes to 1")
        self.text_lora = {}  # from scratch: the language model starts as shipped
        self.net = self.build_for(data)
        if tuning:
            self._attach_text_tuner(self.net)
        if self.config.dp_epsilon is not None:
            from streamrec.training.private import train_private  # opacus only here

            self.training_log = train_private(self.net, data, self.config, progress=progress)
        elif self.config.processes > 1:
            from streamrec.training.distributed import train_distributed  # torch.distributed only here

            self.training_log = train_distributed(self, data, valid, progress=progress)
        else:
            self.training_log = train_network(
                self.net, data, self.config, validate=self.validation(valid), progress=progress
            )
        self.fit_epochs = max(self.training_log.epochs, 1)
        if tuning:
            self._detach_text_tuner(self.net)
        return self

    def _check_text_tuning(self) -> bool:
        """Whether the language model trains too; a clear error where it cannot."""
        if self.config.text_tuning == "frozen":
            return False
        if self.config.text_tuning != "lora":
            raise ValueError(f"text_tuning must be 'frozen' or 'lora', got {self.config.text_tuning!r}")
        if self.config.item_tower == "id":
            raise ValueError("text_tuning='lora' needs a text or hybrid item tower, not item_tower='id'")
        return True

    def _attach_text_tuner(self, net: SASRecNet) -> None:
        """Give ``net`` the trainable language model (with this model's adapters so far)."""
        if self.item_texts is None or len(self.item_texts) < net.n_items:
            got = None if self.item_texts is None else len(self.item_texts)
            raise ValueError(f"text_tuning='lora' needs every item's text: {net.n_items} items, got {got}")
        net.text_tuner = self._text_tuner(self.item_texts[: net.n_items])

    def _text_tuner(self, texts: Sequence[str]) -> nn.Module:
        """The language model with this model's adapters (none yet: as shipped), over ``texts``."""
        from streamrec.models.text_tuner import TextTuner  # transformers loads only when tuning

        tuner = TextTuner(
            self.config.text_model,
            list(texts),
            rank=self.config.text_lora_rank,
            alpha=2 * self.config.text_lora_rank,
            max_tokens=self.config.text_max_tokens,
        )
        if self.text_lora:
            tuner.load_lora_state(self.text_lora)
        return tuner.to(self.device)

    @property
    def text_tuned(self) -> bool:
        """Whether the text vectors come from a tuned language model (its adapters are kept)."""
        return bool(self.text_lora)

    def tuned_text(self, texts: Sequence[str]) -> np.ndarray:
        """``texts`` encoded by this model's tuned language model: the vectors its table holds.

        A new item's text row must come from here, not from the shipped encoder: the model
        was trained on the tuned vectors, and the shipped encoder's sit elsewhere.
        """
        if not self.text_tuned:
            raise ValueError("this model's language model was not tuned: use the shipped encoder")
        if self._tuned_encoder is None or self._tuned_encoder[0] is not self.text_lora:
            self._tuned_encoder = (self.text_lora, self._text_tuner([]))
        tuner = self._tuned_encoder[1]
        tuner.set_texts(list(texts))
        return tuner.encode_all().cpu().numpy()

    def _detach_text_tuner(self, net: SASRecNet) -> None:
        """Keep the tuned language model's adapters and drop the model.

        The training loop re-encoded every item at the end of each epoch, and the best epoch's
        table came back with its adapters: the version holds one consistent text table, and
        serving never runs the language model for a known item.
        """
        tuner = net.text_tuner
        assert tuner is not None
        self.text_lora = tuner.lora_state()
        net.text_tuner = None

    def build_for(self, data: TrainingData) -> SASRecNet:
        """A fresh network for ``data``'s items, ID rows marked trained where ``data`` has events."""
        net = self.build(data.n_items, data.type_names)
        seen = (
            np.bincount(np.concatenate(data.sequences), minlength=data.n_items) > 0 if data.sequences else []
        )
        net.id_trained[1:] = torch.as_tensor(np.asarray(seen, dtype=np.float32), device=self.device)
        return net

    def validation(self, valid: tuple[list[np.ndarray], np.ndarray] | None) -> Callable[[], float] | None:
        """NDCG@10 on ``valid`` (histories, targets) of the network as it is when called."""
        if valid is None:
            return None
        histories, targets = valid

        def validate() -> float:
            return evaluate(self, histories, targets, ks=(10,), unfiltered=False)["ndcg@10"]

        return validate

    def partial_fit(
        self,
        data: TrainingData,
        settings: UpdateSettings | None = None,
        *,
        text_embeddings: np.ndarray | None = None,
        item_texts: Sequence[str] | None = None,
        progress: bool = False,
    ) -> SASRec:
        """Learn the events ``data.learn`` marks with the update strategy, in place.

        Grows the model first when ``data`` knows more items (``text_embeddings``
        then covers every item; a new item starts from its text). A text-tuned model
        moves its language model's adapters too (all but ``adapter`` updates), reading
        ``item_texts`` (every item's text; default: the texts it was fitted with). The strategy
        ``full`` refits on all of ``data`` for ``settings.full_epochs``. What the
        update (or refit) did lands in ``last_update``.
        """
        if self.net is None:
            raise RuntimeError("partial_fit needs a fitted model: call fit() or load a saved version first")
        settings = settings or UpdateSettings()
        if item_texts is not None:
            self.item_texts = item_texts
        if settings.strategy == "full":
            if self.config.item_tower != "id":
                text = self.text_embeddings if text_embeddings is None else text_embeddings
                self.text_embeddings = None if text is None else text[: data.n_items]
            self.config = replace(self.config, epochs=settings.full_epochs, seed=settings.seed)
            self.fit(replace(data, learn=None), progress=progress)
            assert self.training_log is not None
            log = self.training_log
            self.last_update = IncrementStats(  # a refit learns every event and changes every weight
                trained_users=sum(1 for s in data.sequences if len(s) >= 2),
                learned_events=sum(max(len(s) - 1, 0) for s in data.sequences),
                trainable_fraction=1.0,
                changed_fraction=1.0,
                epochs=log.epochs,
                steps=log.steps,
                work=refit_cost(data, self.config, log.epochs).work,
            )
            return self
        if data.n_items > self.n_items:
            grown = self.grow(data.n_items, text_embeddings)
            self.net, self.n_items, self.text_embeddings = grown.net, grown.n_items, grown.text_embeddings
        assert self.net is not None
        tuning = self._check_text_tuning() and settings.strategy != "adapter"
        if tuning:
            self._attach_text_tuner(self.net)
        refit = refit_cost(data, self.config, self.fit_epochs) if settings.budget is not None else None
        self.net, self.last_update = learn_increment(
            self.net, data, settings, self.config, refit=refit, progress=progress
        )
        if tuning:
            self._detach_text_tuner(self.net)
        return self

    @property
    def uses_text(self) -> bool:
        """Whether the model scores items from their text (``text`` / ``hybrid`` towers)."""
        return self.net is not None and self.net.text_projection is not None

    @property
    def text_dim(self) -> int:
        """Width of the text embeddings the item tower reads (0 for an ID-only model)."""
        net = self._fitted()
        return 0 if net.text_projection is None else net.text_projection.in_features

    def _fitted(self) -> SASRecNet:
        if self.net is None:
            raise RuntimeError("SASRec is not fitted: call fit() or load a saved version first")
        return self.net

    @torch.no_grad()
    def item_table(self) -> torch.Tensor:
        """Every item's embedding ``[n_items + 1, hidden]`` as scoring reads it; row 0 is padding."""
        net = self._fitted().eval()
        return net.item_table().detach()

    @torch.no_grad()
    def items_from_text(self, text: np.ndarray, codes: Sequence[int | None]) -> torch.Tensor:
        """Scoring rows for items given by their text embeddings (``[len(codes), hidden]``).

        ``codes[j]`` is item ``j``'s code when the model knows it (its trained ID row is
        added, as the item tower does), else None: a new item is scored from its text alone.
        """
        net = self._fitted()
        if net.text_projection is None:
            raise ValueError("an ID-only model cannot embed items from their text")
        device = net.text_projection.weight.device
        rows = net.text_projection(torch.as_tensor(text, dtype=torch.float32, device=device))
        trained = [(j, c) for j, c in enumerate(codes) if c is not None and c < net.n_items]
        if net.id_embedding is not None and trained:
            where = torch.tensor([j for j, _ in trained], device=device)
            ids = torch.tensor([c + 1 for _, c in trained], device=device)
            rows[where] += net.id_embedding.weight[ids] * net.id_trained[ids, None]
        return rows

    @torch.no_grad()
    def user_states(self, histories: Sequence[np.ndarray], table: torch.Tensor | None = None) -> torch.Tensor:
        """The hidden state ``[len(histories), hidden]`` after each history (item codes).

        ``table``: the item table to read the histories through (default: the model's own).
        """
        net = self._fitted().eval()
        table = net.item_table() if table is None else table
        items, lengths = right_pad(list(histories), self.config.max_len)
        device = table.device
        # Bounded passes: 1,024 histories of 200 items at once held 160 MB of attention weights.
        rows = max(1, POSITIONS_PER_PASS // items.shape[1])
        return torch.cat(
            [
                net.last_hidden(
                    torch.from_numpy(items[start : start + rows]).to(device),
                    torch.from_numpy(lengths[start : start + rows]).to(device),
                    table,
                )
                for start in range(0, max(len(items), 1), rows)
            ]
        )

    @torch.no_grad()
    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        net = self._fitted().eval()
        table = net.item_table()
        scores = (self.user_states(histories, table) @ table[1:].T).float().cpu().numpy()
        scores[:, self.unscorable()] = -np.inf
        return scores

    def unscorable(self) -> np.ndarray:
        """Item codes the model cannot rank: an ID-only model's items no training has reached
        (their table row is zero). A text or hybrid model scores every item from its text."""
        net = self._fitted()
        if net.text_projection is not None:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(net.id_trained[1:].cpu().numpy() == 0)

    def id_rows(self, codes: np.ndarray | None = None) -> np.ndarray | None:
        """Items' trained ID rows ``[len(codes), hidden]`` (zeros where untrained; default: every
        item); None for a model without an ID tower."""
        net = self._fitted()
        if net.id_embedding is None:
            return None
        rows = (
            torch.arange(1, net.n_items + 1)
            if codes is None
            else torch.as_tensor(codes, dtype=torch.long) + 1
        )
        rows = rows.to(net.id_embedding.weight.device)
        with torch.no_grad():
            return (net.id_embedding.weight[rows] * net.id_trained[rows, None]).float().cpu().numpy()

    def learned_rows(self) -> np.ndarray:
        """Item codes whose table row holds a trained ID embedding (empty for a text-only tower).

        In a hybrid model these rows stand apart from the text-only ones in the table."""
        net = self._fitted()
        if net.id_embedding is None:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(net.id_trained[1:].cpu().numpy() > 0)

    def grow(self, n_items: int, text_embeddings: np.ndarray | None = None) -> SASRec:
        """A copy over ``n_items`` items: every existing weight bit-identical, new items appended.

        A new item's ID row starts at zero (hybrid tower: its embedding is then
        its text's projection, so it is recommendable at once) or small random
        (ID tower), and stays masked (``id_trained`` 0) until an update trains
        it. ``text_embeddings`` covers all ``n_items``; known items keep the
        text rows this model was trained with. A text-tuned model encodes the new
        items' texts (``item_texts``) with its tuned language model instead.
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
            new_text = np.asarray(text_embeddings[known:n_items], dtype=np.float32)
            if self.text_tuned and n_items > known:
                if self.item_texts is None or len(self.item_texts) < n_items:
                    raise ValueError(f"a text-tuned model grows from its items' texts: {n_items} needed")
                new_text = self.tuned_text(self.item_texts[known:n_items])
            text = np.concatenate([old_text, new_text])
        grown = SASRec(self.config, text, self.item_texts)
        grown.text_lora = self.text_lora
        grown.fit_epochs = self.fit_epochs
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
        state.update(
            {TEXT_LORA_PREFIX + name: tensor.contiguous() for name, tensor in self.text_lora.items()}
        )
        save_file(state, str(folder / WEIGHTS_FILE))
        meta = {
            "config": self.config.to_dict(),
            "n_items": self.n_items,
            "type_names": self.type_names,
            "fit_epochs": self.fit_epochs,
        }
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
        lora = {
            k[len(TEXT_LORA_PREFIX) :]: state.pop(k) for k in list(state) if k.startswith(TEXT_LORA_PREFIX)
        }
        text = state.get("text_embeddings")
        model = cls(config, None if text is None else text[1:].numpy())
        model.text_lora = lora
        model.net = model.build(meta["n_items"], meta["type_names"])
        model.net.load_state_dict(state)
        model.fit_epochs = meta.get("fit_epochs", config.epochs)
        model.net.eval()
        return model


def _saved_config(meta: dict, device: str | None) -> SASRecConfig:
    return SASRecConfig(**{**meta["config"], "device": device})
