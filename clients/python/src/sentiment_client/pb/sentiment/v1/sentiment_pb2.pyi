from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AttentionMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTENTION_MODE_UNSPECIFIED: _ClassVar[AttentionMode]
    ATTENTION_MODE_NONE: _ClassVar[AttentionMode]
    ATTENTION_MODE_SUMMARY: _ClassVar[AttentionMode]
    ATTENTION_MODE_FULL: _ClassVar[AttentionMode]

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_HIGH: _ClassVar[Priority]
    PRIORITY_NORMAL: _ClassVar[Priority]
    PRIORITY_LOW: _ClassVar[Priority]

class LongTexts(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LONG_TEXTS_UNSPECIFIED: _ClassVar[LongTexts]
    LONG_TEXTS_TRUNCATE: _ClassVar[LongTexts]
    LONG_TEXTS_WINDOWS: _ClassVar[LongTexts]

class ExplainMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPLAIN_MODE_UNSPECIFIED: _ClassVar[ExplainMode]
    EXPLAIN_MODE_NONE: _ClassVar[ExplainMode]
    EXPLAIN_MODE_SHAPLEY: _ClassVar[ExplainMode]
    EXPLAIN_MODE_OCCLUSION: _ClassVar[ExplainMode]
ATTENTION_MODE_UNSPECIFIED: AttentionMode
ATTENTION_MODE_NONE: AttentionMode
ATTENTION_MODE_SUMMARY: AttentionMode
ATTENTION_MODE_FULL: AttentionMode
PRIORITY_UNSPECIFIED: Priority
PRIORITY_HIGH: Priority
PRIORITY_NORMAL: Priority
PRIORITY_LOW: Priority
LONG_TEXTS_UNSPECIFIED: LongTexts
LONG_TEXTS_TRUNCATE: LongTexts
LONG_TEXTS_WINDOWS: LongTexts
EXPLAIN_MODE_UNSPECIFIED: ExplainMode
EXPLAIN_MODE_NONE: ExplainMode
EXPLAIN_MODE_SHAPLEY: ExplainMode
EXPLAIN_MODE_OCCLUSION: ExplainMode

class PredictRequest(_message.Message):
    __slots__ = ("texts", "attention", "model_version", "priority", "long_texts", "explain")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    LONG_TEXTS_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    attention: AttentionMode
    model_version: int
    priority: Priority
    long_texts: LongTexts
    explain: ExplainMode
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., attention: _Optional[_Union[AttentionMode, str]] = ..., model_version: _Optional[int] = ..., priority: _Optional[_Union[Priority, str]] = ..., long_texts: _Optional[_Union[LongTexts, str]] = ..., explain: _Optional[_Union[ExplainMode, str]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("predictions", "model_name", "model_version")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    model_name: str
    model_version: int
    def __init__(self, predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[int] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("label", "score", "probabilities", "truncated", "num_tokens", "batch", "attention", "windows", "explanation")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    truncated: bool
    num_tokens: int
    batch: BatchStats
    attention: Attention
    windows: int
    explanation: Explanation
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ..., probabilities: _Optional[_Iterable[float]] = ..., truncated: _Optional[bool] = ..., num_tokens: _Optional[int] = ..., batch: _Optional[_Union[BatchStats, _Mapping]] = ..., attention: _Optional[_Union[Attention, _Mapping]] = ..., windows: _Optional[int] = ..., explanation: _Optional[_Union[Explanation, _Mapping]] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("method", "label", "words", "baseline", "passes")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    PASSES_FIELD_NUMBER: _ClassVar[int]
    method: str
    label: str
    words: _containers.RepeatedCompositeFieldContainer[WordContribution]
    baseline: float
    passes: int
    def __init__(self, method: _Optional[str] = ..., label: _Optional[str] = ..., words: _Optional[_Iterable[_Union[WordContribution, _Mapping]]] = ..., baseline: _Optional[float] = ..., passes: _Optional[int] = ...) -> None: ...

class WordContribution(_message.Message):
    __slots__ = ("text", "contribution", "start", "end")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    text: str
    contribution: float
    start: int
    end: int
    def __init__(self, text: _Optional[str] = ..., contribution: _Optional[float] = ..., start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class BatchStats(_message.Message):
    __slots__ = ("queue_seconds", "compute_seconds", "batch_size", "padded_length")
    QUEUE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    PADDED_LENGTH_FIELD_NUMBER: _ClassVar[int]
    queue_seconds: float
    compute_seconds: float
    batch_size: int
    padded_length: int
    def __init__(self, queue_seconds: _Optional[float] = ..., compute_seconds: _Optional[float] = ..., batch_size: _Optional[int] = ..., padded_length: _Optional[int] = ...) -> None: ...

class Attention(_message.Message):
    __slots__ = ("tokens", "cls_attention", "rollout", "num_layers", "num_heads", "weights")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    CLS_ATTENTION_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    NUM_HEADS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedScalarFieldContainer[str]
    cls_attention: _containers.RepeatedScalarFieldContainer[float]
    rollout: _containers.RepeatedScalarFieldContainer[float]
    num_layers: int
    num_heads: int
    weights: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, tokens: _Optional[_Iterable[str]] = ..., cls_attention: _Optional[_Iterable[float]] = ..., rollout: _Optional[_Iterable[float]] = ..., num_layers: _Optional[int] = ..., num_heads: _Optional[int] = ..., weights: _Optional[_Iterable[float]] = ...) -> None: ...

class PredictStreamRequest(_message.Message):
    __slots__ = ("request_id", "request")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    request: PredictRequest
    def __init__(self, request_id: _Optional[str] = ..., request: _Optional[_Union[PredictRequest, _Mapping]] = ...) -> None: ...

class PredictStreamResponse(_message.Message):
    __slots__ = ("request_id", "response", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    response: PredictResponse
    error: StreamError
    def __init__(self, request_id: _Optional[str] = ..., response: _Optional[_Union[PredictResponse, _Mapping]] = ..., error: _Optional[_Union[StreamError, _Mapping]] = ...) -> None: ...

class StreamError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ("model_version",)
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_version: int
    def __init__(self, model_version: _Optional[int] = ...) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("name", "version", "labels", "max_length", "num_layers", "num_heads", "hidden_size", "vocab_size", "metrics_json", "available_versions", "max_texts_per_request", "max_text_chars", "execution_provider", "workers", "max_concurrent_batches", "intra_op_threads", "lone_batch_threads", "available_cpus", "loaded_versions", "default_version", "shadow_versions", "max_explained_words")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    NUM_HEADS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    METRICS_JSON_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXTS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_BATCHES_FIELD_NUMBER: _ClassVar[int]
    INTRA_OP_THREADS_FIELD_NUMBER: _ClassVar[int]
    LONE_BATCH_THREADS_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_CPUS_FIELD_NUMBER: _ClassVar[int]
    LOADED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHADOW_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_EXPLAINED_WORDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    labels: _containers.RepeatedScalarFieldContainer[str]
    max_length: int
    num_layers: int
    num_heads: int
    hidden_size: int
    vocab_size: int
    metrics_json: str
    available_versions: _containers.RepeatedScalarFieldContainer[int]
    max_texts_per_request: int
    max_text_chars: int
    execution_provider: str
    workers: int
    max_concurrent_batches: int
    intra_op_threads: int
    lone_batch_threads: int
    available_cpus: int
    loaded_versions: _containers.RepeatedScalarFieldContainer[int]
    default_version: int
    shadow_versions: _containers.RepeatedScalarFieldContainer[int]
    max_explained_words: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., labels: _Optional[_Iterable[str]] = ..., max_length: _Optional[int] = ..., num_layers: _Optional[int] = ..., num_heads: _Optional[int] = ..., hidden_size: _Optional[int] = ..., vocab_size: _Optional[int] = ..., metrics_json: _Optional[str] = ..., available_versions: _Optional[_Iterable[int]] = ..., max_texts_per_request: _Optional[int] = ..., max_text_chars: _Optional[int] = ..., execution_provider: _Optional[str] = ..., workers: _Optional[int] = ..., max_concurrent_batches: _Optional[int] = ..., intra_op_threads: _Optional[int] = ..., lone_batch_threads: _Optional[int] = ..., available_cpus: _Optional[int] = ..., loaded_versions: _Optional[_Iterable[int]] = ..., default_version: _Optional[int] = ..., shadow_versions: _Optional[_Iterable[int]] = ..., max_explained_words: _Optional[int] = ...) -> None: ...
