"""The modelwatch client: calls that only enqueue; batching, streaming, acks and resends in
background threads.

Every recording call appends a plain tuple to a bounded deque (no lock, no protobuf work on the
caller's thread). One lane thread per kind (metrics, logs, events) turns queued tuples into
protobuf batches, streams them to the daemon, keeps a window of unacked batches and resends
them, in order, after a reconnect; the daemon stores a resent batch once. When a queue is full
the newest item is dropped and counted. Nothing here ever raises into the service because the
daemon is down or slow.
"""
from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import itertools
import logging
import os
import socket
import threading
import time
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

import grpc

from modelwatch.v1 import modelwatch_pb2 as pb
from modelwatch.v1 import modelwatch_pb2_grpc as pb_grpc

STAGES = ("queue", "preprocess", "inference", "postprocess")
_STATUS = {"ok": pb.STATUS_OK, "error": pb.STATUS_ERROR, "timeout": pb.STATUS_TIMEOUT, "rejected": pb.STATUS_REJECTED}
_LEVELS = {"trace": pb.LEVEL_TRACE, "debug": pb.LEVEL_DEBUG, "info": pb.LEVEL_INFO, "warn": pb.LEVEL_WARN,
           "warning": pb.LEVEL_WARN, "error": pb.LEVEL_ERROR, "fatal": pb.LEVEL_FATAL, "critical": pb.LEVEL_FATAL}


