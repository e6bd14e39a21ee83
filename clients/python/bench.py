#!/usr/bin/env python3
"""Python client benchmark against a real daemon: the cost of a recorded event on the caller's
thread (median of rounds of 1,000 calls), and end-to-end acked events/s from one process.

    python3 clients/python/bench.py [--events N] [--bin target/release/modelwatch]
"""
import argparse
import os
import signal
import statistics
import subprocess
import tempfile
import time

import modelwatch

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "modelwatch"))
    a = ap.parse_args()
    data = tempfile.mkdtemp(prefix="mw-pybench-")
    env = dict(os.environ, MODELWATCH_LOG="warn", MODELWATCH__SAMPLING__HOST_INTERVAL="0s", MODELWATCH__SAMPLING__SELF_INTERVAL="0s", MODELWATCH__SAMPLING__GPU="off")
    proc = subprocess.Popen([a.bin, "serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir", data], stdout=subprocess.PIPE, env=env, text=True)
    addr = proc.stdout.readline().split()[-1]
    c = modelwatch.Client(addr, service="bench", queue_size=2_000_000, batch_size=5_000, window=16)

    rounds_event, rounds_ctx = [], []
    for _ in range(200):
        t = time.perf_counter_ns()
        for _ in range(1000):
            c.event("m", 0.0012, version="1")
        rounds_event.append((time.perf_counter_ns() - t) / 1000)
        t = time.perf_counter_ns()
        for _ in range(1000):
            with c.inference("m") as ev:
                ev.labels["k"] = "v"
        rounds_ctx.append((time.perf_counter_ns() - t) / 1000)
    assert c.flush(120), c.stats()

    t = time.perf_counter()
    for i in range(a.events):
        c.event("m", 0.001)
    enqueue = time.perf_counter() - t
    assert c.flush(600), c.stats()
    total = time.perf_counter() - t
    c.close()
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    ev_ns, ctx_ns = statistics.median(rounds_event), statistics.median(rounds_ctx)
    print("modelwatch Python client benchmark")
    print(f"  caller cost, client.event(...)           median {ev_ns / 1000:.2f} us per call")
    print(f"  caller cost, with client.inference(...)  median {ctx_ns / 1000:.2f} us per call")
    print(f"  end to end: {a.events} events enqueued in {enqueue:.2f} s, all acked after {total:.2f} s = {a.events / total:.0f} events/s")
    print(f'RESULT {{"event_us": {ev_ns / 1000:.2f}, "inference_us": {ctx_ns / 1000:.2f}, "events_per_s": {a.events / total:.0f}}}')


if __name__ == "__main__":
    main()
