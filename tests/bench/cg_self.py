#!/usr/bin/env python3
"""Self cost (instructions, Ir) per function from a callgrind output file.

    cg_self.py CALLGRIND_OUT [--requests N] [--top K]

With --requests, also prints instructions per request (total Ir / N) and each
function's share per request. Written because callgrind_annotate 3.19 charges
every instruction to `main` for a dump taken with `callgrind_control -d` after
`callgrind_control -z` (docs/benchmarks.md, Profiling). Stdlib only.
"""
import collections
import re
import sys


def parse(path):
    names = {}
    obs = {}
    self_cost = collections.Counter()
    ob_cost = collections.Counter()
    cur = None
    cur_ob = None
    skip_next_cost = False  # the cost line after `calls=` is inclusive cost of the callee
    summary = None
    name_re = re.compile(r"\((\d+)\)(?: (.*))?")
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("summary:"):
                summary = int(line.split()[1])
                continue
            key, sep, rest = line.rstrip("\n").partition("=")
            if sep and key in ("fn", "cfn", "cfi", "cob", "ob", "fl", "fi", "fe"):
                if key in ("ob", "cob"):
                    m = name_re.match(rest)
                    if m and m.group(2):
                        obs[m.group(1)] = m.group(2)
                    if key == "ob":
                        cur_ob = obs.get(m.group(1), rest) if m else rest
                    continue
                if key in ("fn", "cfn"):
                    m = name_re.match(rest)
                    if m:
                        if m.group(2):
                            names[m.group(1)] = m.group(2)
                        if key == "fn":
                            cur = names.get(m.group(1), m.group(1))
                    elif key == "fn":
                        cur = rest
                continue
            if key == "calls" and sep:
                skip_next_cost = True
                continue
            if line[:1].isdigit() or line[:1] in "+-*":
                parts = line.split()
                if len(parts) >= 2:
                    if skip_next_cost:
                        skip_next_cost = False
                        continue
                    self_cost[cur] += int(parts[1])
                    ob_cost[cur_ob] += int(parts[1])
    return self_cost, summary, ob_cost


def main(argv):
    args = list(argv)
    requests = None
    top = 30
    if "--requests" in args:
        i = args.index("--requests")
        requests = int(args[i + 1])
        del args[i : i + 2]
    if "--top" in args:
        i = args.index("--top")
        top = int(args[i + 1])
        del args[i : i + 2]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    self_cost, summary, ob_cost = parse(args[0])
    total = sum(self_cost.values())
    print(f"total Ir {total:,}" + (f" (summary {summary:,})" if summary is not None else ""))
    if requests:
        print(f"requests {requests:,}: {total / requests:,.0f} instructions per request")
    print("by object:")
    for ob, c in ob_cost.most_common():
        per = f"  {c / requests:10,.0f}/req" if requests else ""
        print(f"{100.0 * c / total:6.2f}% {c:15,}{per}  {ob}")
    print("by function:")
    for fn, c in self_cost.most_common(top):
        per = f"  {c / requests:10,.0f}/req" if requests else ""
        print(f"{100.0 * c / total:6.2f}% {c:15,}{per}  {fn}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
