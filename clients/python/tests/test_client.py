"""The Python client against the real daemon: each helper pushes, the stubs query back."""
import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import pytest

import modelwatch
from modelwatch.v1 import modelwatch_pb2 as pb
from modelwatch.v1 import modelwatch_pb2_grpc as pb_grpc

from conftest import Daemon

HERE = os.path.dirname(os.path.abspath(__file__))
LAST_HOUR = pb.TimeRange(last="1h")


def client_for(d, service="py", **kw):
    kw.setdefault("linger", 0.02)
    return modelwatch.Client(d.addr, service=service, models=[("mgeo", "3")], **kw)


def stats(d, **kw):
    return d.query.InferenceStats(pb.InferenceStatsRequest(range=LAST_HOUR, **kw))


def test_monitor_decorator_records_events_and_reraises(daemon):
    c = client_for(daemon)

    @c.monitor(model="mgeo", version="3")
    def geocode(i):
        if i % 4 == 0:
            raise ValueError("bad address")
        if i % 4 == 1:
            raise TimeoutError("slow upstream")
        return i

    raised = 0
    for i in range(100):
        try:
            geocode(i)
        except (ValueError, TimeoutError):
            raised += 1
    assert raised == 50, "the decorator re-raises"
    assert c.flush(30), c.stats()
    t = stats(daemon, model="mgeo").groups[0].total
    assert t.count == 100
    assert t.by_status["ok"] == 50 and t.by_status["error"] == 25 and t.by_status["timeout"] == 25
    assert t.by_error_type["ValueError"] == 25 and t.by_error_type["TimeoutError"] == 25
    c.close()


def test_context_manager_with_labels_and_stages(daemon):
    c = client_for(daemon, service="ocr")
    for i in range(20):
        with c.inference("card-detector", request_id=f"card-{i}", version="v2") as ev:
            ev.labels["card_type"] = "id_card" if i % 2 else "passport"
            with ev.stage("preprocess"):
                time.sleep(0.001)
            time.sleep(0.002)
            ev.mark("inference")
            ev.prompt_tokens, ev.completion_tokens = 10, 4
    assert c.flush(30)
    got = daemon.query.GetRequest(pb.GetRequestRequest(request_id="card-3"))
    assert len(got.events) == 1
    e = got.events[0]
    assert e.labels["card_type"] == "id_card" and e.model_version == "v2" and e.service == "ocr"
    assert e.stages.preprocess_us >= 1000 and e.stages.inference_us >= 2000
    assert e.latency_us >= e.stages.preprocess_us + e.stages.inference_us
    t = stats(daemon, service="ocr").groups[0].total
    assert t.count == 20 and t.prompt_tokens == 200
    assert t.stages["preprocess"].p50_ms >= 1.0
    c.close()


def test_logging_handler_ships_records_with_extra_fields(daemon):
    c = client_for(daemon)
    log = logging.getLogger("ocr.pipeline")
    log.setLevel(logging.DEBUG)
    handler = modelwatch.LoggingHandler(c, level=logging.INFO)
    log.addHandler(handler)
    try:
        log.debug("below the handler's level")
        log.warning("slow card %s", "A-1", extra={"request_id": "lr-1", "card_type": "passport"})
        try:
            raise KeyError("x")
        except KeyError:
            log.exception("lookup failed", extra={"request_id": "lr-1"})
    finally:
        log.removeHandler(handler)
    assert c.flush(30)
    got = daemon.query.GetRequest(pb.GetRequestRequest(request_id="lr-1"))
    msgs = sorted((r.message, r.level, r.error_type) for r in got.logs)
    assert msgs == [("lookup failed", pb.LEVEL_ERROR, "KeyError"), ("slow card A-1", pb.LEVEL_WARN, "")]
    warn = [r for r in got.logs if r.level == pb.LEVEL_WARN][0]
    assert warn.fields["card_type"] == "passport" and warn.logger == "ocr.pipeline" and warn.service == "py"
    c.close()