# Numbers the clients of this process (see Client.client_id).
_CLIENT_NUMBERS = itertools.count()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Client:
    """A connection to a modelwatch daemon. Thread-safe; usable from asyncio code (recording
    calls never block; use :meth:`aflush` to wait for acks from a coroutine).

    Args:
        target: daemon address, ``host:port`` or the local socket, ``unix:/run/modelwatch/ingest.sock``.
        service: this service's name (series get a ``service`` label).
        instance: instance name, e.g. a pod name.
        models: ``[(name, version), ...]`` this process serves.
        queue_size: most items waiting per kind; past it the newest are dropped and counted.
        batch_size: most items per batch.
        linger: seconds an item may wait for its batch to fill.
        window: unacked batches in flight per stream.
        token: bearer token for a daemon with ``server.tokens_file`` (an ``ingest`` token).
        tls: connect with TLS; ``root_certificates`` (PEM bytes) is the CA to trust (default:
            gRPC's roots) and ``client_cert`` a ``(cert_pem, key_pem)`` pair for mutual TLS.
    """

    def __init__(self, target: str = "127.0.0.1:7070", service: str = "", instance: str = "",
                 models: Iterable[Tuple[str, str]] = (), queue_size: int = 100_000, batch_size: int = 2_000,
                 linger: float = 0.2, window: int = 8, max_backoff: float = 5.0, token: Optional[str] = None,
                 tls: bool = False, root_certificates: Optional[bytes] = None,
                 client_cert: Optional[Tuple[bytes, bytes]] = None) -> None:
        self.target = target
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._credentials = None
        if tls or root_certificates or client_cert:
            cert, key = client_cert if client_cert else (None, None)
            self._credentials = grpc.ssl_channel_credentials(root_certificates, key, cert)
        self.service = service
        self.instance = instance
        self.models = list(models)
        # A model named once at init keeps its version on events that give none.
        self._versions: Dict[str, str] = {}
        for name, version in self.models:
            self._versions[name] = "" if self._versions.get(name, version) != version else version
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.linger = linger
        self.window = window
        self.max_backoff = max_backoff
        self.pid = os.getpid()
        self.host = socket.gethostname()
        # Unique per process start (a restarted service never collides with the sequences its
        # previous incarnation left in the daemon) and per client in the process: two clients
        # of one service made in the same millisecond would otherwise share the id, and the
        # second one's batches would be acked as duplicates and not stored.
        self.client_id = f"{service}/{instance}/{self.host}/{self.pid}/{_now_ms()}.{next(_CLIENT_NUMBERS)}"
        self._enqueued = itertools.count()
        self._dropped = itertools.count()
        self._closing = threading.Event()
        self._flushing = threading.Event()
        self._lanes = {k: _Lane(self, k) for k in ("metrics", "logs", "events")}
        for lane in self._lanes.values():
            lane.start()

    # ---- recording (only enqueue) ------------------------------------------------------

    def _push(self, kind: str, item: tuple) -> None:
        q = self._lanes[kind].queue
        if len(q) >= self.queue_size:
            next(self._dropped)
            return
        q.append(item)
        next(self._enqueued)

    def gauge(self, name: str, value: float, labels: Optional[Mapping[str, str]] = None) -> None:
        """Records a gauge sample, stamped now."""
        self._push("metrics", (name, tuple(sorted(labels.items())) if labels else (), pb.METRIC_KIND_GAUGE, _now_ms(), float(value)))

    def counter(self, name: str, total: float, labels: Optional[Mapping[str, str]] = None) -> None:
        """Records a counter's current total, stamped now."""
        self._push("metrics", (name, tuple(sorted(labels.items())) if labels else (), pb.METRIC_KIND_COUNTER, _now_ms(), float(total)))

    def log(self, level: str, message: str, request_id: str = "", error_type: str = "", logger: str = "",
            fields: Optional[Mapping[str, Any]] = None) -> None:
        """Records a structured log line. ``level``: trace, debug, info, warn, error, fatal."""
        self._push("logs", (_now_ms(), _LEVELS.get(level.lower(), pb.LEVEL_INFO), message, request_id, error_type, logger, fields))

    def event(self, model: str, latency_s: float, *, version: str = "", endpoint: str = "", request_id: str = "",
              status: str = "ok", error_type: str = "", stages: Optional[Mapping[str, float]] = None,
              prompt_tokens: int = 0, completion_tokens: int = 0, input_bytes: int = 0, output_bytes: int = 0,
              batch_size: int = 0, labels: Optional[Mapping[str, str]] = None, timestamp_ms: int = 0) -> None:
        """Records one inference event; latencies in seconds."""
        version = version or self._versions.get(model, "")
        self._push("events", (timestamp_ms or _now_ms(), model, version, endpoint, request_id, _STATUS.get(status, pb.STATUS_OK),
                              error_type, latency_s, stages, prompt_tokens, completion_tokens, input_bytes, output_bytes,
                              batch_size, labels))

    def inference(self, model: str, request_id: str = "", version: str = "", endpoint: str = "") -> "Inference":
        """Times a request: ``with client.inference("card-detector", request_id=rid) as ev:``."""
        return Inference(self, model, request_id, version, endpoint)

    def monitor(self, model: str, version: str = "", endpoint: str = "") -> Callable:
        """Decorator: times each call of the function (sync or async) as an inference event;
        an exception sets status error (timeout for TimeoutError) and its type as error type,
        and is re-raised."""
        return monitor(model, version=version, endpoint=endpoint, client=self)

    # ---- state ---------------------------------------------------------------------------

    def stats(self) -> Dict[str, int]:
        """Counts of items since start: enqueued, sent, acked, dropped, retried, rejected."""
        s = {"enqueued": _peek(self._enqueued), "dropped": _peek(self._dropped), "sent": 0, "acked": 0, "retried": 0, "rejected": 0}
        for lane in self._lanes.values():
            with lane.cond:
                s["sent"] += lane.sent
                s["acked"] += lane.acked
                s["retried"] += lane.retried
                s["rejected"] += lane.rejected
        return s

    def flush(self, timeout: float = 10.0) -> bool:
        """Sends what is queued now and waits until everything enqueued so far is acked;
        returns whether that happened within ``timeout`` seconds."""
        target = _peek(self._enqueued)
        deadline = time.monotonic() + timeout
        self._flushing.set()
        try:
            while self.stats()["acked"] < target:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.002)
            return True
        finally:
            self._flushing.clear()

    async def aflush(self, timeout: float = 10.0) -> bool:
        """:meth:`flush` for asyncio code (waits in a worker thread)."""
        return await asyncio.get_running_loop().run_in_executor(None, self.flush, timeout)

    def close(self, timeout: float = 10.0) -> bool:
        """Flushes up to ``timeout``, then stops the background threads. What was not acked by
        then is dropped, and a warning (logger ``modelwatch.client``) says how much and why."""
        flushed = self.flush(timeout)
        if not flushed:
            s = self.stats()
            left = s["enqueued"] - s["dropped"] - s["acked"]
            errors = sorted({lane.last_error for lane in self._lanes.values() if lane.last_error})
            logging.getLogger("modelwatch.client").warning(
                "close: %d item(s) not acknowledged by the daemon at %s within %.1fs are dropped (%s)",
                left, self.target, timeout, "; ".join(errors) or "no answer from the daemon")
        self._closing.set()
        for lane in self._lanes.values():
            lane.wake()
            lane.join(timeout=5)
        return flushed

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _peek(counter: "itertools.count[int]") -> int:
    # itertools.count's repr is "count(N)": the next value, i.e. how many were taken.
    return int(repr(counter)[6:-1])


