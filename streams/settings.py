"""One settings class for every visrec process, read once at start-up from ``VISREC_*``.

Nested groups use ``__``: ``VISREC_KAFKA__BOOTSTRAP_SERVERS``, ``VISREC_REDIS__URL``,
``VISREC_EMBED__MAX_BATCH``. ``docs/configuration.md`` is generated from this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

import streams.settings_text as doc
from schemas import EventType, Limits

if TYPE_CHECKING:  # the models import numpy, faiss: not every command needs them
    from models.interest import InterestParams
    from models.ranking import RankParams
    from models.vision.encoder import CudaOptions


class KafkaSettings(BaseModel):
    """Where the broker is and how to authenticate to it."""

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Comma-separated host:port list."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="Kafka listener protocol; SASL_* use the sasl_* settings, SSL* the ssl_* ones.",
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism (SASL_* protocols); unset means PLAIN."
    )
    sasl_username: str | None = Field(default=None, description="SASL user name (SASL_*).")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password (SASL_*).")
    ssl_cafile: Path | None = Field(default=None, description="CA bundle to verify the broker.")
    ssl_certfile: Path | None = Field(
        default=None, description="Client certificate for mutual TLS (with ssl_keyfile)."
    )
    ssl_keyfile: Path | None = Field(default=None, description="Private key of ssl_certfile.")
    session_timeout_s: float = Field(
        default=6.0, description="Consumer group session timeout; low for fast rebalances."
    )
    heartbeat_interval_s: float = Field(
        default=2.0,
        description="Consumer group heartbeat interval; keep below a third of the session timeout.",
    )
    client_id: str = Field(
        default="visrec", description="Kafka client id prefix (broker logs and quotas)."
    )
    request_timeout_s: float = Field(default=30.0, description="Timeout of one Kafka request.")


class RedisSettings(BaseModel):
    """Where Redis is and how to authenticate to it."""

    url: str = Field(default="redis://127.0.0.1:6379/0", description="redis:// or rediss:// URL.")
    username: str | None = Field(default=None, description="ACL user (Redis 6+).")
    password: SecretStr | None = Field(
        default=None, description="Redis password (AUTH; with username for an ACL user)."
    )
    ssl_ca_certs: Path | None = Field(
        default=None, description="CA bundle to verify a rediss:// server."
    )
    namespace: str = Field(default="visrec", description="First segment of every key.")
    socket_timeout_s: float = Field(default=5.0, description="Timeout of one Redis command.")


class TopicSettings(BaseModel):
    """Topic names (``<prefix>.<name>.v1``), partition counts and replication."""

    prefix: str = Field(
        default="visrec", description="First segment of every topic name: <prefix>.events.v1, ..."
    )
    events_partitions: int = Field(
        default=12,
        ge=1,
        description="Partitions of the events topic: the most interest workers that share work.",
    )
    products_partitions: int = Field(
        default=6,
        ge=1,
        description="Partitions of the products topic: the most embed workers that share work.",
    )
    item_vectors_partitions: int = Field(
        default=6,
        ge=1,
        description="Partitions of the item-vectors topic (every interest worker reads all).",
    )
    recommendations_partitions: int = Field(
        default=12, ge=1, description="Partitions of the recommendations topic."
    )
    dead_letter_partitions: int = Field(
        default=3, ge=1, description="Partitions of the dead-letter topic."
    )
    replication_factor: int = Field(
        default=1, ge=1, description="Replicas of each topic created by `visrec topics create`."
    )


class LimitsSettings(BaseModel):
    """Edge limits: anything over them is dead-lettered, not processed."""

    max_id_length: int = Field(
        default=256,
        ge=1,
        description="Longest event_id, user_id or item_id accepted, in characters.",
    )
    max_context_bytes: int = Field(
        default=4096, ge=0, description="Largest UserEvent.context accepted, as UTF-8 JSON."
    )
    max_event_bytes: int = Field(
        default=64 * 1024, ge=256, description="Largest UserEvent message accepted."
    )
    max_product_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="Largest ProductImage message accepted (inline images included).",
    )
    max_dead_letter_payload_bytes: int = Field(
        default=256 * 1024, description="Raw payload kept in a dead letter; longer is truncated."
    )

    def to_limits(self) -> Limits:
        """The ``schemas.Limits`` the edge validators read."""
        return Limits(
            max_id_length=self.max_id_length,
            max_context_bytes=self.max_context_bytes,
            max_event_bytes=self.max_event_bytes,
            max_product_bytes=self.max_product_bytes,
        )


class EmbedSettings(BaseModel):
    """The embed worker: encoder, batching, image guard rails, URI fetching."""

    model: str = Field(default="efficientnet-lite0", description="Built-in encoder to export/use.")
    model_dir: Path | None = Field(
        default=None, description="Folder with model.onnx + model_card.json; overrides `model`."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="Where ONNX Runtime runs the encoder: cuda when available (auto), or forced.",
    )
    max_batch: int = Field(default=32, ge=1, description="Most products embedded in one batch.")
    max_wait_ms: int = Field(
        default=50,
        ge=0,
        description="Longest wait to fill an embed batch before running a smaller one.",
    )
    decode_threads: int = Field(
        default=2, ge=1, description="Threads decoding and resizing images beside the encoder."
    )
    intra_op_threads: int = Field(default=0, ge=0, description="0 = ONNX Runtime's default.")
    max_image_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1, description="Largest image accepted, inline or fetched."
    )
    max_pixels: int = Field(default=40_000_000, ge=1, description="Decompression-bomb guard.")
    min_side: int = Field(default=16, ge=1, description="Smallest image side accepted, in pixels.")
    fetch_timeout_s: float = Field(
        default=5.0, description="Timeout of one image fetch (http(s)://, s3://)."
    )
    file_roots: list[Path] = Field(
        default_factory=list, description="Folders file:// URIs may read from (none = refuse)."
    )
    allow_private_networks: bool = Field(
        default=False, description="Let http(s):// reach loopback/private/link-local addresses."
    )
    vector_dtype: Literal["float32", "float16"] = Field(
        default="float32",
        description="Element type of stored and published vectors (float16 halves the size).",
    )
    gpu_decode: Literal["auto", "off"] = Field(
        default="auto",
        description=(
            "auto: when the encoder runs on CUDA and torchvision can decode there (the `gpu` "
            "extra), JPEGs are decoded by nvJPEG and resized on the GPU; other formats and "
            "JPEGs nvJPEG cannot take still decode on the host. off: always on the host."
        ),
    )
    cuda_prefer_nhwc: bool = Field(
        default=True, description="CUDA provider option prefer_nhwc: NHWC convolution kernels."
    )
    cuda_fp16: bool = Field(
        default=True, description="Run the model card's fp16 graph on CUDA (fp32 when false)."
    )
    cuda_graph_batch: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Capture the encoder as a CUDA graph for batches of exactly this size (smaller "
            "ones are padded, larger ones split; needs torch). Unset: no CUDA graph."
        ),
    )

    def cuda_options(self) -> CudaOptions:
        """How the CUDA execution provider runs the encoder."""
        from models.vision.encoder import CudaOptions

        return CudaOptions(
            prefer_nhwc=self.cuda_prefer_nhwc,
            fp16=self.cuda_fp16,
            graph_batch=self.cuda_graph_batch,
        )


DEFAULT_EVENT_WEIGHTS = {
    EventType.VIEW: 0.25,
    EventType.CLICK: 1.0,
    EventType.ADD_TO_CART: 2.0,
    EventType.PURCHASE: 3.0,
}


class InterestSettings(BaseModel):
    """The interest worker: update rule, state bounds, retrieval and ranking."""

    half_life_long_s: float = Field(
        default=30 * 86400.0, gt=0, description="Half-life of the long-term interest."
    )
    half_life_short_s: float = Field(
        default=1800.0, gt=0, description="Half-life of the session (short-term) interest."
    )
    short_term_weight: float = Field(default=0.5, ge=0, le=1, description=doc.SHORT_WEIGHT)
    event_weights: dict[EventType, float] = Field(
        default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS),
        description=(
            "Weight of each event type in the interest sums, 0 < w <= 1e6 (types not given "
            "keep their default)."
        ),
    )
    seen_max: int = Field(default=200, ge=1, description="Recent items kept per user.")
    applied_max: int = Field(default=1000, ge=10, description="Recent event ids kept per user.")
    top_k: int = Field(default=20, ge=1, le=1000, description="Items per recommendation list.")
    candidates: int = Field(default=100, ge=1, description="Retrieved before filtering/blend.")
    max_batch: int = Field(
        default=500,
        ge=1,
        description=(
            "Most events applied in one batch (and so redelivered after a crash). Batches are "
            "natural: whatever is buffered when the previous batch ends, with no fixed wait."
        ),
    )
    visual_weight: float = Field(default=1.0, description="Weight of visual similarity.")
    co_weight: float = Field(
        default=0.3, description="Weight of co-occurrence (also viewed with) in the blended score."
    )
    co_share_power: float = Field(default=0.0, ge=0, description=doc.CO_SHARE)
    co_sum: bool = Field(default=False, description=doc.CO_SUM)
    co_norm: bool = Field(default=False, description=doc.CO_NORM)
    co_pop_power: float = Field(default=0.0, ge=0, le=1, description=doc.CO_POP)
    popularity_weight: float = Field(default=0.05, description="Weight of popularity.")
    popularity_prior: float = Field(default=0.0, ge=0, description=doc.POP_PRIOR)
    popularity_idle_boost: float = Field(default=0.0, ge=0, description=doc.POP_IDLE)
    popularity_idle_half_life_s: float = Field(
        default=7 * 86400.0, gt=0, description=doc.POP_IDLE_H
    )
    fresh_weight: float = Field(default=0.0, ge=0, description=doc.FRESH)
    fresh_half_life_s: float = Field(default=86400.0, gt=0, description="Freshness half-life.")
    recent_weight: float = Field(default=0.0, ge=0, le=1, description=doc.RECENT)
    recent_items: int = Field(default=3, ge=1, le=50, description="Recent interests per user.")
    mmr_lambda: float | None = Field(default=None, description="0..1 to diversify; None = off.")
    space_dims: int = Field(
        default=256,
        ge=1,
        le=1024,
        description="Dimensions of a fitted retrieval space (an uncentred PCA of the encoder's).",
    )
    space_min_items: int | None = Field(
        default=10_000,
        ge=2,
        description=(
            "Catalogue size at which a compact space is fitted for the active model (8-bit "
            "codes of space_dims); below it items are searched at full dimension. None = never."
        ),
    )
    space_refit_growth: float = Field(
        default=2.0,
        gt=1.0,
        description="Refit the space once the catalogue has grown by this factor since the fit.",
    )
    space_fit_sample: int = Field(
        default=50_000, ge=100, description="Items a space is fitted on (a random sample)."
    )
    ann_threshold: int = Field(
        default=50_000,
        ge=0,
        description="Catalogue size (at fit time) from which a space is searched with an IVF.",
    )
    ann_target_recall: float = Field(
        default=0.98,
        gt=0,
        le=1,
        description="Recall@candidates of the IVF against exact search in the space, calibrated.",
    )
    space_min_recall: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description=(
            "A fitted space is served only if its search keeps this recall@candidates of "
            "exact full-dimension search (measured at fit); else the model stays at full "
            "dimension until the catalogue grows by space_refit_growth. 0 = accept any."
        ),
    )
    co_cache_ms: int = Field(
        default=1000,
        ge=0,
        description=(
            "How long a worker reuses a co-occurrence list or the popularity list it read; "
            "co-occurrence lists this worker just changed are always re-read. 0 = read every "
            "time (lists then depend on nothing but the log)."
        ),
    )
    co_max_neighbours: int = Field(default=50, ge=1, description=doc.CO_NEIGHBOURS)
    co_window_s: float = Field(default=1800.0, gt=0, description="Co-occurrence window.")
    co_max_per_event: int = Field(default=10, ge=1, description="Co-occurrence fan-out cap.")
    half_life_popularity_s: float = Field(default=7 * 86400.0, gt=0, description=doc.HALF_LIFE_POP)
    half_life_co_s: float = Field(default=7 * 86400.0, gt=0, description=doc.HALF_LIFE_CO)
    popular_max: int = Field(default=10_000, ge=1, description="Items kept in the popularity set.")
    stale_after_s: float = Field(default=0.0, ge=0, description=doc.STALE_AFTER)
    stale_active_s: float = Field(default=30 * 86400.0, gt=0, description=doc.STALE_ACTIVE)
    stale_per_batch: int = Field(default=100, ge=1, description=doc.STALE_PER_BATCH)

    def interest_params(self) -> InterestParams:
        """The interest rule's parameters."""
        from models.interest import InterestParams

        return InterestParams(
            half_life_long_s=self.half_life_long_s,
            half_life_short_s=self.half_life_short_s,
            short_term_weight=self.short_term_weight,
            event_weights={str(k): v for k, v in self.event_weights.items()},
            half_life_popularity_s=self.half_life_popularity_s,
            half_life_co_s=self.half_life_co_s,
        )

    def rank_params(self) -> RankParams:
        """The ranking's parameters."""
        import dataclasses

        from models.ranking import RankParams

        return RankParams(**{f.name: getattr(self, f.name) for f in dataclasses.fields(RankParams)})

    @field_validator("event_weights", mode="after")
    @classmethod
    def _weights_are_usable(cls, given: dict[EventType, float]) -> dict[EventType, float]:
        # The rule's own checks (0 < w <= MAX_EVENT_WEIGHT) at load time, naming the variable.
        from models.interest import InterestParams

        weights = DEFAULT_EVENT_WEIGHTS | given
        try:
            InterestParams(1.0, 1.0, 0.0, {str(k): v for k, v in weights.items()})
        except ValueError as exc:
            msg = f"interest.event_weights (VISREC_INTEREST__EVENT_WEIGHTS): {exc}"
            raise ValueError(msg) from None
        return weights

    @model_validator(mode="after")
    def _applied_covers_a_batch(self) -> InterestSettings:
        # Redelivery is caught only while the event id is still in the applied set.
        if self.applied_max < self.max_batch:
            raise ValueError("interest.applied_max must be >= interest.max_batch")
        return self


class Settings(BaseSettings):
    """Every setting of every visrec process. Env prefix ``VISREC_``, nested with ``__``."""

    model_config = SettingsConfigDict(
        env_prefix="VISREC_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    embed: EmbedSettings = Field(default_factory=EmbedSettings)
    interest: InterestSettings = Field(default_factory=InterestSettings)
    state_dir: Path = Field(
        default=Path(".state"), description="Local services' data, logs, model cache."
    )
    app_id: str = Field(default="visrec", description="faust app id = consumer group prefix.")
    log_level: Literal["debug", "info", "warn", "error"] = Field(
        default="warn", description="Log level of every visrec process."
    )
    log_json: bool = Field(default=False, description="Log one JSON object per line.")
    shutdown_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="Seconds a worker may take to finish its batch and commit on SIGTERM.",
    )
    web_bind: str = Field(
        default="127.0.0.1",
        description="Address the web/metrics server binds (0.0.0.0 in containers).",
    )
    web_port: int | None = Field(
        default=None, description="Serve /metrics, /healthz, /readyz on this port; None = off."
    )

    @property
    def model_cache_dir(self) -> Path:
        """Where exported encoders are cached, by weight hash."""
        return self.state_dir / "models"