def test_metrics_from_threads_and_asyncio(daemon):
    c = client_for(daemon)

    def worker(n):
        for i in range(500):
            c.gauge("queue_depth", i, {"worker": str(n)})
            c.event("mgeo", 0.001)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()

    async def coro():
        @modelwatch.monitor(model="async-model", client=c)
        async def infer(x):
            await asyncio.sleep(0)
            return x * 2

        results = await asyncio.gather(*(infer(i) for i in range(200)))
        assert results[10] == 20
        return await c.aflush(30)

    assert asyncio.run(coro())
    for t in threads:
        t.join()
    c.counter("requests_total", 7, {"route": "/a"})
    assert c.flush(30)
    s = c.stats()
    assert s["dropped"] == 0 and s["acked"] == s["enqueued"] == 4 * 1000 + 200 + 1, s
    assert stats(daemon, model="mgeo").groups[0].total.count == 2000
    assert stats(daemon, model="async-model").groups[0].total.count == 200
    r = daemon.query.QueryRange(pb.QueryRangeRequest(selector='queue_depth{worker="2"}', range=LAST_HOUR, step="2h",
                                                      aggregation=pb.AGGREGATION_MAX))
    assert r.series[0].points[0].value == 499 and r.series[0].labels["service"] == "py"
    c.close()


def test_daemon_stopped_mid_stream_loses_nothing_acked(data_dir):
    d = Daemon(data_dir)
    addr = d.addr
    c = modelwatch.Client(addr, service="resilient", linger=0.02, window=4, max_backoff=0.2)
    errors = []

    def service():
        try:
            for i in range(5000):
                c.event("resilient-model", 0.001, request_id=f"e{i}")
                if i % 100 == 0:
                    time.sleep(0.005)
        except Exception as e:  # the client must never raise into the service
            errors.append(e)

    t = threading.Thread(target=service)
    t.start()
    time.sleep(0.1)
    d.kill9()
    time.sleep(0.3)
    d = Daemon(data_dir, listen=addr)
    t.join()
    assert not errors
    assert c.flush(60), c.stats()
    s = c.stats()
    assert s["enqueued"] == 5000 and s["acked"] == 5000 and s["dropped"] == 0, s
    assert stats(d, model="resilient-model").groups[0].total.count == 5000, "every event stored once"
    for i in range(0, 5000, 499):
        assert len(d.query.GetRequest(pb.GetRequestRequest(request_id=f"e{i}")).events) == 1
    c.close()
    d.stop()


def test_full_queue_drops_and_counts_without_blocking():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    c = modelwatch.Client(f"127.0.0.1:{port}", service="offline", queue_size=10)
    for i in range(100):
        c.event("m", 0.001)
        c.log("info", "x")
    st = c.stats()
    assert (st["enqueued"], st["dropped"], st["acked"]) == (20, 180, 0), st
    assert not c.flush(0.1)
    c.close(0.1)


def test_monitor_needs_a_client():
    @modelwatch.monitor(model="nobody")
    def f():
        return 1

    if modelwatch.client._default is None:
        with pytest.raises(RuntimeError):
            f()