class Inference:
    """One timed request (see :meth:`Client.inference`). Mark stages with ``ev.mark("preprocess")``
    (the stage ends now, having begun at the previous mark) or ``with ev.stage("inference"):``."""

    __slots__ = ("client", "model", "request_id", "version", "endpoint", "labels", "stages", "status",
                 "error_type", "prompt_tokens", "completion_tokens", "input_bytes", "output_bytes", "batch_size",
                 "_start", "_mark", "_ttft")

    def __init__(self, client: Client, model: str, request_id: str, version: str, endpoint: str) -> None:
        self.client, self.model, self.request_id, self.version, self.endpoint = client, model, request_id, version, endpoint
        self.labels: Dict[str, str] = {}
        self.stages: Dict[str, float] = {}
        self.status = "ok"
        self.error_type = ""
        self.prompt_tokens = self.completion_tokens = self.input_bytes = self.output_bytes = self.batch_size = 0
        self._start = self._mark = 0.0
        self._ttft = 0.0

    def __enter__(self) -> "Inference":
        self._start = self._mark = time.perf_counter()
        return self

    def mark(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages[stage] = self.stages.get(stage, 0.0) + (now - self._mark)
        self._mark = now

    def stage(self, name: str) -> "_Stage":
        return _Stage(self, name)

    def first_token(self) -> None:
        self._ttft = time.perf_counter() - self._start

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        latency = time.perf_counter() - self._start
        if exc_type is not None:
            self.status = "timeout" if issubclass(exc_type, TimeoutError) else "error"
            self.error_type = self.error_type or exc_type.__name__
        stages = dict(self.stages)
        if self._ttft:
            stages["time_to_first_token"] = self._ttft
            if self.completion_tokens > 1:
                stages["time_per_output_token"] = (latency - self._ttft) / (self.completion_tokens - 1)
        self.client.event(self.model, latency, version=self.version, endpoint=self.endpoint, request_id=self.request_id,
                          status=self.status, error_type=self.error_type, stages=stages, prompt_tokens=self.prompt_tokens,
                          completion_tokens=self.completion_tokens, input_bytes=self.input_bytes,
                          output_bytes=self.output_bytes, batch_size=self.batch_size, labels=self.labels)
        return False  # never swallow the service's exception


class _Stage:
    __slots__ = ("ev", "name", "t0")

    def __init__(self, ev: Inference, name: str) -> None:
        self.ev, self.name, self.t0 = ev, name, 0.0

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: Any) -> bool:
        now = time.perf_counter()
        self.ev.stages[self.name] = self.ev.stages.get(self.name, 0.0) + (now - self.t0)
        self.ev._mark = now
        return False


