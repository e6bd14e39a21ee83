import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MetricKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_KIND_UNSPECIFIED: _ClassVar[MetricKind]
    METRIC_KIND_GAUGE: _ClassVar[MetricKind]
    METRIC_KIND_COUNTER: _ClassVar[MetricKind]

class Level(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEVEL_UNSPECIFIED: _ClassVar[Level]
    LEVEL_TRACE: _ClassVar[Level]
    LEVEL_DEBUG: _ClassVar[Level]
    LEVEL_INFO: _ClassVar[Level]
    LEVEL_WARN: _ClassVar[Level]
    LEVEL_ERROR: _ClassVar[Level]
    LEVEL_FATAL: _ClassVar[Level]

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_UNSPECIFIED: _ClassVar[Status]
    STATUS_OK: _ClassVar[Status]
    STATUS_ERROR: _ClassVar[Status]
    STATUS_TIMEOUT: _ClassVar[Status]
    STATUS_REJECTED: _ClassVar[Status]

class MatchOp(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MATCH_OP_EQ: _ClassVar[MatchOp]
    MATCH_OP_NEQ: _ClassVar[MatchOp]
    MATCH_OP_RE: _ClassVar[MatchOp]
    MATCH_OP_NRE: _ClassVar[MatchOp]

class Aggregation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATION_AVG: _ClassVar[Aggregation]
    AGGREGATION_MIN: _ClassVar[Aggregation]
    AGGREGATION_MAX: _ClassVar[Aggregation]
    AGGREGATION_SUM: _ClassVar[Aggregation]
    AGGREGATION_COUNT: _ClassVar[Aggregation]
    AGGREGATION_LAST: _ClassVar[Aggregation]
    AGGREGATION_RATE: _ClassVar[Aggregation]
    AGGREGATION_QUANTILE: _ClassVar[Aggregation]
METRIC_KIND_UNSPECIFIED: MetricKind
METRIC_KIND_GAUGE: MetricKind
METRIC_KIND_COUNTER: MetricKind
LEVEL_UNSPECIFIED: Level
LEVEL_TRACE: Level
LEVEL_DEBUG: Level
LEVEL_INFO: Level
LEVEL_WARN: Level
LEVEL_ERROR: Level
LEVEL_FATAL: Level
STATUS_UNSPECIFIED: Status
STATUS_OK: Status
STATUS_ERROR: Status
STATUS_TIMEOUT: Status
STATUS_REJECTED: Status
MATCH_OP_EQ: MatchOp
MATCH_OP_NEQ: MatchOp
MATCH_OP_RE: MatchOp
MATCH_OP_NRE: MatchOp
AGGREGATION_AVG: Aggregation
AGGREGATION_MIN: Aggregation
AGGREGATION_MAX: Aggregation
AGGREGATION_SUM: Aggregation
AGGREGATION_COUNT: Aggregation
AGGREGATION_LAST: Aggregation
AGGREGATION_RATE: Aggregation
AGGREGATION_QUANTILE: Aggregation

class RegisterRequest(_message.Message):
    __slots__ = ("service", "instance", "host", "pid", "models", "client_id", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance: str
    host: str
    pid: int
    models: _containers.RepeatedCompositeFieldContainer[ModelRef]
    client_id: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, service: _Optional[str] = ..., instance: _Optional[str] = ..., host: _Optional[str] = ..., pid: _Optional[int] = ..., models: _Optional[_Iterable[_Union[ModelRef, _Mapping]]] = ..., client_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("client_id", "last_metrics_seq", "last_logs_seq", "last_events_seq")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_METRICS_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_LOGS_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENTS_SEQ_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    last_metrics_seq: int
    last_logs_seq: int
    last_events_seq: int
    def __init__(self, client_id: _Optional[str] = ..., last_metrics_seq: _Optional[int] = ..., last_logs_seq: _Optional[int] = ..., last_events_seq: _Optional[int] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Series(_message.Message):
    __slots__ = ("name", "labels", "kind", "timestamps_ms", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_MS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    kind: MetricKind
    timestamps_ms: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., kind: _Optional[_Union[MetricKind, str]] = ..., timestamps_ms: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class MetricBatch(_message.Message):
    __slots__ = ("client_id", "seq", "service", "series", "backfill")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    BACKFILL_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    seq: int
    service: str
    series: _containers.RepeatedCompositeFieldContainer[Series]
    backfill: bool
    def __init__(self, client_id: _Optional[str] = ..., seq: _Optional[int] = ..., service: _Optional[str] = ..., series: _Optional[_Iterable[_Union[Series, _Mapping]]] = ..., backfill: _Optional[bool] = ...) -> None: ...

class LogRecord(_message.Message):
    __slots__ = ("timestamp_ms", "level", "message", "service", "request_id", "error_type", "fields", "logger")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    LOGGER_FIELD_NUMBER: _ClassVar[int]
    timestamp_ms: int
    level: Level
    message: str
    service: str
    request_id: str
    error_type: str
    fields: _containers.ScalarMap[str, str]
    logger: str
    def __init__(self, timestamp_ms: _Optional[int] = ..., level: _Optional[_Union[Level, str]] = ..., message: _Optional[str] = ..., service: _Optional[str] = ..., request_id: _Optional[str] = ..., error_type: _Optional[str] = ..., fields: _Optional[_Mapping[str, str]] = ..., logger: _Optional[str] = ...) -> None: ...

class LogBatch(_message.Message):
    __slots__ = ("client_id", "seq", "service", "records", "backfill")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    BACKFILL_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    seq: int
    service: str
    records: _containers.RepeatedCompositeFieldContainer[LogRecord]
    backfill: bool
    def __init__(self, client_id: _Optional[str] = ..., seq: _Optional[int] = ..., service: _Optional[str] = ..., records: _Optional[_Iterable[_Union[LogRecord, _Mapping]]] = ..., backfill: _Optional[bool] = ...) -> None: ...

class Stages(_message.Message):
    __slots__ = ("queue_us", "preprocess_us", "inference_us", "postprocess_us", "time_to_first_token_us", "time_per_output_token_us")
    QUEUE_US_FIELD_NUMBER: _ClassVar[int]
    PREPROCESS_US_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_US_FIELD_NUMBER: _ClassVar[int]
    POSTPROCESS_US_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_US_FIELD_NUMBER: _ClassVar[int]
    TIME_PER_OUTPUT_TOKEN_US_FIELD_NUMBER: _ClassVar[int]
    queue_us: int
    preprocess_us: int
    inference_us: int
    postprocess_us: int
    time_to_first_token_us: int
    time_per_output_token_us: int
    def __init__(self, queue_us: _Optional[int] = ..., preprocess_us: _Optional[int] = ..., inference_us: _Optional[int] = ..., postprocess_us: _Optional[int] = ..., time_to_first_token_us: _Optional[int] = ..., time_per_output_token_us: _Optional[int] = ...) -> None: ...

class InferenceEvent(_message.Message):
    __slots__ = ("timestamp_ms", "model", "model_version", "endpoint", "request_id", "status", "error_type", "latency_us", "stages", "input_bytes", "output_bytes", "prompt_tokens", "completion_tokens", "batch_size", "gpu", "labels", "service")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    INPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    timestamp_ms: int
    model: str
    model_version: str
    endpoint: str
    request_id: str
    status: Status
    error_type: str
    latency_us: int
    stages: Stages
    input_bytes: int
    output_bytes: int
    prompt_tokens: int
    completion_tokens: int
    batch_size: int
    gpu: int
    labels: _containers.ScalarMap[str, str]
    service: str
    def __init__(self, timestamp_ms: _Optional[int] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., endpoint: _Optional[str] = ..., request_id: _Optional[str] = ..., status: _Optional[_Union[Status, str]] = ..., error_type: _Optional[str] = ..., latency_us: _Optional[int] = ..., stages: _Optional[_Union[Stages, _Mapping]] = ..., input_bytes: _Optional[int] = ..., output_bytes: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., batch_size: _Optional[int] = ..., gpu: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., service: _Optional[str] = ...) -> None: ...

class EventBatch(_message.Message):
    __slots__ = ("client_id", "seq", "service", "events", "backfill")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    BACKFILL_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    seq: int
    service: str
    events: _containers.RepeatedCompositeFieldContainer[InferenceEvent]
    backfill: bool
    def __init__(self, client_id: _Optional[str] = ..., seq: _Optional[int] = ..., service: _Optional[str] = ..., events: _Optional[_Iterable[_Union[InferenceEvent, _Mapping]]] = ..., backfill: _Optional[bool] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("item", "sample", "code", "field", "reason")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    item: int
    sample: int
    code: str
    field: str
    reason: str
    def __init__(self, item: _Optional[int] = ..., sample: _Optional[int] = ..., code: _Optional[str] = ..., field: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("seq", "acked_seq", "accepted", "rejected_count", "rejections", "duplicate")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ACKED_SEQ_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    acked_seq: int
    accepted: int
    rejected_count: int
    rejections: _containers.RepeatedCompositeFieldContainer[Rejection]
    duplicate: bool
    def __init__(self, seq: _Optional[int] = ..., acked_seq: _Optional[int] = ..., accepted: _Optional[int] = ..., rejected_count: _Optional[int] = ..., rejections: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class PushRequest(_message.Message):
    __slots__ = ("metrics", "logs", "events")
    METRICS_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    metrics: MetricBatch
    logs: LogBatch
    events: EventBatch
    def __init__(self, metrics: _Optional[_Union[MetricBatch, _Mapping]] = ..., logs: _Optional[_Union[LogBatch, _Mapping]] = ..., events: _Optional[_Union[EventBatch, _Mapping]] = ...) -> None: ...

class PushResponse(_message.Message):
    __slots__ = ("metrics", "logs", "events")
    METRICS_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    metrics: Ack
    logs: Ack
    events: Ack
    def __init__(self, metrics: _Optional[_Union[Ack, _Mapping]] = ..., logs: _Optional[_Union[Ack, _Mapping]] = ..., events: _Optional[_Union[Ack, _Mapping]] = ...) -> None: ...

class ServiceReportRequest(_message.Message):
    __slots__ = ("service", "model", "version", "range", "slow_threshold", "label", "step", "top_errors")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    SLOW_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOP_ERRORS_FIELD_NUMBER: _ClassVar[int]
    service: str
    model: str
    version: str
    range: TimeRange
    slow_threshold: str
    label: str
    step: str
    top_errors: int
    def __init__(self, service: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., range: _Optional[_Union[TimeRange, _Mapping]] = ..., slow_threshold: _Optional[str] = ..., label: _Optional[str] = ..., step: _Optional[str] = ..., top_errors: _Optional[int] = ...) -> None: ...

class LabelShare(_message.Message):
    __slots__ = ("value", "count", "share")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    value: str
    count: int
    share: float
    def __init__(self, value: _Optional[str] = ..., count: _Optional[int] = ..., share: _Optional[float] = ...) -> None: ...

class ErrorExample(_message.Message):
    __slots__ = ("time", "request_id", "message", "service", "model", "source")
    TIME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    request_id: str
    message: str
    service: str
    model: str
    source: str
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ..., message: _Optional[str] = ..., service: _Optional[str] = ..., model: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class ErrorTypeSummary(_message.Message):
    __slots__ = ("error_type", "count", "share", "examples")
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    error_type: str
    count: int
    share: float
    examples: _containers.RepeatedCompositeFieldContainer[ErrorExample]
    def __init__(self, error_type: _Optional[str] = ..., count: _Optional[int] = ..., share: _Optional[float] = ..., examples: _Optional[_Iterable[_Union[ErrorExample, _Mapping]]] = ...) -> None: ...

class IntervalFigures(_message.Message):
    __slots__ = ("start", "requests", "throughput_per_s", "error_rate", "p95_ms")
    START_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_PER_S_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    requests: int
    throughput_per_s: float
    error_rate: float
    p95_ms: float
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., requests: _Optional[int] = ..., throughput_per_s: _Optional[float] = ..., error_rate: _Optional[float] = ..., p95_ms: _Optional[float] = ...) -> None: ...

class ServiceReportResponse(_message.Message):
    __slots__ = ("start", "end", "requests", "errors", "success_rate", "throughput_per_s", "latency", "stages", "slow_threshold", "slow_requests", "slow_share", "label", "label_distribution", "top_errors", "busiest_hours", "prompt_tokens", "completion_tokens", "input_bytes", "output_bytes", "step", "series", "events_scanned", "scan_complete", "queries")
    class StagesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: LatencySummary
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[LatencySummary, _Mapping]] = ...) -> None: ...
    class QueriesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_PER_S_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    SLOW_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SLOW_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SLOW_SHARE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    TOP_ERRORS_FIELD_NUMBER: _ClassVar[int]
    BUSIEST_HOURS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    INPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    EVENTS_SCANNED_FIELD_NUMBER: _ClassVar[int]
    SCAN_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    requests: int
    errors: int
    success_rate: float
    throughput_per_s: float
    latency: LatencySummary
    stages: _containers.MessageMap[str, LatencySummary]
    slow_threshold: _duration_pb2.Duration
    slow_requests: int
    slow_share: float
    label: str
    label_distribution: _containers.RepeatedCompositeFieldContainer[LabelShare]
    top_errors: _containers.RepeatedCompositeFieldContainer[ErrorTypeSummary]
    busiest_hours: _containers.RepeatedCompositeFieldContainer[IntervalFigures]
    prompt_tokens: int
    completion_tokens: int
    input_bytes: int
    output_bytes: int
    step: _duration_pb2.Duration
    series: _containers.RepeatedCompositeFieldContainer[IntervalFigures]
    events_scanned: int
    scan_complete: bool
    queries: _containers.ScalarMap[str, str]
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., success_rate: _Optional[float] = ..., throughput_per_s: _Optional[float] = ..., latency: _Optional[_Union[LatencySummary, _Mapping]] = ..., stages: _Optional[_Mapping[str, LatencySummary]] = ..., slow_threshold: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., slow_requests: _Optional[int] = ..., slow_share: _Optional[float] = ..., label: _Optional[str] = ..., label_distribution: _Optional[_Iterable[_Union[LabelShare, _Mapping]]] = ..., top_errors: _Optional[_Iterable[_Union[ErrorTypeSummary, _Mapping]]] = ..., busiest_hours: _Optional[_Iterable[_Union[IntervalFigures, _Mapping]]] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., input_bytes: _Optional[int] = ..., output_bytes: _Optional[int] = ..., step: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., series: _Optional[_Iterable[_Union[IntervalFigures, _Mapping]]] = ..., events_scanned: _Optional[int] = ..., scan_complete: _Optional[bool] = ..., queries: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ErrorReportRequest(_message.Message):
    __slots__ = ("range", "service", "model", "examples")
    RANGE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    range: TimeRange
    service: str
    model: str
    examples: int
    def __init__(self, range: _Optional[_Union[TimeRange, _Mapping]] = ..., service: _Optional[str] = ..., model: _Optional[str] = ..., examples: _Optional[int] = ...) -> None: ...

class ErrorGroup(_message.Message):
    __slots__ = ("service", "error_type", "events", "logs", "models", "last_seen", "examples")
    class ModelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    service: str
    error_type: str
    events: int
    logs: int
    models: _containers.ScalarMap[str, int]
    last_seen: _timestamp_pb2.Timestamp
    examples: _containers.RepeatedCompositeFieldContainer[ErrorExample]
    def __init__(self, service: _Optional[str] = ..., error_type: _Optional[str] = ..., events: _Optional[int] = ..., logs: _Optional[int] = ..., models: _Optional[_Mapping[str, int]] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., examples: _Optional[_Iterable[_Union[ErrorExample, _Mapping]]] = ...) -> None: ...

class ErrorReportResponse(_message.Message):
    __slots__ = ("start", "end", "requests", "failed_requests", "error_rate", "error_logs", "groups", "scanned", "scan_complete", "queries")
    class QueriesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    FAILED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_LOGS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    SCANNED_FIELD_NUMBER: _ClassVar[int]
    SCAN_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    requests: int
    failed_requests: int
    error_rate: float
    error_logs: int
    groups: _containers.RepeatedCompositeFieldContainer[ErrorGroup]
    scanned: int
    scan_complete: bool
    queries: _containers.ScalarMap[str, str]
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., requests: _Optional[int] = ..., failed_requests: _Optional[int] = ..., error_rate: _Optional[float] = ..., error_logs: _Optional[int] = ..., groups: _Optional[_Iterable[_Union[ErrorGroup, _Mapping]]] = ..., scanned: _Optional[int] = ..., scan_complete: _Optional[bool] = ..., queries: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CapacityReportRequest(_message.Message):
    __slots__ = ("range", "service", "slo_p95", "days")
    RANGE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    SLO_P95_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    range: TimeRange
    service: str
    slo_p95: str
    days: int
    def __init__(self, range: _Optional[_Union[TimeRange, _Mapping]] = ..., service: _Optional[str] = ..., slo_p95: _Optional[str] = ..., days: _Optional[int] = ...) -> None: ...

class CapacityFigures(_message.Message):
    __slots__ = ("service", "recommendation", "reason", "replicas", "recommended_replicas", "requests_per_s", "peak_requests_per_s", "p95_ms", "slo_p95_ms", "trend_per_day", "previous_days_per_s", "gpu_utilization_percent", "gpu_memory_percent", "gpus", "cpu_percent", "memory_bytes", "cost_per_hour", "recommended_cost_per_hour", "savings_per_month", "queries")
    class QueriesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_S_FIELD_NUMBER: _ClassVar[int]
    PEAK_REQUESTS_PER_S_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    SLO_P95_MS_FIELD_NUMBER: _ClassVar[int]
    TREND_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_DAYS_PER_S_FIELD_NUMBER: _ClassVar[int]
    GPU_UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    COST_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDED_COST_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    SAVINGS_PER_MONTH_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    service: str
    recommendation: str
    reason: str
    replicas: int
    recommended_replicas: int
    requests_per_s: float
    peak_requests_per_s: float
    p95_ms: float
    slo_p95_ms: float
    trend_per_day: float
    previous_days_per_s: _containers.RepeatedScalarFieldContainer[float]
    gpu_utilization_percent: float
    gpu_memory_percent: float
    gpus: int
    cpu_percent: float
    memory_bytes: float
    cost_per_hour: float
    recommended_cost_per_hour: float
    savings_per_month: float
    queries: _containers.ScalarMap[str, str]
    def __init__(self, service: _Optional[str] = ..., recommendation: _Optional[str] = ..., reason: _Optional[str] = ..., replicas: _Optional[int] = ..., recommended_replicas: _Optional[int] = ..., requests_per_s: _Optional[float] = ..., peak_requests_per_s: _Optional[float] = ..., p95_ms: _Optional[float] = ..., slo_p95_ms: _Optional[float] = ..., trend_per_day: _Optional[float] = ..., previous_days_per_s: _Optional[_Iterable[float]] = ..., gpu_utilization_percent: _Optional[float] = ..., gpu_memory_percent: _Optional[float] = ..., gpus: _Optional[int] = ..., cpu_percent: _Optional[float] = ..., memory_bytes: _Optional[float] = ..., cost_per_hour: _Optional[float] = ..., recommended_cost_per_hour: _Optional[float] = ..., savings_per_month: _Optional[float] = ..., queries: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CapacityReportResponse(_message.Message):
    __slots__ = ("start", "end", "services", "price_gpu_hour", "price_cpu_core_hour", "price_memory_gib_hour")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    PRICE_GPU_HOUR_FIELD_NUMBER: _ClassVar[int]
    PRICE_CPU_CORE_HOUR_FIELD_NUMBER: _ClassVar[int]
    PRICE_MEMORY_GIB_HOUR_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    services: _containers.RepeatedCompositeFieldContainer[CapacityFigures]
    price_gpu_hour: float
    price_cpu_core_hour: float
    price_memory_gib_hour: float
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., services: _Optional[_Iterable[_Union[CapacityFigures, _Mapping]]] = ..., price_gpu_hour: _Optional[float] = ..., price_cpu_core_hour: _Optional[float] = ..., price_memory_gib_hour: _Optional[float] = ...) -> None: ...

class CompareRequest(_message.Message):
    __slots__ = ("report", "a", "b", "service", "errors", "gpu", "capacity")
    REPORT_FIELD_NUMBER: _ClassVar[int]
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    report: str
    a: TimeRange
    b: TimeRange
    service: ServiceReportRequest
    errors: ErrorReportRequest
    gpu: GpuReportRequest
    capacity: CapacityReportRequest
    def __init__(self, report: _Optional[str] = ..., a: _Optional[_Union[TimeRange, _Mapping]] = ..., b: _Optional[_Union[TimeRange, _Mapping]] = ..., service: _Optional[_Union[ServiceReportRequest, _Mapping]] = ..., errors: _Optional[_Union[ErrorReportRequest, _Mapping]] = ..., gpu: _Optional[_Union[GpuReportRequest, _Mapping]] = ..., capacity: _Optional[_Union[CapacityReportRequest, _Mapping]] = ...) -> None: ...

class FigureDelta(_message.Message):
    __slots__ = ("figure", "a", "b", "delta", "change")
    FIGURE_FIELD_NUMBER: _ClassVar[int]
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    figure: str
    a: float
    b: float
    delta: float
    change: float
    def __init__(self, figure: _Optional[str] = ..., a: _Optional[float] = ..., b: _Optional[float] = ..., delta: _Optional[float] = ..., change: _Optional[float] = ...) -> None: ...

class CompareResponse(_message.Message):
    __slots__ = ("report", "service_a", "service_b", "errors_a", "errors_b", "gpu_a", "gpu_b", "capacity_a", "capacity_b", "deltas")
    REPORT_FIELD_NUMBER: _ClassVar[int]
    SERVICE_A_FIELD_NUMBER: _ClassVar[int]
    SERVICE_B_FIELD_NUMBER: _ClassVar[int]
    ERRORS_A_FIELD_NUMBER: _ClassVar[int]
    ERRORS_B_FIELD_NUMBER: _ClassVar[int]
    GPU_A_FIELD_NUMBER: _ClassVar[int]
    GPU_B_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_A_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_B_FIELD_NUMBER: _ClassVar[int]
    DELTAS_FIELD_NUMBER: _ClassVar[int]
    report: str
    service_a: ServiceReportResponse
    service_b: ServiceReportResponse
    errors_a: ErrorReportResponse
    errors_b: ErrorReportResponse
    gpu_a: GpuReportResponse
    gpu_b: GpuReportResponse
    capacity_a: CapacityReportResponse
    capacity_b: CapacityReportResponse
    deltas: _containers.RepeatedCompositeFieldContainer[FigureDelta]
    def __init__(self, report: _Optional[str] = ..., service_a: _Optional[_Union[ServiceReportResponse, _Mapping]] = ..., service_b: _Optional[_Union[ServiceReportResponse, _Mapping]] = ..., errors_a: _Optional[_Union[ErrorReportResponse, _Mapping]] = ..., errors_b: _Optional[_Union[ErrorReportResponse, _Mapping]] = ..., gpu_a: _Optional[_Union[GpuReportResponse, _Mapping]] = ..., gpu_b: _Optional[_Union[GpuReportResponse, _Mapping]] = ..., capacity_a: _Optional[_Union[CapacityReportResponse, _Mapping]] = ..., capacity_b: _Optional[_Union[CapacityReportResponse, _Mapping]] = ..., deltas: _Optional[_Iterable[_Union[FigureDelta, _Mapping]]] = ...) -> None: ...

class EvalRequest(_message.Message):
    __slots__ = ("query", "time")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    query: str
    time: str
    def __init__(self, query: _Optional[str] = ..., time: _Optional[str] = ...) -> None: ...

class EvalRangeRequest(_message.Message):
    __slots__ = ("query", "range", "step")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    query: str
    range: TimeRange
    step: str
    def __init__(self, query: _Optional[str] = ..., range: _Optional[_Union[TimeRange, _Mapping]] = ..., step: _Optional[str] = ...) -> None: ...

class EvalSeries(_message.Message):
    __slots__ = ("labels", "points")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LABELS_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.ScalarMap[str, str]
    points: _containers.RepeatedCompositeFieldContainer[Point]
    def __init__(self, labels: _Optional[_Mapping[str, str]] = ..., points: _Optional[_Iterable[_Union[Point, _Mapping]]] = ...) -> None: ...

class EvalResponse(_message.Message):
    __slots__ = ("result_type", "series", "scalar", "string_value")
    RESULT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    SCALAR_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    result_type: str
    series: _containers.RepeatedCompositeFieldContainer[EvalSeries]
    scalar: Point
    string_value: str
    def __init__(self, result_type: _Optional[str] = ..., series: _Optional[_Iterable[_Union[EvalSeries, _Mapping]]] = ..., scalar: _Optional[_Union[Point, _Mapping]] = ..., string_value: _Optional[str] = ...) -> None: ...

class TimeRange(_message.Message):
    __slots__ = ("start", "end", "last")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    start: str
    end: str
    last: str
    def __init__(self, start: _Optional[str] = ..., end: _Optional[str] = ..., last: _Optional[str] = ...) -> None: ...

class Matcher(_message.Message):
    __slots__ = ("name", "op", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    op: MatchOp
    value: str
    def __init__(self, name: _Optional[str] = ..., op: _Optional[_Union[MatchOp, str]] = ..., value: _Optional[str] = ...) -> None: ...

class ListSeriesRequest(_message.Message):
    __slots__ = ("selector", "matchers", "limit")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    MATCHERS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    selector: str
    matchers: _containers.RepeatedCompositeFieldContainer[Matcher]
    limit: int
    def __init__(self, selector: _Optional[str] = ..., matchers: _Optional[_Iterable[_Union[Matcher, _Mapping]]] = ..., limit: _Optional[int] = ...) -> None: ...

class SeriesInfo(_message.Message):
    __slots__ = ("name", "labels", "kind")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    name: str
    labels: _containers.ScalarMap[str, str]
    kind: MetricKind
    def __init__(self, name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., kind: _Optional[_Union[MetricKind, str]] = ...) -> None: ...

class ListSeriesResponse(_message.Message):
    __slots__ = ("series", "truncated")
    SERIES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    series: _containers.RepeatedCompositeFieldContainer[SeriesInfo]
    truncated: bool
    def __init__(self, series: _Optional[_Iterable[_Union[SeriesInfo, _Mapping]]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class QueryRangeRequest(_message.Message):
    __slots__ = ("selector", "matchers", "range", "step", "aggregation", "quantile", "group_by", "combine")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    MATCHERS_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    QUANTILE_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    COMBINE_FIELD_NUMBER: _ClassVar[int]
    selector: str
    matchers: _containers.RepeatedCompositeFieldContainer[Matcher]
    range: TimeRange
    step: str
    aggregation: Aggregation
    quantile: float
    group_by: _containers.RepeatedScalarFieldContainer[str]
    combine: bool
    def __init__(self, selector: _Optional[str] = ..., matchers: _Optional[_Iterable[_Union[Matcher, _Mapping]]] = ..., range: _Optional[_Union[TimeRange, _Mapping]] = ..., step: _Optional[str] = ..., aggregation: _Optional[_Union[Aggregation, str]] = ..., quantile: _Optional[float] = ..., group_by: _Optional[_Iterable[str]] = ..., combine: _Optional[bool] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("time", "value")
    TIME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    value: float
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., value: _Optional[float] = ...) -> None: ...

class SeriesResult(_message.Message):
    __slots__ = ("name", "labels", "points")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    labels: _containers.ScalarMap[str, str]
    points: _containers.RepeatedCompositeFieldContainer[Point]
    def __init__(self, name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., points: _Optional[_Iterable[_Union[Point, _Mapping]]] = ...) -> None: ...

class QueryRangeResponse(_message.Message):
    __slots__ = ("series", "start", "end", "step")
    SERIES_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    series: _containers.RepeatedCompositeFieldContainer[SeriesResult]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    step: _duration_pb2.Duration
    def __init__(self, series: _Optional[_Iterable[_Union[SeriesResult, _Mapping]]] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., step: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class InferenceStatsRequest(_message.Message):
    __slots__ = ("service", "model", "model_version", "endpoint", "range", "group_by", "step")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    service: str
    model: str
    model_version: str
    endpoint: str
    range: TimeRange
    group_by: _containers.RepeatedScalarFieldContainer[str]
    step: str
    def __init__(self, service: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., endpoint: _Optional[str] = ..., range: _Optional[_Union[TimeRange, _Mapping]] = ..., group_by: _Optional[_Iterable[str]] = ..., step: _Optional[str] = ...) -> None: ...

class LatencySummary(_message.Message):
    __slots__ = ("count", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MEAN_MS_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P90_MS_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_MS_FIELD_NUMBER: _ClassVar[int]
    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    def __init__(self, count: _Optional[int] = ..., mean_ms: _Optional[float] = ..., p50_ms: _Optional[float] = ..., p90_ms: _Optional[float] = ..., p95_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ..., max_ms: _Optional[float] = ...) -> None: ...

class InferenceFigures(_message.Message):
    __slots__ = ("start", "end", "count", "throughput_per_s", "error_rate", "latency", "stages", "by_status", "by_error_type", "prompt_tokens", "completion_tokens", "input_bytes", "output_bytes")
    class StagesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: LatencySummary
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[LatencySummary, _Mapping]] = ...) -> None: ...
    class ByStatusEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ByErrorTypeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_PER_S_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    BY_STATUS_FIELD_NUMBER: _ClassVar[int]
    BY_ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    INPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    count: int
    throughput_per_s: float
    error_rate: float
    latency: LatencySummary
    stages: _containers.MessageMap[str, LatencySummary]
    by_status: _containers.ScalarMap[str, int]
    by_error_type: _containers.ScalarMap[str, int]
    prompt_tokens: int
    completion_tokens: int
    input_bytes: int
    output_bytes: int
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., count: _Optional[int] = ..., throughput_per_s: _Optional[float] = ..., error_rate: _Optional[float] = ..., latency: _Optional[_Union[LatencySummary, _Mapping]] = ..., stages: _Optional[_Mapping[str, LatencySummary]] = ..., by_status: _Optional[_Mapping[str, int]] = ..., by_error_type: _Optional[_Mapping[str, int]] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., input_bytes: _Optional[int] = ..., output_bytes: _Optional[int] = ...) -> None: ...

class InferenceGroup(_message.Message):
    __slots__ = ("key", "total", "steps")
    class KeyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    key: _containers.ScalarMap[str, str]
    total: InferenceFigures
    steps: _containers.RepeatedCompositeFieldContainer[InferenceFigures]
    def __init__(self, key: _Optional[_Mapping[str, str]] = ..., total: _Optional[_Union[InferenceFigures, _Mapping]] = ..., steps: _Optional[_Iterable[_Union[InferenceFigures, _Mapping]]] = ...) -> None: ...

class InferenceStatsResponse(_message.Message):
    __slots__ = ("groups", "start", "end", "bucket")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[InferenceGroup]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    bucket: _duration_pb2.Duration
    def __init__(self, groups: _Optional[_Iterable[_Union[InferenceGroup, _Mapping]]] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bucket: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SearchLogsRequest(_message.Message):
    __slots__ = ("range", "service", "min_level", "request_id", "contains", "limit", "page_token")
    RANGE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    MIN_LEVEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CONTAINS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    range: TimeRange
    service: str
    min_level: Level
    request_id: str
    contains: str
    limit: int
    page_token: str
    def __init__(self, range: _Optional[_Union[TimeRange, _Mapping]] = ..., service: _Optional[str] = ..., min_level: _Optional[_Union[Level, str]] = ..., request_id: _Optional[str] = ..., contains: _Optional[str] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class SearchLogsResponse(_message.Message):
    __slots__ = ("records", "next_page_token")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[LogRecord]
    next_page_token: str
    def __init__(self, records: _Optional[_Iterable[_Union[LogRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetRequestRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class GetRequestResponse(_message.Message):
    __slots__ = ("events", "logs")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[InferenceEvent]
    logs: _containers.RepeatedCompositeFieldContainer[LogRecord]
    def __init__(self, events: _Optional[_Iterable[_Union[InferenceEvent, _Mapping]]] = ..., logs: _Optional[_Iterable[_Union[LogRecord, _Mapping]]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ConnectedService(_message.Message):
    __slots__ = ("client_id", "service", "instance", "host", "pid", "models", "last_seen_at", "open_streams")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_AT_FIELD_NUMBER: _ClassVar[int]
    OPEN_STREAMS_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    service: str
    instance: str
    host: str
    pid: int
    models: _containers.RepeatedCompositeFieldContainer[ModelRef]
    last_seen_at: _timestamp_pb2.Timestamp
    open_streams: int
    def __init__(self, client_id: _Optional[str] = ..., service: _Optional[str] = ..., instance: _Optional[str] = ..., host: _Optional[str] = ..., pid: _Optional[int] = ..., models: _Optional[_Iterable[_Union[ModelRef, _Mapping]]] = ..., last_seen_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., open_streams: _Optional[int] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("version", "start_time", "uptime", "series", "samples", "events", "logs", "samples_per_s", "events_per_s", "logs_per_s", "disk_bytes", "services", "data_dir", "samplers")
    class SamplersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    UPTIME_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_S_FIELD_NUMBER: _ClassVar[int]
    EVENTS_PER_S_FIELD_NUMBER: _ClassVar[int]
    LOGS_PER_S_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    DATA_DIR_FIELD_NUMBER: _ClassVar[int]
    SAMPLERS_FIELD_NUMBER: _ClassVar[int]
    version: str
    start_time: _timestamp_pb2.Timestamp
    uptime: _duration_pb2.Duration
    series: int
    samples: int
    events: int
    logs: int
    samples_per_s: float
    events_per_s: float
    logs_per_s: float
    disk_bytes: int
    services: _containers.RepeatedCompositeFieldContainer[ConnectedService]
    data_dir: str
    samplers: _containers.ScalarMap[str, str]
    def __init__(self, version: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., uptime: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., series: _Optional[int] = ..., samples: _Optional[int] = ..., events: _Optional[int] = ..., logs: _Optional[int] = ..., samples_per_s: _Optional[float] = ..., events_per_s: _Optional[float] = ..., logs_per_s: _Optional[float] = ..., disk_bytes: _Optional[int] = ..., services: _Optional[_Iterable[_Union[ConnectedService, _Mapping]]] = ..., data_dir: _Optional[str] = ..., samplers: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GpuReportRequest(_message.Message):
    __slots__ = ("range", "gpu")
    RANGE_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    range: TimeRange
    gpu: str
    def __init__(self, range: _Optional[_Union[TimeRange, _Mapping]] = ..., gpu: _Optional[str] = ...) -> None: ...

class GpuFault(_message.Message):
    __slots__ = ("time", "kind", "message", "xid", "pid", "service")
    TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    XID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    kind: str
    message: str
    xid: str
    pid: str
    service: str
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[str] = ..., message: _Optional[str] = ..., xid: _Optional[str] = ..., pid: _Optional[str] = ..., service: _Optional[str] = ...) -> None: ...

class GpuSummary(_message.Message):
    __slots__ = ("gpu", "uuid", "model_name", "utilization_avg_percent", "utilization_max_percent", "memory_peak_bytes", "memory_total_bytes", "temperature_max_celsius", "power_avg_watts", "throttled_seconds", "xid_errors", "ecc_corrected_errors", "ecc_uncorrected_errors", "faults", "up_ratio", "services")
    GPU_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_AVG_PERCENT_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_MAX_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PEAK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_MAX_CELSIUS_FIELD_NUMBER: _ClassVar[int]
    POWER_AVG_WATTS_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    XID_ERRORS_FIELD_NUMBER: _ClassVar[int]
    ECC_CORRECTED_ERRORS_FIELD_NUMBER: _ClassVar[int]
    ECC_UNCORRECTED_ERRORS_FIELD_NUMBER: _ClassVar[int]
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    UP_RATIO_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    gpu: str
    uuid: str
    model_name: str
    utilization_avg_percent: float
    utilization_max_percent: float
    memory_peak_bytes: float
    memory_total_bytes: float
    temperature_max_celsius: float
    power_avg_watts: float
    throttled_seconds: float
    xid_errors: int
    ecc_corrected_errors: int
    ecc_uncorrected_errors: int
    faults: _containers.RepeatedCompositeFieldContainer[GpuFault]
    up_ratio: float
    services: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, gpu: _Optional[str] = ..., uuid: _Optional[str] = ..., model_name: _Optional[str] = ..., utilization_avg_percent: _Optional[float] = ..., utilization_max_percent: _Optional[float] = ..., memory_peak_bytes: _Optional[float] = ..., memory_total_bytes: _Optional[float] = ..., temperature_max_celsius: _Optional[float] = ..., power_avg_watts: _Optional[float] = ..., throttled_seconds: _Optional[float] = ..., xid_errors: _Optional[int] = ..., ecc_corrected_errors: _Optional[int] = ..., ecc_uncorrected_errors: _Optional[int] = ..., faults: _Optional[_Iterable[_Union[GpuFault, _Mapping]]] = ..., up_ratio: _Optional[float] = ..., services: _Optional[_Iterable[str]] = ...) -> None: ...

class GpuProcessSummary(_message.Message):
    __slots__ = ("gpu", "pid", "service", "model", "memory_peak_bytes", "utilization_max_percent")
    GPU_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PEAK_BYTES_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_MAX_PERCENT_FIELD_NUMBER: _ClassVar[int]
    gpu: str
    pid: int
    service: str
    model: str
    memory_peak_bytes: float
    utilization_max_percent: float
    def __init__(self, gpu: _Optional[str] = ..., pid: _Optional[int] = ..., service: _Optional[str] = ..., model: _Optional[str] = ..., memory_peak_bytes: _Optional[float] = ..., utilization_max_percent: _Optional[float] = ...) -> None: ...

class GpuServiceSummary(_message.Message):
    __slots__ = ("service", "memory_peak_bytes", "processes")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PEAK_BYTES_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    service: str
    memory_peak_bytes: float
    processes: int
    def __init__(self, service: _Optional[str] = ..., memory_peak_bytes: _Optional[float] = ..., processes: _Optional[int] = ...) -> None: ...

class GpuReportResponse(_message.Message):
    __slots__ = ("gpus", "processes", "services", "start", "end")
    GPUS_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    gpus: _containers.RepeatedCompositeFieldContainer[GpuSummary]
    processes: _containers.RepeatedCompositeFieldContainer[GpuProcessSummary]
    services: _containers.RepeatedCompositeFieldContainer[GpuServiceSummary]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    def __init__(self, gpus: _Optional[_Iterable[_Union[GpuSummary, _Mapping]]] = ..., processes: _Optional[_Iterable[_Union[GpuProcessSummary, _Mapping]]] = ..., services: _Optional[_Iterable[_Union[GpuServiceSummary, _Mapping]]] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class SnapshotResponse(_message.Message):
    __slots__ = ("path", "files", "bytes", "seconds")
    PATH_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    path: str
    files: int
    bytes: int
    seconds: float
    def __init__(self, path: _Optional[str] = ..., files: _Optional[int] = ..., bytes: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class ListRulesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RuleInfo(_message.Message):
    __slots__ = ("group", "file", "name", "type", "expr", "health", "last_error", "last_evaluation", "evaluation_duration", "keep_firing_for", "labels", "annotations", "pending", "firing", "interval")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AnnotationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    GROUP_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    EXPR_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_EVALUATION_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_DURATION_FIELD_NUMBER: _ClassVar[int]
    FOR_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIRING_FOR_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    FIRING_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    group: str
    file: str
    name: str
    type: str
    expr: str
    health: str
    last_error: str
    last_evaluation: _timestamp_pb2.Timestamp
    evaluation_duration: _duration_pb2.Duration
    keep_firing_for: _duration_pb2.Duration
    labels: _containers.ScalarMap[str, str]
    annotations: _containers.ScalarMap[str, str]
    pending: int
    firing: int
    interval: _duration_pb2.Duration
    def __init__(self, group: _Optional[str] = ..., file: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[str] = ..., expr: _Optional[str] = ..., health: _Optional[str] = ..., last_error: _Optional[str] = ..., last_evaluation: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., evaluation_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., keep_firing_for: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., annotations: _Optional[_Mapping[str, str]] = ..., pending: _Optional[int] = ..., firing: _Optional[int] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., **kwargs) -> None: ...

class ListRulesResponse(_message.Message):
    __slots__ = ("rules", "last_reload_ok", "last_reload_errors", "last_reload", "rule_files")
    RULES_FIELD_NUMBER: _ClassVar[int]
    LAST_RELOAD_OK_FIELD_NUMBER: _ClassVar[int]
    LAST_RELOAD_ERRORS_FIELD_NUMBER: _ClassVar[int]
    LAST_RELOAD_FIELD_NUMBER: _ClassVar[int]
    RULE_FILES_FIELD_NUMBER: _ClassVar[int]
    rules: _containers.RepeatedCompositeFieldContainer[RuleInfo]
    last_reload_ok: bool
    last_reload_errors: _containers.RepeatedScalarFieldContainer[str]
    last_reload: _timestamp_pb2.Timestamp
    rule_files: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, rules: _Optional[_Iterable[_Union[RuleInfo, _Mapping]]] = ..., last_reload_ok: _Optional[bool] = ..., last_reload_errors: _Optional[_Iterable[str]] = ..., last_reload: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rule_files: _Optional[_Iterable[str]] = ...) -> None: ...

class ActiveAlertsRequest(_message.Message):
    __slots__ = ("matchers",)
    MATCHERS_FIELD_NUMBER: _ClassVar[int]
    matchers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, matchers: _Optional[_Iterable[str]] = ...) -> None: ...

class AlertInfo(_message.Message):
    __slots__ = ("labels", "annotations", "state", "active_at", "fired_at", "resolved_at", "value", "group", "rule", "silenced_by", "inhibited")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AnnotationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_AT_FIELD_NUMBER: _ClassVar[int]
    FIRED_AT_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_AT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    SILENCED_BY_FIELD_NUMBER: _ClassVar[int]
    INHIBITED_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.ScalarMap[str, str]
    annotations: _containers.ScalarMap[str, str]
    state: str
    active_at: _timestamp_pb2.Timestamp
    fired_at: _timestamp_pb2.Timestamp
    resolved_at: _timestamp_pb2.Timestamp
    value: float
    group: str
    rule: str
    silenced_by: _containers.RepeatedScalarFieldContainer[str]
    inhibited: bool
    def __init__(self, labels: _Optional[_Mapping[str, str]] = ..., annotations: _Optional[_Mapping[str, str]] = ..., state: _Optional[str] = ..., active_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., fired_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resolved_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., value: _Optional[float] = ..., group: _Optional[str] = ..., rule: _Optional[str] = ..., silenced_by: _Optional[_Iterable[str]] = ..., inhibited: _Optional[bool] = ...) -> None: ...

class AlertHistoryRequest(_message.Message):
    __slots__ = ("range", "matchers", "limit")
    RANGE_FIELD_NUMBER: _ClassVar[int]
    MATCHERS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    range: TimeRange
    matchers: _containers.RepeatedScalarFieldContainer[str]
    limit: int
    def __init__(self, range: _Optional[_Union[TimeRange, _Mapping]] = ..., matchers: _Optional[_Iterable[str]] = ..., limit: _Optional[int] = ...) -> None: ...

class AlertPeriod(_message.Message):
    __slots__ = ("labels", "state", "start", "end")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LABELS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.ScalarMap[str, str]
    state: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    def __init__(self, labels: _Optional[_Mapping[str, str]] = ..., state: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AlertHistoryResponse(_message.Message):
    __slots__ = ("periods", "truncated")
    PERIODS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    periods: _containers.RepeatedCompositeFieldContainer[AlertPeriod]
    truncated: bool
    def __init__(self, periods: _Optional[_Iterable[_Union[AlertPeriod, _Mapping]]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class CreateSilenceRequest(_message.Message):
    __slots__ = ("matchers", "starts_at", "ends_at", "duration", "created_by", "comment")
    MATCHERS_FIELD_NUMBER: _ClassVar[int]
    STARTS_AT_FIELD_NUMBER: _ClassVar[int]
    ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    matchers: _containers.RepeatedScalarFieldContainer[str]
    starts_at: _timestamp_pb2.Timestamp
    ends_at: _timestamp_pb2.Timestamp
    duration: _duration_pb2.Duration
    created_by: str
    comment: str
    def __init__(self, matchers: _Optional[_Iterable[str]] = ..., starts_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., created_by: _Optional[str] = ..., comment: _Optional[str] = ...) -> None: ...

class SilenceInfo(_message.Message):
    __slots__ = ("id", "matchers", "starts_at", "ends_at", "created_by", "comment", "state", "updated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    MATCHERS_FIELD_NUMBER: _ClassVar[int]
    STARTS_AT_FIELD_NUMBER: _ClassVar[int]
    ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    matchers: _containers.RepeatedScalarFieldContainer[str]
    starts_at: _timestamp_pb2.Timestamp
    ends_at: _timestamp_pb2.Timestamp
    created_by: str
    comment: str
    state: str
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., matchers: _Optional[_Iterable[str]] = ..., starts_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., comment: _Optional[str] = ..., state: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListSilencesRequest(_message.Message):
    __slots__ = ("include_expired",)
    INCLUDE_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    include_expired: bool
    def __init__(self, include_expired: _Optional[bool] = ...) -> None: ...

class ListSilencesResponse(_message.Message):
    __slots__ = ("silences",)
    SILENCES_FIELD_NUMBER: _ClassVar[int]
    silences: _containers.RepeatedCompositeFieldContainer[SilenceInfo]
    def __init__(self, silences: _Optional[_Iterable[_Union[SilenceInfo, _Mapping]]] = ...) -> None: ...

class ExpireSilenceRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListNotificationGroupsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NotificationGroup(_message.Message):
    __slots__ = ("receiver", "group_key", "alerts", "next_flush")
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    GROUP_KEY_FIELD_NUMBER: _ClassVar[int]
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_FLUSH_FIELD_NUMBER: _ClassVar[int]
    receiver: str
    group_key: str
    alerts: int
    next_flush: _timestamp_pb2.Timestamp
    def __init__(self, receiver: _Optional[str] = ..., group_key: _Optional[str] = ..., alerts: _Optional[int] = ..., next_flush: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListNotificationGroupsResponse(_message.Message):
    __slots__ = ("groups",)
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[NotificationGroup]
    def __init__(self, groups: _Optional[_Iterable[_Union[NotificationGroup, _Mapping]]] = ...) -> None: ...

class ActiveAlertsResponse(_message.Message):
    __slots__ = ("alerts",)
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[AlertInfo]
    def __init__(self, alerts: _Optional[_Iterable[_Union[AlertInfo, _Mapping]]] = ...) -> None: ...

class ReloadRulesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadRulesResponse(_message.Message):
    __slots__ = ("ok", "rules", "errors")
    OK_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    rules: int
    errors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ok: _Optional[bool] = ..., rules: _Optional[int] = ..., errors: _Optional[_Iterable[str]] = ...) -> None: ...
