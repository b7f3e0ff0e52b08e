"""What the sub-commands share: the home option, JSON output, and the model's options."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, get_args

from streamrec.config import STRATEGIES, LRSchedule, ModelSettings, UpdateSettings, update_settings_with
from streamrec.home import Home
from streamrec.models.sasrec import SASRecConfig

DEFAULT_HOME = Path("./recs")
STORE_VARIABLE = "STREAMREC_STORE"  # the ``store`` setting, as the environment gives it


class CommandError(Exception):
    """A problem the user can fix; printed as ``error: …`` with exit code ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def print_json(payload: object) -> None:
    print(json.dumps(payload, indent=2, default=str))


def the_command() -> str:
    """How this process was started, as results record it."""
    return "streamrec " + " ".join(sys.argv[1:])


class _StoreURL(argparse.Action):
    """``--store URL`` becomes ``STREAMREC_STORE``: every home this process opens reads it, and so do
    the processes it starts (the server's update worker), as the ``store`` setting."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        os.environ[STORE_VARIABLE] = str(values)
        setattr(namespace, self.dest, values)


def home_option(sub: argparse.ArgumentParser, *, store: bool = True) -> None:
    """``--home``, and ``--store`` for commands that open the home's events and items."""
    sub.add_argument(
        "--home", type=Path, default=DEFAULT_HOME, help="streamrec home directory (default ./recs)"
    )
    if store:
        sub.add_argument(
            "--store",
            metavar="URL",
            action=_StoreURL,
            help="where events and items live, e.g. postgresql://user@host:5432/db (default: the home's"
            " `store` setting, else HOME/streamrec.sqlite); the registry stays in --home",
        )


def existing_home(path: Path) -> Home:
    """The home at ``path`` with its settings; an error if there is none yet."""
    if not Path(path).exists():
        raise CommandError(f"no streamrec home at {path} (run `streamrec ingest` first)")
    return Home.open(path)


def model_options(sub: argparse.ArgumentParser) -> None:
    """The SASRec settings, defaulting to :class:`SASRecConfig`'s."""
    defaults = SASRecConfig()
    group = sub.add_argument_group("model")
    group.add_argument("--hidden", type=int, default=defaults.hidden, help="embedding width")
    group.add_argument("--layers", type=int, default=defaults.layers, help="transformer blocks")
    group.add_argument("--heads", type=int, default=defaults.heads, help="attention heads")
    group.add_argument("--max-len", type=int, default=defaults.max_len, help="most recent items read")
    group.add_argument("--dropout", type=float, default=defaults.dropout)
    group.add_argument(
        "--id-dropout", type=float, default=defaults.id_dropout, help="hybrid: chance to hide an ID row"
    )
    group.add_argument("--lr", type=float, default=defaults.lr)
    group.add_argument("--lr-schedule", choices=get_args(LRSchedule), default=defaults.lr_schedule)
    group.add_argument("--batch-size", type=int, default=defaults.batch_size)
    group.add_argument("--epochs", type=int, default=defaults.epochs, help="at most this many epochs")
    group.add_argument("--patience", type=int, default=defaults.patience, help="early-stopping epochs")
    group.add_argument("--max-minutes", type=float, help="wall-clock budget per model; best epoch kept")
    group.add_argument("--seed", type=int, default=defaults.seed)
    group.add_argument("--device", help="cpu, cuda, cuda:1 … (default: CUDA when available)")
    group.add_argument(
        "--nproc",
        type=int,
        default=defaults.processes,
        help="fit on this many processes (DDP: gloo on CPU, one GPU each on CUDA); same global batch",
    )
    group.add_argument("--text-model", default="all-MiniLM-L6-v2", help="sentence-transformers name or path")
    group.add_argument("--item-tower", choices=["hybrid", "id", "text"], default=defaults.item_tower)
    group.add_argument(
        "--text-tuning",
        choices=["frozen", "lora"],
        help="lora: the language model learns too, through LoRA adapters on its attention"
        " (default: the home's [model] text_tuning, else frozen)",
    )
    group.add_argument(
        "--text-tuning-items",
        type=int,
        default=defaults.text_tuning_items,
        help="--text-tuning lora: items a step re-encodes with gradients",
    )
    group.add_argument(
        "--loss",
        choices=["full", "sampled"],
        default=defaults.loss,
        help="full softmax, or sampled softmax with log-Q correction (large catalogues)",
    )
    group.add_argument(
        "--negatives", type=int, default=defaults.negatives, help="--loss sampled: negatives per batch"
    )
    group.add_argument(
        "--type-weight",
        action="append",
        type=_type_weight,
        metavar="TYPE=WEIGHT",
        help="how much an event type's next-item loss counts, e.g. purchase=3 (repeat for more types;"
        " default: the home's [model] type_weights, else 1 each)",
    )
    group.add_argument(
        "--aux-event-type-weight", type=float, help="λ of the head predicting the next event's type"
    )
    group.add_argument("--aux-value-weight", type=float, help="λ of the head predicting an event's value")
    group.add_argument(
        "--dp-epsilon",
        type=float,
        help="a differentially private fit (DP-SGD, opacus) spending this ε per user (default: not private)",
    )
    group.add_argument("--dp-delta", type=float, help="--dp-epsilon: its δ (default: 1 / (10 × users))")
    group.add_argument(
        "--dp-max-grad-norm",
        type=float,
        default=defaults.dp_max_grad_norm,
        help="--dp-epsilon: the bound on each user's gradient",
    )