_default: Optional[Client] = None


def init(**kwargs: Any) -> Client:
    """Creates the process-wide default client used by :func:`monitor` without ``client=``."""
    global _default
    _default = Client(**kwargs)
    return _default


def monitor(model: str, version: str = "", endpoint: str = "", client: Optional[Client] = None) -> Callable:
    """Decorator recording an inference event per call (see :meth:`Client.monitor`)."""

    def wrap(fn: Callable) -> Callable:
        def pick() -> Client:
            c = client or _default
            if c is None:
                raise RuntimeError("modelwatch.monitor needs client= or modelwatch.init() first")
            return c

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def awrapper(*a: Any, **kw: Any) -> Any:
                with pick().inference(model, version=version, endpoint=endpoint):
                    return await fn(*a, **kw)
            return awrapper

        @functools.wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            with pick().inference(model, version=version, endpoint=endpoint):
                return fn(*a, **kw)
        return wrapper

    return wrap


_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class LoggingHandler(logging.Handler):
    """A :class:`logging.Handler` that ships records as structured logs: level, message, logger
    name, ``extra`` fields (``request_id`` and ``error_type`` are recognized), and the
    exception type as error type. Existing ``logging`` code works unchanged."""

    def __init__(self, client: Client, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.client = client

    def emit(self, record: logging.LogRecord) -> None:
        try:
            extra = {k: v for k, v in record.__dict__.items() if k not in _STD_ATTRS}
            rid = str(extra.pop("request_id", "") or "")
            err = str(extra.pop("error_type", "") or "")
            if not err and record.exc_info and record.exc_info[0] is not None:
                err = record.exc_info[0].__name__
            level = logging.getLevelName(record.levelno).lower()
            self.client.log(level, record.getMessage(), request_id=rid, error_type=err, logger=record.name, fields=extra)
        except Exception:  # a log handler must never break the service
            self.handleError(record)


# ---- background ----------------------------------------------------------------------------

class _Lane(threading.Thread):
    """One kind's queue, batches, stream and unacked window."""

    def __init__(self, client: Client, kind: str) -> None:
        super().__init__(name=f"modelwatch-{kind}", daemon=True)
        self.client = client
        self.kind = kind
        self.queue: Deque[tuple] = collections.deque()
        self.cond = threading.Condition()
        self.window: "collections.OrderedDict[int, Tuple[Any, int]]" = collections.OrderedDict()
        self.next_seq = 1
        self.sent = self.acked = self.retried = self.rejected = 0
        self.last_error = ""
        self._broken = threading.Event()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def run(self) -> None:
        c = self.client
        backoff = 0.05
        while not c._closing.is_set():
            # gRPC core sends a unix: target's path, percent-encoded, as :authority, which the
            # daemon's HTTP/2 stack (h2) refuses as malformed; any plain authority will do.
            opts = [("grpc.default_authority", "localhost")] if c.target.startswith("unix:") else []
            channel = (grpc.secure_channel(c.target, c._credentials, options=opts) if c._credentials
                       else grpc.insecure_channel(c.target, options=opts))
            try:
                stub = pb_grpc.IngestStub(channel)
                reg = stub.Register(pb.RegisterRequest(service=c.service, instance=c.instance, host=c.host, pid=c.pid,
                                                       client_id=c.client_id,
                                                       models=[pb.ModelRef(name=n, version=v) for n, v in c.models]),
                                     timeout=5, metadata=c._metadata)
                last = getattr(reg, f"last_{self.kind}_seq")
                with self.cond:
                    for seq in [s for s in self.window if s <= last]:
                        self.acked += self.window.pop(seq)[1]
                    self.next_seq = max(self.next_seq, last + 1)
                self._broken.clear()
                call = getattr(stub, {"metrics": "StreamMetrics", "logs": "StreamLogs", "events": "StreamEvents"}[self.kind])
                backoff = 0.05
                for ack in call(self._requests(), metadata=c._metadata):
                    with self.cond:
                        entry = self.window.pop(ack.seq, None)
                        if entry is not None:
                            self.acked += entry[1]
                            self.rejected += ack.rejected_count
                        self.cond.notify_all()
            except grpc.RpcError as e:
                self.last_error = f"{e.code().name}: {e.details()}" if hasattr(e, "code") else repr(e)
            except Exception as e:  # never let the lane die: log once per failure and retry
                logging.getLogger("modelwatch.client").debug("lane %s: %r", self.kind, e)
            finally:
                self._broken.set()
                channel.close()
            if c._closing.wait(backoff):
                return
            backoff = min(backoff * 2, c.max_backoff)

    def _requests(self) -> Iterator[Any]:
        c = self.client
        with self.cond:
            resend = [b for b, _ in self.window.values()]
            self.retried += sum(n for _, n in self.window.values())
        yield from resend
        last_cut = time.monotonic()
        while not self._broken.is_set() and not c._closing.is_set():
            with self.cond:
                while len(self.window) >= c.window and not self._broken.is_set() and not c._closing.is_set():
                    self.cond.wait(0.05)
            queued = len(self.queue)
            due = queued >= c.batch_size or (queued and (c._flushing.is_set() or time.monotonic() - last_cut >= c.linger))
            if not due:
                time.sleep(min(c.linger, 0.01))
                continue
            items = [self.queue.popleft() for _ in range(min(queued, c.batch_size))]
            batch = self._build(items)
            with self.cond:
                self.window[self.next_seq] = (batch, len(items))
                self.next_seq += 1
                self.sent += len(items)
            last_cut = time.monotonic()
            yield batch

    def _build(self, items: List[tuple]) -> Any:
        c, seq = self.client, self.next_seq
        if self.kind == "events":
            evs = []
            for (ts, model, version, endpoint, rid, status, err, latency, stages, pt, ct, ib, ob, bs, labels) in items:
                st = None
                if stages:
                    st = pb.Stages(**{f"{k}_us": max(1, int(v * 1e6)) for k, v in stages.items() if v})
                evs.append(pb.InferenceEvent(timestamp_ms=ts, model=model, model_version=version, endpoint=endpoint,
                                             request_id=rid, status=status, error_type=err,
                                             latency_us=max(0, int(latency * 1e6)), stages=st, prompt_tokens=pt,
                                             completion_tokens=ct, input_bytes=ib, output_bytes=ob, batch_size=bs,
                                             labels=labels or None))
            return pb.EventBatch(client_id=c.client_id, seq=seq, service=c.service, events=evs)
        if self.kind == "logs":
            recs = [pb.LogRecord(timestamp_ms=ts, level=lvl, message=msg, request_id=rid, error_type=err, logger=lg,
                                 fields={str(k): str(v) for k, v in fields.items()} if fields else None)
                    for (ts, lvl, msg, rid, err, lg, fields) in items]
            return pb.LogBatch(client_id=c.client_id, seq=seq, service=c.service, records=recs)
        # metrics: group by series; each series in time order with distinct timestamps
        series: Dict[Tuple[str, tuple], Tuple[int, Dict[int, float]]] = {}
        for name, labels, kind, ts, value in items:
            series.setdefault((name, labels), (kind, {}))[1][ts] = value
        out = []
        for (name, labels), (kind, points) in series.items():
            tss = sorted(points)
            out.append(pb.Series(name=name, labels=[pb.Label(name=k, value=str(v)) for k, v in labels], kind=kind,
                                 timestamps_ms=tss, values=[points[t] for t in tss]))
        return pb.MetricBatch(client_id=c.client_id, seq=seq, service=c.service, series=out)
