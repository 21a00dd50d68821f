"""Settings of the server: defaults that work, then SENTIMENT_* environment variables, then flags."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.versions.policy import VersionPolicy


class Provider(StrEnum):
    """ONNX Runtime execution provider."""

    CPU = "cpu"
    CUDA = "cuda"  # falls back to CPU, with a warning, when CUDA is not available


class Variant(StrEnum):
    """Which graph of the model directory to run."""

    AUTO = "auto"  # int8 where the build measured it within half a point of fp32, else fp32
    FP32 = "fp32"  # model.onnx
    INT8 = "int8"  # model.int8.onnx, the dynamically quantised variant


class LongTexts(StrEnum):
    TRUNCATE = "truncate"  # read the first max_length tokens; the answer says truncated
    WINDOWS = "windows"  # read whole, in overlapping windows (service/core/windows.py)


class ModelControl(StrEnum):
    """How the loaded versions change while the server runs."""

    NONE = "none"  # chosen at start, by --versions
    POLL = "poll"  # the server follows --model-dir every --poll-interval-s
    EXPLICIT = "explicit"  # the repository API (RepositoryModelLoad / RepositoryModelUnload)


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"  # one JSON object per line (python-json-logger), every field its own key


class Settings(BaseSettings):
    """Every option is a flag (--max-batch-size) and a variable (SENTIMENT_MAX_BATCH_SIZE)."""

    model_config = SettingsConfigDict(
        env_prefix="SENTIMENT_",
        frozen=True,
        use_attribute_docstrings=True,
        cli_prog_name="python -m service",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_exit_on_error=False,  # __main__ reports a bad flag on one line
        extra="forbid",
    )

    host: str = "0.0.0.0"
    """Address to listen on for gRPC."""
    port: int = Field(50051, ge=0, le=65535)
    """gRPC port; 0 picks a free one (logged)."""
    http_port: int = Field(8080, ge=-1, le=65535)
    """HTTP port (KServe v2 over HTTP, /v1/predict, the playground page at /) on --host, beside gRPC;
    0 picks a free one (logged), -1 turns HTTP off."""
    http_read_timeout_s: float = Field(30.0, gt=0.0)
    """An HTTP request body (or, for a stream, each next line) must arrive within this long, else 408;
    the request line and headers must arrive within --handshake-timeout-s."""
    http_keepalive_timeout_s: int = Field(30, ge=1)
    """An HTTP/1.1 connection with no request for this long is closed, a new one that never sends a
    byte included; at --max-connections the longest idle one is closed to make room for a new one."""
    http_allowed_hosts: str = ""
    """Host names (comma-separated; * for any) under which a browser may load and unload models
    through the repository endpoints, besides this machine's IP addresses and localhost: a name
    that is not listed may be an attacker's, pointed at this server (DNS rebinding)."""
    metrics_host: str = "0.0.0.0"
    """Address of the Prometheus metrics HTTP endpoint."""
    metrics_port: int = Field(9100, ge=-1, le=65535)
    """Prometheus metrics port; 0 picks a free one, -1 turns the endpoint off."""
    metrics_auth: bool = False
    """Ask scrapers for the same bearer token as gRPC callers (--auth-token); without it the
    endpoint is open to whoever reaches --metrics-host."""
    model_dir: Path = Path("models/sentiment")
    """Directory of numbered model versions (models/sentiment/1, 2, ...)."""
    model_version: int | None = Field(None, ge=1)
    """Version to serve, alone: the same as --versions with that one version."""
    versions: str = "latest:1"
    """Versions of --model-dir to load: latest:N (the N highest), all, or a list such as 3,5. The
    highest loaded answers calls that name no version; a call may name any loaded one."""
    model_control: ModelControl = ModelControl.NONE
    """none: versions are chosen at start; poll: the server follows --model-dir, loading each new
    complete version the policy wants and unloading those it no longer wants; explicit: the
    repository API (RepositoryModelLoad, RepositoryModelUnload) loads and unloads."""
    poll_interval_s: float = Field(5.0, gt=0, le=3600)
    """With --model-control poll: how often --model-dir is read."""
    shadow_share: float = Field(0.1, ge=0.0, le=1.0)
    """Share of the default version's calls that a shadow version (loaded through the repository API
    with shadow=true) also answers, off the callers' path, for its agreement metrics."""
    model_name: str = "sentiment"
    """Name callers use for the model."""
    variant: Variant = Variant.AUTO
    """fp32 runs model.onnx; int8 runs the quantised model.int8.onnx (about three times faster on a
    CPU); auto runs int8 on a CPU where the build measured it within half a point of fp32's accuracy
    on every kind of text (config.json, quantized.accuracy), and fp32 otherwise."""
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
    """Most texts waiting; beyond it requests fail at once with RESOURCE_EXHAUSTED. Low-priority
    requests may fill half of it."""
    long_texts: LongTexts = LongTexts.TRUNCATE
    """A text longer than the model reads at once (max_length tokens): cut (its end unread, the answer
    says truncated) or read whole in overlapping windows whose logits are averaged; a request may
    ask for either."""
    priority_aging_s: float = Field(2.0, gt=0.0, le=3600.0)
    """A waiting text's priority rises one step (low to normal to high) each time this passes without
    a round for its priority, so that a flood of more urgent requests never starves the others."""
    cache_entries: int = Field(4096, ge=0, le=10_000_000)
    """Answers each model version keeps, so that a text asked again (same attention, full attention
    aside, at most 2000 characters) is answered without running the model, and identical texts in
    one request or one round run once; 0 turns both off."""
    workers: int = Field(1, ge=1, le=64)
    """Server processes sharing the gRPC port, each with its own batcher and ONNX Runtime sessions;
    metrics are summed. The kernel balances connections (not calls) among them."""
    reuse_port: bool = False
    """Let other processes listen on the same port (SO_REUSEPORT); the workers of --workers set it."""
    worker_of: int = Field(0, ge=0, le=64)
    """Set by --workers for its workers: how many processes share the port (shown in GetModelInfo)."""
    parent_pid: int = Field(0, ge=0)
    """Set by --workers for its workers: the group's parent; a worker drains and exits as soon as
    that process dies, however it dies, so no orphan keeps serving the port."""
    max_concurrent_batches: int = Field(0, ge=0, le=64)
    """Batches ONNX Runtime may run at the same time, each in its own worker thread; 0: one per CPU
    the process may use (its affinity and cgroup quota), at least 2."""
    max_texts_per_request: int = Field(256, ge=1)
    """Most texts in one request. An HTTP JSON body may hold at most 8 values per text, plus 4096,
    counted before it is parsed."""
    max_text_chars: int = Field(20_000, ge=1)
    """Most characters in one text."""
    max_explained_words: int = Field(512, ge=1)
    """Most words one request may ask to have explained (their contributions to the answer): each
    costs about two model passes of half its text, queued as the request's texts (a request whose
    passes the queue could never hold is refused as too large)."""
    max_message_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    """Largest gRPC message accepted or sent."""
    max_connections: int = Field(1000, ge=1)
    """Most client connections held at once; the transport closes any beyond it as soon as it is
    accepted (a balancer in front needs only a few long-lived ones)."""
    max_streams_per_connection: int = Field(256, ge=1)
    """Most calls in flight on one connection (HTTP/2 concurrent streams); a client queues more
    until one ends."""
    handshake_timeout_s: float = Field(10.0, gt=0.0)
    """A connection that has not finished its TLS and HTTP/2 handshake by then is closed, so that
    half-open connections hold nothing for long."""
    idle_timeout_s: float = Field(300.0, gt=0.0)
    """A connection with no call for this long is closed (GOAWAY); its client reconnects when it
    calls again."""
    keepalive_time_s: float = Field(60.0, gt=0.0)
    """How long a connection may stay silent before the server pings it (HTTP/2 keepalive)."""
    keepalive_timeout_s: float = Field(20.0, gt=0.0)
    """How long the server waits for the answer to its ping before it closes the connection: a peer
    that vanished frees its calls."""
    max_metadata_bytes: int = Field(16 * 1024, ge=1024)
    """Largest total of a call's metadata (headers); a call with more is refused by the transport."""
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
    log_format: LogFormat = LogFormat.TEXT
    """text, or json: one JSON object per log line, for log collectors."""
    access_log_sample: float = Field(0.0, ge=0.0, le=1.0)
    """Share of calls that get an access log line (method, code, peer, time, texts, tokens, queue and
    compute time, model version) on the service.ops.access logger; 0 turns it off, 1 logs every call."""
    access_log_texts: bool = False
    """Put the texts themselves in access log lines (off: a log never holds what callers wrote)."""

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.auth_token is not None and not self.auth_token.get_secret_value().strip():
            raise ValueError(
                "--auth-token (SENTIMENT_AUTH_TOKEN) is empty or only whitespace, as an unset secret "
                "would be: give the token, or leave the setting out to serve without one"
            )
        if self.metrics_auth and self.auth_token is None:
            raise ValueError("--metrics-auth asks scrapers for the --auth-token, which is not set: set both")
        ports = {"--port": self.port, "--metrics-port": self.metrics_port, "--http-port": self.http_port}
        taken: dict[int, str] = {}
        for flag, number in ports.items():
            if number > 0 and number in taken:
                raise ValueError(f"{taken[number]} and {flag} are both {number}: give them different ports")
            taken[number] = flag
        if self.drain_delay_s > self.grace_period_s:
            raise ValueError(
                f"--drain-delay-s ({self.drain_delay_s:g}) is longer than --grace-period-s "
                f"({self.grace_period_s:g}), which bounds the whole drain: shorten the delay or lengthen "
                "the grace period"
            )
        if self.workers > 1 and (self.worker_of or self.parent_pid):
            raise ValueError("--worker-of and --parent-pid are set by --workers for its workers; not with it")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("--tls-cert-file and --tls-key-file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("--tls-client-ca-file needs --tls-cert-file and --tls-key-file")
        try:
            VersionPolicy.parse(self.versions)
        except ValueError as err:
            raise ValueError(f"--versions {self.versions!r}: {err}") from None
        if self.model_control is ModelControl.EXPLICIT and self.workers > 1:
            raise ValueError(
                "--model-control explicit with --workers: a load or unload call reaches one worker of "
                "the group only; use --model-control poll, which every worker follows by itself"
            )
        if self.model_version is not None and "versions" in self.model_fields_set:
            raise ValueError("--model-version and --versions both choose versions: give one")
        if self.max_queue_size < self.max_texts_per_request:
            raise ValueError(
                f"--max-queue-size ({self.max_queue_size}) must hold at least one whole request of "
                f"--max-texts-per-request ({self.max_texts_per_request}) texts"
            )
        return self

    def version_policy(self) -> VersionPolicy:
        if self.model_version is not None:
            return VersionPolicy("specific", listed=(self.model_version,))
        return VersionPolicy.parse(self.versions)

    def metrics_token(self) -> str | None:
        """The token scrapers must send, or None when the metrics endpoint is open."""
        if not self.metrics_auth or self.auth_token is None:
            return None
        return self.auth_token.get_secret_value()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
