#!/usr/bin/env python3
"""Latency of an uncontended write+close on running nsyncfs mounts.

Starts nothing: give it the mount points of nodes that are already up. For
each mount, N times: open (O_WRONLY|O_CREAT|O_TRUNC), write SIZE bytes, close,
timed with time.perf_counter; reports the median and p90 of each step and of
the whole. close() returns once the file is complete and its announce is
queued; the commit follows (see "commit" below).

With MOUNT=LOG (the node's log file, the node run with --log-level debug),
it also splits the time from nsyncfs's own debug lines written during the
run: "lock" (LOCK through raft plus the version wait, from the open line; a
few microseconds for a new file, which does not wait for the lock), "hash"
(from the announce line) and "commit" (from queueing the ANNOUNCE to its
commit, after close() returned).

  scripts/write-latency.py [-n 1000] [--size 4096] [--mode existing|new] \\
      /tmp/m1[=/tmp/node1.log] /tmp/m2 ...
"""
import argparse
import json
import os
import re
import statistics
import sys
import time

OPEN_RE = re.compile(rb"open (\S+) flags \S+(?: \((?:fresh )?create\))?, lock (\d+) us")
ANN_RE = re.compile(rb"announce (\S+): (\d+) bytes, hash (\d+) us, queued in")
COMMIT_RE = re.compile(rb"announce (\S+) committed after (\d+) us")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def summary(xs):
    return {"median_us": round(statistics.median(xs), 1), "p90_us": round(pct(xs, 90), 1),
            "n": len(xs)}


def run(mount, n, size, mode, tag):
    data = os.urandom(size)
    sub = os.path.join(mount, f"write-latency-{tag}")
    os.makedirs(sub, exist_ok=True)
    steps = {"open": [], "write": [], "close": [], "total": []}
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    for i in range(n):
        p = os.path.join(sub, f"f{i}" if mode == "new" else "f")
        t0 = time.perf_counter()
        fd = os.open(p, flags, 0o644)
        t1 = time.perf_counter()
        os.write(fd, data)
        t2 = time.perf_counter()
        os.close(fd)
        t3 = time.perf_counter()
        for k, v in (("open", t1 - t0), ("write", t2 - t1), ("close", t3 - t2),
                     ("total", t3 - t0)):
            steps[k].append(v * 1e6)
    return sub, {k: summary(v) for k, v in steps.items()}


def split_from_log(log, offset, relprefix):
    with open(log, "rb") as f:
        f.seek(offset)
        text = f.read()
    lock, hsh, commit = [], [], []
    for m in OPEN_RE.finditer(text):
        if m.group(1).startswith(relprefix):
            lock.append(int(m.group(2)))
    for m in ANN_RE.finditer(text):
        if m.group(1).startswith(relprefix):
            hsh.append(int(m.group(3)))
    for m in COMMIT_RE.finditer(text):
        if m.group(1).startswith(relprefix):
            commit.append(int(m.group(2)))
    out = {}
    for k, v in (("lock", lock), ("hash", hsh), ("commit", commit)):
        if v:
            out[k] = summary(v)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mounts", nargs="+", help="MOUNT or MOUNT=NODE_LOG")
    ap.add_argument("-n", type=int, default=1000, help="iterations per mount (1000)")
    ap.add_argument("--size", type=int, default=4096, help="bytes per write (4096)")
    ap.add_argument("--mode", choices=("existing", "new"), default="existing",
                    help="rewrite one file, or create a new file each time")
    ap.add_argument("--keep", action="store_true", help="leave the files behind")
    a = ap.parse_args()
    results = {}
    for spec in a.mounts:
        mount, _, log = spec.partition("=")
        if not os.path.ismount(mount):
            sys.exit(f"{mount} is not a mount point")
        tag = f"{os.getpid()}-{len(results)}"
        offset = os.path.getsize(log) if log else 0
        sub, res = run(mount, a.n, a.size, a.mode, tag)
        if log:
            time.sleep(0.2)  # let the node's last log lines reach the file
            res["from_log"] = split_from_log(log, offset, os.path.relpath(sub, mount).encode())
        if not a.keep:
            for name in os.listdir(sub):
                os.unlink(os.path.join(sub, name))
            os.rmdir(sub)
        results[mount] = res
        line = "  ".join(f"{k} {v['median_us']:.0f}" for k, v in res.items() if k != "from_log")
        extra = "  ".join(f"{k} {v['median_us']:.0f}" for k, v in res.get("from_log", {}).items())
        print(f"{mount}: median us: {line}" + (f"  | node: {extra}" if extra else ""),
              file=sys.stderr)
    print(json.dumps({"n": a.n, "size": a.size, "mode": a.mode, "results": results}, indent=1))


if __name__ == "__main__":
    main()
