"""A backfill of sparse inference events, then a restart (a benchmark, not a test).

    .venv/bin/python benches/backfill.py [--days 29] [--settle 600]

Starts `target/release/modelwatch serve` on a fresh folder, sends DAYS of events for 40 groups
(4 services x 2 models x 5 endpoints), one event a group every 30 s with five stage latencies,
as backfill batches of 20,000 through the Python client's stubs, waits SETTLE seconds (the
checkpoints pack the finished hours), stops the daemon, starts it again and reads the open's
phases from its log. Prints one RESULT line of JSON: events/s acked, the daemon's peak RSS,
the folder's sled and block bytes, the open's milliseconds.
"""
import argparse, json, os, random, re, signal, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
import grpc  # noqa: E402
from modelwatch.v1 import modelwatch_pb2 as pb, modelwatch_pb2_grpc as pg  # noqa: E402

BIN = os.path.join(ROOT, "target", "release", "modelwatch")


def start(folder, log):
    out = open(log, "w")
    p = subprocess.Popen([BIN, "serve", "--data-dir", folder, "--listen", "127.0.0.1:0",
                          "--http-listen", "127.0.0.1:0"], stdout=out, stderr=subprocess.STDOUT)
    for _ in range(6000):
        text = open(log).read()
        m = re.search(r"^listening on (\S+)", text, re.M)
        if m and "http listening" in text:
            return p, m.group(1)
        if p.poll() is not None:
            raise SystemExit(f"the daemon exited:\n{text[-2000:]}")
        time.sleep(0.1)
    raise SystemExit("the daemon did not start listening in 10 minutes")


def stop(p):
    p.send_signal(signal.SIGTERM)
    if p.wait(timeout=600) != 0:
        raise SystemExit(f"the daemon exited with {p.returncode}")


def du(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--days", type=int, default=29)
    a.add_argument("--settle", type=int, default=600)
    a = a.parse_args()
    if not os.path.exists(BIN):
        raise SystemExit(f"{BIN} is missing: cargo build --release")
    work = tempfile.mkdtemp(prefix="mw-backfill-")
    folder = os.path.join(work, "data")
    p, addr = start(folder, os.path.join(work, "first.log"))
    stub = pg.IngestStub(grpc.insecure_channel(addr, options=[("grpc.max_send_message_length", 1 << 28)]))
    r = random.Random(1)
    now = int(time.time() * 1000)
    groups = [(f"svc-{s}", f"model-{m}", f"/v1/e{e}") for s in range(4) for m in range(2) for e in range(5)]
    sent, refused, batch = 0, 0, []
    t0 = time.time()

    def push(batch):
        nonlocal refused
        while True:
            try:
                stub.Push(pb.PushRequest(events=pb.EventBatch(events=batch, backfill=True)), timeout=300)
                return
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                refused += 1
                time.sleep(1)

    t = now - a.days * 86_400_000
    while t < now - 60_000:
        for (s, m, e) in groups:
            lat = 1000 + r.randrange(200_000)
            ev = pb.InferenceEvent(timestamp_ms=t + r.randrange(30_000), service=s, model=m, endpoint=e,
                                   status=pb.STATUS_OK if r.random() < 0.97 else pb.STATUS_ERROR, latency_us=lat)
            ev.stages.queue_us, ev.stages.preprocess_us = lat // 10, lat // 20
            ev.stages.inference_us, ev.stages.postprocess_us = lat // 2, lat // 30
            ev.stages.time_to_first_token_us = lat // 5
            batch.append(ev)
        t += 30_000
        if len(batch) >= 20_000:
            push(batch)
            sent, batch = sent + len(batch), []
    if batch:
        push(batch)
        sent += len(batch)
    took = time.time() - t0
    hwm = int(re.search(r"VmHWM:\s+(\d+)", open(f"/proc/{p.pid}/status").read()).group(1)) * 1024
    time.sleep(a.settle)
    stop(p)
    sled, blocks = du(os.path.join(folder, "db")), du(os.path.join(folder, "blocks"))
    log = os.path.join(work, "second.log")
    p, _ = start(folder, log)
    opened = re.search(r"store opened sled_ms=(\d+) load_ms=(\d+) replay_ms=(\d+) finish_ms=(\d+)", open(log).read())
    stop(p)
    print("RESULT " + json.dumps({
        "events": sent, "events_per_s": round(sent / took), "refused_pushes": refused,
        "peak_rss_bytes": hwm, "sled_bytes": sled, "block_bytes": blocks,
        "open_ms": {k: int(v) for k, v in zip(["sled", "load", "replay", "finish"], opened.groups())},
    }))
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