def test_checked_in_stubs_are_fresh():
    r = subprocess.run([sys.executable, os.path.join(HERE, "..", "generate.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_init_models_give_events_their_version(daemon):
    c = modelwatch.Client(daemon.addr, service="ver", models=[("card-detector", "v2")], linger=0.02)
    with c.inference("card-detector", request_id="rv-1"):
        pass
    c.event("card-detector", 0.01, version="v3")
    assert c.flush(10)
    r = stats(daemon, service="ver", group_by=["model_version"])
    versions = sorted(dict(g.key)["model_version"] for g in r.groups)
    assert versions == ["v2", "v3"], versions
    c.close()


def test_close_with_the_daemon_down_says_what_was_left(caplog):
    # A port nothing listens on.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    c = modelwatch.Client(f"127.0.0.1:{port}", service="down", linger=0.01)
    for i in range(25):
        c.event("m", 0.001)
    with caplog.at_level(logging.WARNING, logger="modelwatch.client"):
        assert c.close(timeout=0.5) is False
    text = caplog.text
    assert "25 item(s) not acknowledged" in text and f"127.0.0.1:{port}" in text, text


def test_tokens_and_the_local_socket(data_dir):
    """A daemon with tokens: the client's ingest token is sent on every call, a client without
    one is refused and says so, and over the local socket no token is needed to push."""
    import hashlib
    token = "py-ingest-token"
    tokens = os.path.join(data_dir, "tokens.toml")
    with open(tokens, "w") as f:
        for name, tok, role in (("py", token, "ingest"), ("reader", "py-query-token", "query")):
            f.write(f'[[token]]\nname = "{name}"\nsha256 = "{hashlib.sha256(tok.encode()).hexdigest()}"\nrole = "{role}"\n')
    sock = os.path.join(data_dir, "ingest.sock")
    d = Daemon(os.path.join(data_dir, "data"), env_extra={"MODELWATCH__SERVER__TOKENS_FILE": tokens,
                                                          "MODELWATCH__SERVER__UNIX_SOCKET": sock})
    try:
        auth = (("authorization", "Bearer py-query-token"),)
        with_token = client_for(d, token=token)
        over_socket = modelwatch.Client(f"unix:{sock}", service="py", linger=0.02)
        without = client_for(d)
        for c, model in ((with_token, "tcp"), (over_socket, "socket"), (without, "refused")):
            with c.inference(model=model):
                pass
        assert with_token.flush(30), with_token.stats()
        assert over_socket.flush(30), over_socket.stats()
        assert not without.flush(1)
        assert any("UNAUTHENTICATED" in lane.last_error for lane in without._lanes.values())
        without.close(0.1)
        for model, n in (("tcp", 1), ("socket", 1), ("refused", 0)):
            r = d.query.InferenceStats(pb.InferenceStatsRequest(range=LAST_HOUR, model=model), metadata=auth)
            assert sum(g.total.count for g in r.groups) == n, (model, r)
        with_token.close()
        over_socket.close()
    finally:
        d.stop()


def test_mutual_tls(data_dir):
    """Over TLS with a client certificate (made here with openssl): the client pushes, a
    client without a certificate does not get through."""
    import shutil as _shutil
    if not _shutil.which("openssl"):
        assert not os.environ.get("CI"), "openssl is required in CI (.ci/run installs it)"
        pytest.skip("openssl not installed")
    pki = os.path.join(data_dir, "pki")
    os.makedirs(pki)

    def sh(*args, ext=None):
        cmd = ["openssl", *args]
        if ext:
            path = os.path.join(pki, "ext.cnf")
            with open(path, "w") as f:
                f.write(ext)
            cmd += ["-extfile", path]
        subprocess.run(cmd, cwd=pki, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    sh("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=test-ca")
    for name, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        sh("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        sh("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
           "-out", f"{name}.pem", "-days", "1",
           ext=f"subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n")
    read = lambda n: open(os.path.join(pki, n), "rb").read()
    d = Daemon(os.path.join(data_dir, "data"), env_extra={
        "MODELWATCH__SERVER__TLS_CERT_FILE": os.path.join(pki, "server.pem"),
        "MODELWATCH__SERVER__TLS_KEY_FILE": os.path.join(pki, "server.key"),
        "MODELWATCH__SERVER__TLS_CLIENT_CA_FILE": os.path.join(pki, "ca.pem")})
    try:
        c = client_for(d, root_certificates=read("ca.pem"), client_cert=(read("client.pem"), read("client.key")))
        anonymous = client_for(d, tls=True, root_certificates=read("ca.pem"))
        for client, model in ((c, "tls"), (anonymous, "no-cert")):
            with client.inference(model=model):
                pass
        assert c.flush(30), c.stats()
        assert not anonymous.flush(1)
        anonymous.close(0.1)
        c.close()
        creds = grpc.ssl_channel_credentials(read("ca.pem"), read("client.key"), read("client.pem"))
        with grpc.secure_channel(d.addr, creds) as ch:
            q = pb_grpc.QueryStub(ch)
            for model, n in (("tls", 1), ("no-cert", 0)):
                r = q.InferenceStats(pb.InferenceStatsRequest(range=LAST_HOUR, model=model))
                assert sum(g.total.count for g in r.groups) == n, (model, r)
    finally:
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=60) == 0


def test_clients_of_one_service_made_together_have_their_own_ids():
    # Same service, same process, same millisecond: a shared id would have the daemon ack the
    # second client's batches as duplicates of the first's and store them once.
    clients = [modelwatch.Client("127.0.0.1:1", service="same", linger=0.01) for _ in range(20)]
    assert len({c.client_id for c in clients}) == len(clients)
    for c in clients:
        c.close(0.05)
