"""A home's settings, typed once: read from ``HOME/streamrec.toml`` and ``STREAMREC_*`` variables.

Every field has a default; ``streamrec.toml`` overrides them and environment
variables override both (``STREAMREC_SYNCHRONOUS=NORMAL``; nested fields with a
double underscore: ``STREAMREC_UPDATE__STRATEGY=finetune``). A wrong type or an
unknown key is an error naming it.

>>> Settings().event_types[:2]
('view', 'click')
>>> Settings(update={"strategy": "finetune"}).update.budget
0.2
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streamrec.events import DEFAULT_EVENT_TYPES, EventSchema
from streamrec.pseudonyms import MIN_KEY_CHARS, Pseudonymiser, as_stored

SETTINGS_FILE = "streamrec.toml"

Strategy = Literal["finetune", "replay", "replay-distill", "adapter", "full"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
LRSchedule = Literal["constant", "cosine"]


class UpdateSettings(BaseModel):
    """How an incremental update learns, when it runs, and how it is judged before it goes live.

    Strategies (each starts from the live model grown to every known item):
    ``finetune`` learns the new events only; ``replay`` also replays a share of
    past users' whole sequences; ``replay-distill`` adds a KL term towards the
    live model; ``adapter`` trains LoRA adapters and new items' rows only;
    ``full`` refits from scratch.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    strategy: Strategy = "replay"
    # Passes over the new events and replayed sequences; the budget usually ends an update first.
    epochs: int = Field(20, ge=1)
    lr: float = Field(2e-3, gt=0)
    # cosine: decay to 0 by the update's last step (the budget's, if that comes first).
    lr_schedule: LRSchedule = "cosine"
    batch_size: int | None = Field(None, ge=1)  # user rows per step; unset: the model's
    # New items' ID rows start from zero and must catch up within one update: they learn faster.
    new_item_lr_scale: float = Field(8.0, gt=0)
    # Past users an update replays: this share of them, or exactly ``replay_users`` when set.
    replay_share: float = Field(1 / 3, gt=0, le=1)
    replay_users: int | None = Field(None, ge=0)
    distill_weight: float = Field(0.5, ge=0)
    distill_temperature: float = Field(1.0, gt=0)
    lora_rank: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    full_epochs: int = Field(30, ge=1)  # a refit (strategy full, or drift): at most this many epochs
    # An update may cost at most this share of a refit, counted in positions processed and targets
    # learned (deterministic, no clock); a refit counts the epochs the last fit ran. None: no cap.
    budget: float | None = Field(0.2, gt=0, le=1)
    seed: int = 0
    # A fit from scratch (train, drift refit) picks lr and batch_size for the updates after it, by
    # updating a model fitted without the newest ``tune_share`` of events on them (fields set here
    # are kept as set); skipped when fewer than ``tune_min_examples`` events would judge candidates.
    tune: bool = True
    tune_share: float = Field(0.2, gt=0, lt=1)
    tune_min_examples: int = Field(100, ge=1)

    # When the worker updates: after this many new events, or this long after the last attempt.
    every_events: int = Field(10_000, ge=1)
    every_seconds: float = Field(3600.0, gt=0)
    min_events: int = Field(50, ge=1)  # fewer new events than this: nothing worth an update yet
    # The guardrail: the newest events an update does not train on, to judge it against the live model.
    holdout_fraction: float = Field(0.1, gt=0, lt=1)
    holdout_max_events: int = Field(5000, ge=1)
    guardrail_epsilon: float = Field(0.002, ge=0)  # promote unless NDCG@10 is worse by more than this
    # Drift: the live model's NDCG@10 on the holdout below (1 - drift_threshold) × its trailing mean
    # turns the update into a refit.
    drift_threshold: float = Field(0.2, gt=0, lt=1)
    drift_window: int = Field(5, ge=1)
    drift_min_examples: int = Field(200, ge=1)


