"""Settings of the server: defaults that work, then SENTIMENT_* environment variables, then flags."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Provider(StrEnum):
    """ONNX Runtime execution provider."""

    CPU = "cpu"
    CUDA = "cuda"  # falls back to CPU, with a warning, when CUDA is not available


class Variant(StrEnum):
    """Which graph of the model directory to run."""

    FP32 = "fp32"  # model.onnx
    INT8 = "int8"  # model.int8.onnx, the dynamically quantised variant


class Settings(BaseSettings):
    """Every option is a flag (--max-batch-size) and a variable (SENTIMENT_MAX_BATCH_SIZE)."""

    model_config = SettingsConfigDict(
        env_prefix="SENTIMENT_",
        frozen=True,
        use_attribute_docstrings=True,
        cli_prog_name="python -m service",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        extra="forbid",
    )

    host: str = "0.0.0.0"
    """Address to listen on for gRPC."""
    port: int = Field(50051, ge=0, le=65535)
    """gRPC port; 0 picks a free one (logged)."""
    metrics_host: str = "0.0.0.0"
    """Address of the Prometheus metrics HTTP endpoint."""
    metrics_port: int = Field(9100, ge=-1, le=65535)
    """Prometheus metrics port; 0 picks a free one, -1 turns the endpoint off."""
    model_dir: Path = Path("models/sentiment")
    """Directory of numbered model versions (models/sentiment/1, 2, ...)."""
    model_version: int | None = Field(None, ge=1)
    """Version to serve; the highest in --model-dir when not given."""
    model_name: str = "sentiment"
    """Name callers use for the model."""
    variant: Variant = Variant.FP32
    """fp32 runs model.onnx; int8 runs the quantised model.int8.onnx."""
    provider: Provider = Provider.CPU
    """ONNX Runtime execution provider: cpu, or cuda (with a logged fallback to cpu)."""
    intra_op_threads: int = Field(1, ge=1, le=256)
    """ONNX Runtime threads per batch while batches run side by side."""
    lone_batch_threads: int = Field(0, ge=0, le=256)
    """ONNX Runtime threads for a batch that runs alone; 0: every CPU the process may use."""
    lone_batch_spin: bool = True
    """Let the threads of a batch that runs alone spin-wait between operators instead of sleeping
    (nothing else runs beside such a batch; a lone text is answered about a millisecond sooner)."""
    max_batch_size: int = Field(32, ge=1, le=4096)
    """Most texts in one batch."""
    max_batch_tokens: int = Field(1024, ge=1)
    """Most padded tokens in one batch (longest text x texts): bounds one batch's compute time, and
    so how long any text waits for a running batch (a text of max_length tokens always fits)."""
    max_padding_ratio: float = Field(0.1, gt=0.0, le=1.0)
    """Most of a batch that may be padding; texts of very different lengths go in separate batches."""
    max_queue_delay_ms: float = Field(2.0, ge=0.0, le=10_000.0)
    """Longest the oldest queued text waits for its batch to fill while another batch runs."""
    max_queue_size: int = Field(2048, ge=1)
    """Most texts waiting; beyond it requests fail at once with RESOURCE_EXHAUSTED."""
    workers: int = Field(1, ge=1, le=64)
    """Server processes sharing the gRPC port, each with its own batcher and ONNX Runtime sessions;
    metrics are summed. The kernel balances connections (not calls) among them."""
    reuse_port: bool = False
    """Let other processes listen on the same port (SO_REUSEPORT); the workers of --workers set it."""
    worker_of: int = Field(0, ge=0, le=64)
    """Set by --workers for its workers: how many processes share the port (shown in GetModelInfo)."""
    max_concurrent_batches: int = Field(0, ge=0, le=64)
    """Batches ONNX Runtime may run at the same time, each in its own worker thread; 0: one per CPU
    the process may use (its affinity and cgroup quota), at least 2."""
    max_texts_per_request: int = Field(256, ge=1)
    """Most texts in one request."""
    max_text_chars: int = Field(20_000, ge=1)
    """Most characters in one text."""
    max_message_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    """Largest gRPC message accepted or sent."""
    grace_period_s: float = Field(20.0, ge=0.0)
    """On SIGTERM, how long accepted calls may take to finish before the server exits."""
    drain_delay_s: float = Field(0.0, ge=0.0)
    """On SIGTERM, keep answering this long (within the grace period) while health says NOT_SERVING,
    so that balancers polling health stop sending calls before they would be refused."""
    tls_cert_file: Path | None = None
    """Server certificate (PEM); with --tls-key-file turns TLS on."""
    tls_key_file: Path | None = None
    """Private key of the server certificate (PEM)."""
    tls_client_ca_file: Path | None = None
    """CA (PEM) that client certificates must chain to: turns on mutual TLS."""
    auth_token: SecretStr | None = None
    """When set, every call but health checks needs `authorization: Bearer <token>`."""
    reflection: bool = True
    """Serve gRPC server reflection so tools can discover the API."""
    log_level: str = "INFO"
    """Python logging level."""

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("--tls-cert-file and --tls-key-file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("--tls-client-ca-file needs --tls-cert-file and --tls-key-file")
        if self.max_queue_size < self.max_texts_per_request:
            raise ValueError(
                f"--max-queue-size ({self.max_queue_size}) must hold at least one whole request of "
                f"--max-texts-per-request ({self.max_texts_per_request}) texts"
            )
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
