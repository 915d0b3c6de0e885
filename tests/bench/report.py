#!/usr/bin/env python3
"""Turn a bench run's results.csv (+ meta.txt) into results.md and print it.

    report.py [--smoke] OUT_DIR

--smoke: exit 1 unless results.csv/results.md exist, every row's value is > 0
and every referenced raw file exists (no machine-dependent thresholds).
Called by tests/bench/run.sh; stdlib only.
"""
import csv
import os
import sys


def fmt_num(v):
    if v in ("", None):
        return ""
    try:
        x = float(v)
    except ValueError:
        return v
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.2f}" if abs(x) >= 1 or x == 0 else f"{x:.3f}"


def body(v):
    if not v:
        return ""
    n = int(v)
    return f"{n // 1024} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


def main(argv):
    smoke = "--smoke" in argv
    args = [a for a in argv if a != "--smoke"]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = args[0]
    csv_path = os.path.join(out, "results.csv")
    md_path = os.path.join(out, "results.md")
    meta_path = os.path.join(out, "meta.txt")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    meta = open(meta_path).read().strip() if os.path.exists(meta_path) else ""

    header = ["stage", "case", "body", "conc.", "value", "unit", "p50 ms", "p99 ms",
              "limit", "ratio", "target", "met", "errors"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["stage"], r["case"], body(r["body_bytes"]), r["connections"],
                 fmt_num(r["value"]), r["unit"], fmt_num(r["p50_ms"]), fmt_num(r["p99_ms"]),
                 fmt_num(r["limit"]), r["ratio"], r["target"], r["met"], r["errors"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    table = "\n".join(lines)

    md = [
        "# cfaas benchmark results",
        "",
        "```",
        meta,
        "```",
        "",
        table,
        "",
        "- `value`: req/s (wrk), msg/s (bench_js_publish, publish to ack), calls/s (drain:",
        "  invocations seen by the function, first to last), MB (VmHWM).",
        "- `limit`/`ratio`: the figure this row is compared with (sync: direct upstream;",
        "  async: raw nats.c async publish at the higher max_pending; drain 2 workers: 1 worker).",
        "- `conc.`: wrk connections, publishes in flight, or worker max_inflight.",
        "- `errors`: non-2xx + socket errors (wrk), failed publishes, or drain calls",
        "  missing/duplicated/left in the stream. Targets are reported, not enforced.",
        "- Raw tool output: `raw/`; process logs: `logs/`.",
        "",
    ]
    with open(md_path, "w") as f:
        f.write("\n".join(md))
    print(table)
    print(f"\nwritten: {md_path}\n         {csv_path}")

    if not smoke:
        return 0
    failures = []
    if not rows:
        failures.append("results.csv has no rows")
    for r in rows:
        try:
            ok = float(r["value"]) > 0
        except ValueError:
            ok = False
        if not ok:
            failures.append(f"{r['stage']} / {r['case']} / {r['body_bytes']}: value {r['value']!r} is not > 0")
        if r["raw"] and not os.path.exists(os.path.join(out, r["raw"])):
            failures.append(f"missing raw file {r['raw']}")
        if r["errors"] not in ("", "0"):
            print(f"warning: {r['stage']} / {r['case']}: {r['errors']} errors", file=sys.stderr)
    for p in (csv_path, md_path):
        if not os.path.exists(p) or os.path.getsize(p) == 0:
            failures.append(f"missing or empty {p}")
    if failures:
        print("SMOKE FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print(f"smoke OK: {len(rows)} figures, all > 0")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