class ServerSettings(BaseModel):
    """What the HTTP API accepts, and from whom (keys come from the environment, never this file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A request body larger than this is refused with 413 while it is read, before any parsing.
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_events_per_request: int = Field(100_000, ge=1)  # records in one POST /events
    # Writes (POST /events, PUT /items) need the write or admin key unless this is true.
    open_writes: bool = False
    # Requests per client (its API key, else its address), in the limits library's notation,
    # e.g. "100/second" or "1000/minute;20/second"; unset: no limit.
    rate_limit: str | None = None
    # Most GET /recommend requests scored in one forward pass (serving/batching.py); 1: each alone.
    # On the 2-core CPU box batching lost: 924 recommend/s at 64 against 1,682 at 1 (docs/scale.md).
    micro_batch: int = Field(1, ge=1)
    # Record what each answer showed (serving/impressions.py); off, answers still get a request_id.
    record_impressions: bool = True
    # /dashboard's data without the admin key (the page itself holds none).
    open_dashboard: bool = False
    # /dashboard shows the newest plots (*.png) of this folder: where `streamrec bench` writes them
    # by default; relative to the server's working directory.
    plots_dir: Path = Path("results")

    @field_validator("rate_limit")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        if value is not None:
            from limits import parse_many

            try:
                parse_many(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a rate such as '100/second' or '1000/minute'") from None
        return value


class OnlineSettings(BaseModel):
    """How shown answers are judged online (evaluation/online.py): which event types count."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    click_types: tuple[str, ...] = ("click",)
    conversion_types: tuple[str, ...] = ("purchase",)
    # An event counts for an answer shown at most this many seconds before it.
    window_seconds: float = Field(3600.0, gt=0)


