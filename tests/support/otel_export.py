"""Exports metrics, logs and GenAI spans to a modelwatch daemon with the OpenTelemetry Python
SDK and its OTLP/gRPC exporters, unchanged: what a service already instrumented with
OpenTelemetry does. Fails unless every export succeeded.

usage: otel_export.py HOST:PORT [TOKEN]
"""
import logging
import sys
import time

from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

addr = sys.argv[1]
headers = (("authorization", f"Bearer {sys.argv[2]}"),) if len(sys.argv) > 2 else None
results = []


def checked(cls):
    class Checked(cls):
        def export(self, *args, **kwargs):
            r = super().export(*args, **kwargs)
            results.append((cls.__name__, r))
            return r

    return Checked(endpoint=f"http://{addr}", insecure=True, headers=headers)


res = Resource.create({"service.name": "otel-svc", "service.instance.id": "pod-1"})

reader = PeriodicExportingMetricReader(checked(OTLPMetricExporter), export_interval_millis=3_600_000)
mp = MeterProvider(resource=res, metric_readers=[reader])
meter = mp.get_meter("otel.test")
counter = meter.create_counter("requests", unit="1")
counter.add(5, {"route": "/v1"})
counter.add(2, {"route": "/v1"})
hist = meter.create_histogram("latency", unit="s", explicit_bucket_boundaries_advisory=[0.1, 0.5, 1.0])
for v in [0.05, 0.2, 0.7, 2.0]:
    hist.record(v)
gauge = meter.create_gauge("queue_depth")
gauge.set(7)
mp.force_flush()
mp.shutdown()

lp = LoggerProvider(resource=res)
lp.add_log_record_processor(SimpleLogRecordProcessor(checked(OTLPLogExporter)))
log = logging.getLogger("otel.test")
log.addHandler(LoggingHandler(level=logging.DEBUG, logger_provider=lp))
log.setLevel(logging.DEBUG)
log.propagate = False
log.error("model crashed", extra={"error.type": "oom", "request_id": "req-42"})
log.info("warmed up")
lp.force_flush()
lp.shutdown()

tp = TracerProvider(resource=res)
tp.add_span_processor(SimpleSpanProcessor(checked(OTLPSpanExporter)))
tracer = tp.get_tracer("otel.test.genai")
for i in range(3):
    with tracer.start_as_current_span("chat llama-3") as s:
        s.set_attribute("gen_ai.operation.name", "chat")
        s.set_attribute("gen_ai.request.model", "llama-3")
        s.set_attribute("gen_ai.usage.input_tokens", 100)
        s.set_attribute("gen_ai.usage.output_tokens", 20 + i)
        s.set_attribute("gen_ai.server.time_to_first_token", 0.05)
        time.sleep(0.01)
with tracer.start_as_current_span("chat llama-3") as s:
    s.set_attribute("gen_ai.operation.name", "chat")
    s.set_attribute("gen_ai.request.model", "llama-3")
    s.set_attribute("error.type", "timeout")
    s.set_status(Status(StatusCode.ERROR, "upstream timed out"))
with tracer.start_as_current_span("db query"):
    pass
tp.force_flush()
tp.shutdown()

bad = [(name, r) for name, r in results if r.name != "SUCCESS"]
kinds = sorted({name for name, _ in results})
print(f"exports: {len(results)} ({', '.join(kinds)}), failed: {bad}")
sys.exit(1 if bad or len(kinds) != 3 else 0)