def _type_weight(text: str) -> tuple[str, float]:
    name, _, weight = text.partition("=")
    try:
        value = float(weight)
    except ValueError:
        value = -1.0
    if not name or value < 0:
        raise argparse.ArgumentTypeError(f"expected TYPE=WEIGHT (weight >= 0), e.g. purchase=3, not {text!r}")
    return name, value


def model_config(args: argparse.Namespace, settings: ModelSettings | None = None) -> SASRecConfig:
    """The model's settings: the command line over ``settings`` (a home's ``[model]``) over the defaults."""
    settings = settings or ModelSettings()
    type_weights = {**settings.type_weights, **dict(args.type_weight or ())}
    aux_type, aux_value = args.aux_event_type_weight, args.aux_value_weight
    return SASRecConfig(
        item_tower=args.item_tower,
        text_model=args.text_model,
        text_tuning=args.text_tuning or settings.text_tuning,
        text_tuning_items=args.text_tuning_items,
        hidden=args.hidden,
        layers=args.layers,
        heads=args.heads,
        max_len=args.max_len,
        dropout=args.dropout,
        id_dropout=args.id_dropout,
        lr=args.lr,
        lr_schedule=args.lr_schedule,
        batch_size=args.batch_size,
        epochs=args.epochs,
        patience=args.patience,
        max_minutes=args.max_minutes,
        seed=args.seed,
        device=args.device,
        processes=args.nproc,
        loss=args.loss,
        negatives=args.negatives,
        dp_epsilon=args.dp_epsilon,
        dp_delta=args.dp_delta,
        dp_max_grad_norm=args.dp_max_grad_norm,
        type_weights=type_weights,
        aux_event_type_weight=settings.aux_event_type_weight if aux_type is None else aux_type,
        aux_value_weight=settings.aux_value_weight if aux_value is None else aux_value,
    )


def update_options(sub: argparse.ArgumentParser) -> None:
    """Overrides of the home's update settings (``[update]`` in streamrec.toml) for one run."""
    group = sub.add_argument_group("update (overrides [update] in streamrec.toml)")
    group.add_argument("--strategy", choices=STRATEGIES)
    group.add_argument("--budget", type=float, help="share of a refit an update may cost, counted (0–1]")
    group.add_argument(
        "--set",
        dest="update_set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other update setting, e.g. --set lr=0.004 --set replay_share=1 (repeatable)",
    )


def update_settings(args: argparse.Namespace, base: UpdateSettings) -> UpdateSettings:
    """``base`` with the command line's overrides, validated like streamrec.toml's."""
    changes: dict[str, Any] = {}
    for pair in args.update_set:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CommandError(f"--set: expected KEY=VALUE, got {pair!r}")
        changes[key.strip()] = None if value.strip().lower() in ("", "none") else value.strip()
    if args.strategy is not None:
        changes["strategy"] = args.strategy
    if args.budget is not None:
        changes["budget"] = args.budget
    return update_settings_with(base, changes)
