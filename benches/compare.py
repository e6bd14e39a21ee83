#!/usr/bin/env python3
"""modelwatch against VictoriaMetrics and Prometheus, same data, one run: `make bench-compare`.

Runs, in order, on this machine:
  1. acked ingest of the 10,000-series set (10,000 series x 300 samples) at K = 1, 2, 4, 8
     streams: modelwatch (`cargo bench --bench ingest`, acks after fsync) and the peers through
     ../shared/bench's remote-write client (run_vm_rw_bench.sh, run_prom_rw_bench.sh), each on a
     fresh server; samples/s, server CPU per million samples, server peak RSS;
  2. storage: the 1,000-series set (modelwatch's folder after a clean stop; VictoriaMetrics
     through vm_storage_bench.sh; Prometheus through `promtool tsdb create-blocks-from
     openmetrics`) and the 10,000-series set (modelwatch; VictoriaMetrics);
  3. unless --no-queries, the PromQL query set (`cargo bench --bench promql`), all three servers.
Prints a table of figures and ratios and writes it as JSON (--out, target/bench-compare.json).
Only ratios from one run count: throughputs here move by +-30% from run to run.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared", "bench"))
DATA = os.path.join(ROOT, "target", "bench-data")


def run(cmd, env=None, cwd=ROOT):
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    e = dict(os.environ, **(env or {}))
    p = subprocess.run(cmd, cwd=cwd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-4000:] + p.stderr[-4000:])
        raise SystemExit(f"{cmd[0]} failed with {p.returncode}")
    return p.stdout


def result_line(text, prefix="RESULT "):
    lines = [l for l in text.splitlines() if l.startswith(prefix)]
    if not lines:
        raise SystemExit(f"no {prefix!r} line in:\n{text[-2000:]}")
    return lines[-1][len(prefix):]


def datasets():
    os.makedirs(DATA, exist_ok=True)
    small, om, big = (os.path.join(DATA, n) for n in ("dataset.csv", "dataset.om", "ds10k.csv"))
    gen = os.path.join(SHARED, "gen_dataset.py")
    if not (os.path.exists(small) and os.path.exists(om)):
        run([sys.executable, gen, "--csv", small, "--om", om])
    if not os.path.exists(big):
        run([sys.executable, gen, "--series", "10000", "--samples", "300", "--csv", big, "--om", "/dev/null"])
    return small, om, big


def modelwatch_ingest(csv, k):
    out = run(["cargo", "bench", "--quiet", "--bench", "ingest", "--", "--csv", csv, "--streams", str(k)])
    r = json.loads(result_line(out))
    return {
        "samples_per_s": r["samples_per_s"],
        "cpu_s_per_Msample": r["daemon_cpu_s"] / r["samples"] * 1e6,
        "peak_rss_mib": r["peak_rss_bytes"] / 2**20,
        "bytes_per_sample": r["bytes_per_sample"],
        "samples": r["samples"],
    }


def peer_ingest(server, csv, k):
    script = "run_vm_rw_bench.sh" if server == "victoriametrics" else "run_prom_rw_bench.sh"
    with tempfile.TemporaryDirectory() as rw:
        # The peers' client is Python: the project's venv has protobuf and cramjam.
        env = {"RW": rw, "PATH": os.path.join(ROOT, ".venv", "bin") + os.pathsep + os.environ["PATH"]}
        run(["bash", os.path.join(SHARED, script), csv, "0", str(k), f"{server}-k{k}"], env=env)
        with open(os.path.join(rw, "results.jsonl")) as f:
            r = json.loads(f.read().strip().splitlines()[-1])
    if not r.get("verified"):
        raise SystemExit(f"{server} K={k}: the sample count did not verify: {r}")
    cpu = r.get("server_cpu_extra_s") or r.get("server_cpu_settle_s")
    hwm = r.get("server_vmhwm") or 0
    return {
        "samples_per_s": r["samples_per_s"],
        "cpu_s_per_Msample": cpu / r["samples"] * 1e6 if cpu else None,
        "peak_rss_mib": hwm / 2**20 if hwm else None,  # VmHWM, bytes
        "samples": r["samples"],
    }


def vm_storage(csv, tag):
    with tempfile.TemporaryDirectory() as work:
        out = run(["bash", os.path.join(SHARED, "vm_storage_bench.sh"), csv, tag], env={"WORK": work})
    m = re.search(r"data\+indexdb=\d+ B -> ([0-9.]+) B/sample", out)
    if not m:
        raise SystemExit(f"vm_storage_bench.sh printed no data+indexdb figure:\n{out[-2000:]}")
    return float(m.group(1))


def prom_storage(om, samples):
    with tempfile.TemporaryDirectory() as d:
        run(["promtool", "tsdb", "create-blocks-from", "openmetrics", om, d])
        total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(d) for f in fs)
    return total / samples


def ratio(a, b):
    return round(a / b, 2) if a is not None and b else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ks", default="1,2,4,8", help="stream counts (default 1,2,4,8)")
    ap.add_argument("--no-queries", action="store_true", help="leave out the PromQL query set (about 8 minutes)")
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "bench-compare.json"))
    a = ap.parse_args()
    small, om, big = datasets()
    run(["cargo", "bench", "--quiet", "--no-run", "--bench", "ingest", "--bench", "promql"])
    report = {"ingest": [], "storage": {}, "queries": None}

    for k in [int(x) for x in a.ks.split(",")]:
        row = {"streams": k}
        row["modelwatch"] = modelwatch_ingest(big, k)
        row["victoriametrics"] = peer_ingest("victoriametrics", big, k)
        row["prometheus"] = peer_ingest("prometheus", big, k)
        report["ingest"].append(row)

    mw_small = modelwatch_ingest(small, 4)
    report["storage"]["1k"] = {
        "samples": mw_small["samples"],
        "modelwatch": mw_small["bytes_per_sample"],
        "victoriametrics": vm_storage(small, "ds1k"),
        "prometheus": prom_storage(om, mw_small["samples"]),
    }
    k4 = next((r for r in report["ingest"] if r["streams"] == 4), report["ingest"][-1])
    report["storage"]["10k"] = {
        "samples": k4["modelwatch"]["samples"],
        "modelwatch": k4["modelwatch"]["bytes_per_sample"],
        "victoriametrics": vm_storage(big, "ds10k"),
        "prometheus": None,
    }
    if not a.no_queries:
        run(["cargo", "bench", "--quiet", "--bench", "promql", "--", "--runs", "7", "--rounds", "1"])
        with open(os.path.join(ROOT, "target", "bench-promql.json")) as f:
            report["queries"] = json.load(f)

    # The table.
    lines = ["| measure | modelwatch | VictoriaMetrics | Prometheus | / VM | / Prometheus |", "|---|---|---|---|---|---|"]
    for r in report["ingest"]:
        mw, vm, pr = r["modelwatch"], r["victoriametrics"], r["prometheus"]
        k = r["streams"]
        lines.append(f"| acked ingest, 10k x 300, K={k} (samples/s) | {mw['samples_per_s']:,.0f} | {vm['samples_per_s']:,.0f} | {pr['samples_per_s']:,.0f} | {ratio(mw['samples_per_s'], vm['samples_per_s'])} | {ratio(mw['samples_per_s'], pr['samples_per_s'])} |")
        fmt = lambda v, f: "-" if v is None else f.format(v)
        lines.append(f"| server CPU per M samples, K={k} (s) | {mw['cpu_s_per_Msample']:.2f} | {fmt(vm['cpu_s_per_Msample'], '{:.2f}')} | {fmt(pr['cpu_s_per_Msample'], '{:.2f}')} | {ratio(mw['cpu_s_per_Msample'], vm['cpu_s_per_Msample'])} | {ratio(mw['cpu_s_per_Msample'], pr['cpu_s_per_Msample'])} |")
        lines.append(f"| server peak RSS, K={k} (MiB) | {mw['peak_rss_mib']:.0f} | {fmt(vm['peak_rss_mib'], '{:.0f}')} | {fmt(pr['peak_rss_mib'], '{:.0f}')} | {ratio(mw['peak_rss_mib'], vm['peak_rss_mib'])} | {ratio(mw['peak_rss_mib'], pr['peak_rss_mib'])} |")
    for name, s in report["storage"].items():
        pr = "-" if s["prometheus"] is None else f"{s['prometheus']:.3f}"
        lines.append(f"| on disk, {name}-series set (bytes/sample) | {s['modelwatch']:.3f} | {s['victoriametrics']:.3f} | {pr} | {ratio(s['modelwatch'], s['victoriametrics'])} | {ratio(s['modelwatch'], s['prometheus'])} |")
    for q in report["queries"] or []:
        med = lambda v: sorted(v)[len(v) // 2]
        m, v, p = med(q["modelwatch_ms"]), med(q["victoriametrics_ms"]), med(q["prometheus_ms"])
        lines.append(f"| `{q['query']}` (ms) | {m:.1f} | {v:.1f} | {p:.1f} | {ratio(m, v)} | {ratio(m, p)} |")
    table = "\n".join(lines)
    print(table)
    report["table"] = table
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\n(written to {a.out})")


if __name__ == "__main__":
    main()