class ModelSettings(BaseModel):
    """What the model learns most from (multi-task). ``streamrec train`` reads these; the version it
    makes keeps them, and its updates and drift refits learn with the same weights.

    ``type_weights``: how much the next-item loss of an event of each type counts (types not
    listed: 1.0), e.g. ``{purchase = 3.0, view = 0.5}`` to favour what people buy. The two
    λ weigh auxiliary heads trained beside the next-item loss: predicting the next event's
    type, and its value (a rating, a price). ``text_tuning = "lora"``: the language model
    that reads item texts learns too (LoRA adapters on its attention), in fits and updates.
    ``rerank = "lm"``: a cross-encoder re-scores the model's top candidates (models/reranker.py),
    trained for ``rerank_minutes`` with every fit and update.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    text_tuning: Literal["frozen", "lora"] = "frozen"
    rerank: Literal["none", "lm"] = "none"
    rerank_minutes: float = Field(5.0, gt=0)

    type_weights: dict[str, Annotated[float, Field(ge=0)]] = {}
    aux_event_type_weight: float = Field(0.0, ge=0)
    aux_value_weight: float = Field(0.0, ge=0)


class PrivacySettings(BaseModel):
    """What the home keeps about users, for how long, and how forgetting reaches the models
    (privacy.py, pseudonyms.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The worker refits without forgotten users once the oldest pending forget is this old (forgets
    # close together share one refit); `streamrec unlearn` does it at once.
    unlearn_after_seconds: float = Field(3600.0, ge=0)
    # Events (and impressions) older than this many days leave the store: the worker purges once
    # every `purge_every_seconds`, `streamrec purge` at once. Unset: kept until their user is forgotten.
    retention_days: float | None = Field(None, gt=0)
    purge_every_seconds: float = Field(86_400.0, gt=0)
    # The context keys an event keeps (request_id, the answer it responds to, always stays); others
    # are dropped as the event is validated. Unset: every key.
    context_fields: tuple[str, ...] | None = None
    # Store a keyed hash of each user id instead of the id (pseudonyms.py); choose it before the
    # first event. The key: at least 16 characters, best from STREAMREC_PRIVACY__PSEUDONYM_KEY.
    pseudonymise_users: bool = False
    pseudonym_key: SecretStr | None = None

    @model_validator(mode="after")
    def _key_when_pseudonymising(self) -> PrivacySettings:
        if self.pseudonymise_users:
            if self.pseudonym_key is None:
                raise ValueError(
                    "pseudonym_key: required when pseudonymise_users is true"
                    " (set STREAMREC_PRIVACY__PSEUDONYM_KEY)"
                )
            if len(self.pseudonym_key.get_secret_value()) < MIN_KEY_CHARS:
                raise ValueError(f"pseudonym_key: must be at least {MIN_KEY_CHARS} characters")
        return self

    def user_key(self) -> Callable[[str], str]:
        """What a user id is stored (and looked up) as: its pseudonym, or itself."""
        if not self.pseudonymise_users or self.pseudonym_key is None:
            return as_stored
        return Pseudonymiser(self.pseudonym_key.get_secret_value())


class Settings(BaseSettings):
    """Deployment settings of one home."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMREC_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    # Event types accepted besides the defaults (e.g. ["wishlist", "share"]).
    extra_event_types: tuple[str, ...] = ()
    # Where events and items live: a URL such as postgresql://user@host:5432/db; unset: the home's
    # streamrec.sqlite. The registry and the text cache stay in the home folder either way.
    store: str | None = None
    # SQLite durability: FULL syncs every committed batch to disk before acknowledging it.
    synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "FULL"
    ingest_batch_size: int = Field(20_000, ge=1)  # events per committed batch when ingesting files
    model: ModelSettings = ModelSettings()
    update: UpdateSettings = UpdateSettings()
    server: ServerSettings = ServerSettings()
    online: OnlineSettings = OnlineSettings()
    privacy: PrivacySettings = PrivacySettings()
    keep_versions: int = Field(10, ge=1)  # registry retention; live and its rollback target always stay
    worker_poll_seconds: float = Field(2.0, gt=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment variables win over what the file gives (passed in as init values)."""
        return env_settings, init_settings

    @model_validator(mode="after")
    def _weights_name_known_types(self) -> Settings:
        unknown = sorted(set(self.model.type_weights) - set(self.event_types))
        if unknown:
            raise ValueError(
                f"model.type_weights: unknown event type {', '.join(map(repr, unknown))}"
                f" (known: {', '.join(self.event_types)}; add others to extra_event_types)"
            )
        return self

    @property
    def event_types(self) -> tuple[str, ...]:
        return DEFAULT_EVENT_TYPES + tuple(t for t in self.extra_event_types if t not in DEFAULT_EVENT_TYPES)

    def event_schema(self, *, allow_unknown_fields: bool = False) -> EventSchema:
        return EventSchema(
            self.event_types,
            allow_unknown_fields,
            user_key=self.privacy.user_key(),
            context_fields=self.privacy.context_fields,
        )


def problems(error: ValidationError) -> str:
    """Each invalid field and what is wrong with it, on one line."""

    def one(problem: Any) -> str:
        where = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")  # a validator's own message
        return f"{where}: {message}" if where else message

    return "; ".join(one(problem) for problem in error.errors())


def settings_from(values: dict[str, Any], source: str = "settings") -> Settings:
    """``Settings`` from ``values`` (and the environment); a bad value is a ValueError naming its key."""
    try:
        return Settings(**values)
    except ValidationError as error:
        raise ValueError(f"{source}: {problems(error)}") from None


def update_settings_with(base: UpdateSettings, changes: dict[str, Any]) -> UpdateSettings:
    """``base`` with ``changes`` applied, validated as streamrec.toml's ``[update]`` is."""
    try:
        return UpdateSettings.model_validate({**base.model_dump(exclude_unset=True), **changes})
    except ValidationError as error:
        raise ValueError(f"update settings: {problems(error)}") from None


def load_settings(home: str | Path) -> Settings:
    """``HOME/streamrec.toml`` (if present) over the defaults, environment variables over both."""
    path = Path(home) / SETTINGS_FILE
    if not path.exists():
        return settings_from({})
    with path.open("rb") as handle:
        try:
            raw = tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path}: not valid TOML ({error})") from None
    return settings_from(raw, str(path))
