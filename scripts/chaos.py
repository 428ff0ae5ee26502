#!/usr/bin/env python3
"""Fault campaign for nsyncfs: kill -9 nodes, cut them off the network and
pause them, under load, and check that no acknowledged change is lost.

    scripts/chaos.py ROUNDS [--nodes 3] [--writers 2] [--seed S] [--max-seconds S]
                            [--faults kill,partition,pause] [--keep] [--log-level info]
    scripts/chaos.py 0 --soak-minutes M ...

A 3-node cluster runs in a temp directory (tests/integration/nsynctest.py's
Cluster). Writer threads, bound to one node each, create, rewrite, rename and
delete files in their own namespace (w<node>-<thread>/), so the expected final
state is deterministic. Each round picks one node (sometimes the leader) and
one fault: kill (SIGKILL, writers on the other nodes go on, restart, its
writers go on as well), partition (every link of the node cut with nftables,
tests/integration/netcut.py, while its own writers keep trying: they must get
clean errors; heal), or pause (SIGSTOP for longer than the lock lease, then
SIGCONT). A third of the writes fsync before close.

An operation counts as acknowledged only when its syscall returned success
(close() for a write, rename(), unlink()); its effect goes into the expected
state (path -> bytes, or absent). An operation that failed makes the paths it
touched "uncertain" until a later acknowledged operation sets them again.

At the end: the writers stop, every node's tree must become identical
(bounded), and every certain path must hold its expected bytes (or be absent)
on every node. Prints rounds survived, files checked and lost changes; exits 0
only if there was no lost change, no divergence and no anomaly.

With --soak-minutes M the rounds are paced one per minute for M minutes
(writers never stop in between), and each minute it samples every node's
RSS and raft directory size; the report adds those series and the longest
stall of a writer (the longest gap between two acknowledged operations of
one writer while its node was neither down nor faulted).

Every wait is bounded; the whole run too (--max-seconds). Nodes and mounts are
always cleaned up, also on Ctrl-C. The temp directory (logs) is removed on
success and kept on failure.
"""
import argparse
import errno
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

import nsynctest  # noqa: E402
from netcut import NetCut  # noqa: E402
from nsynctest import BINARY, Cluster, WaitTimeout, logs_report, read_bytes, wait_for  # noqa: E402

NAMES = [f"f{k}" for k in range(10)] + [f"s/g{k}" for k in range(4)]
ACKS_PER_PHASE = (10, 80)    # each phase waits for this many acks per live node (random in range)
PHASE_TIMEOUT = 30.0         # ... within this many seconds, else writes are stalled: failure
IDLE_TIMEOUT = 30.0          # a killed node's writers must notice within this
CONVERGE_TIMEOUT = 90.0      # final: identical trees on every node
WRITER_JOIN_TIMEOUT = 40.0   # final: writers must return from their last syscall
LEASE_S = 3                  # -o lease: a pause round outlasts it


def log(msg):
    print(f"chaos [{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Stop(Exception):
    pass


class NodeGate:
    """Whether writers may use a node's mount, and how many operations are in
    flight on it. The killer closes the gate, kills the node, and waits until
    nothing is in flight before it clears the stale mount (else a writer could
    write into the bare directory under it)."""

    def __init__(self):
        self.cv = threading.Condition()
        self.up = False
        self.inflight = 0
        self.acks = 0
        self.faulted = False  # cut off or paused: its errors are expected
        self.epoch = 0        # counts changes of up/faulted: stalls are measured within one

    def enter(self, stop):
        with self.cv:
            while not self.up:
                if stop.is_set():
                    raise Stop()
                self.cv.wait(0.1)
            self.inflight += 1

    def leave(self, acked):
        with self.cv:
            self.inflight -= 1
            if acked:
                self.acks += 1
            self.cv.notify_all()

    def open(self):
        with self.cv:
            self.up = True
            self.epoch += 1
            self.cv.notify_all()

    def close(self):
        with self.cv:
            self.up = False
            self.epoch += 1

    def set_faulted(self, on):
        with self.cv:
            self.faulted = on
            self.epoch += 1

    def wait_idle(self, timeout):
        deadline = time.monotonic() + timeout
        with self.cv:
            while self.inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cv.wait(left)
        return True


class Writer(threading.Thread):
    """Creates, rewrites, renames and deletes the files of its namespace
    through one node's mount, and keeps the expected state of that namespace."""

    def __init__(self, cluster, node, tid, gate, stop, seed):
        super().__init__(name=f"w{node}-{tid}", daemon=True)
        self.c = cluster
        self.node = node
        self.ns = f"w{node}-{tid}"
        self.gate = gate
        self.stop = stop
        self.rnd = random.Random(seed)
        # path (relative to the mount root) -> bytes, or None for absent
        self.expected = {f"{self.ns}/{n}": None for n in NAMES}
        self.uncertain = set()
        self.uncertain_before = set()  # as it was when the current operation started
        self.seq = 0
        self.acked = 0
        self.fsyncs = 0
        self.last_ack = None      # (monotonic time, gate epoch) of the last acknowledged op
        self.max_stall = (0.0, "")
        self.failed = 0
        self.errors = {}          # errno name -> count
        self.anomalies = []       # results that contradict acknowledged state
        self.live_errors = []     # failures on a node that was not being killed
        self.crash = None

    # -------------------------------------------------------------- helpers

    def p(self, rel):
        return str(self.c.node(self.node).path(rel))

    def content(self, rel):
        self.seq += 1
        head = f"{rel} #{self.seq} {time.time():.6f}\n".encode()
        r = self.rnd.random()
        size = (self.rnd.randint(0, 2000) if r < 0.8 else
                self.rnd.randint(2000, 64 * 1024) if r < 0.97 else
                self.rnd.randint(256 * 1024, 1024 * 1024))
        return head + self.rnd.randbytes(size)

    def note_error(self, e, paths, op):
        name = errno.errorcode.get(e.errno, str(e.errno)) if isinstance(e, OSError) else type(e).__name__
        self.errors[name] = self.errors.get(name, 0) + 1
        self.failed += 1
        self.uncertain.update(paths)
        if self.gate.up and not self.gate.faulted:
            # The node was not being killed: design §8 wants in-flight writes
            # to ride out a leader change, so say which operation failed.
            self.live_errors.append(f"{time.strftime('%H:%M:%S')} node {self.node} "
                                    f"{op} {' -> '.join(paths)}: {name} ({e})")
        # ENOENT for a path we know is present is not a crash artefact.
        if (isinstance(e, OSError) and e.errno == errno.ENOENT and op in ("rename", "unlink")
                and paths[0] not in self.uncertain_before
                and self.expected.get(paths[0]) is not None):
            self.anomalies.append(f"{op} {paths[0]} on node {self.node}: ENOENT, but it was "
                                  f"written and acknowledged ({len(self.expected[paths[0]])} bytes)")

    # -------------------------------------------------------------- operations

    def op_write(self, rel):
        data = self.content(rel)
        fd = os.open(self.p(rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if self.rnd.random() < 0.33:
                os.fsync(fd)
                self.fsyncs += 1
        except BaseException:
            try:
                os.close(fd)
            except OSError:
                pass
            raise
        os.close(fd)  # the acknowledgement
        self.expected[rel] = data
        self.uncertain.discard(rel)

    def op_rename(self, src, dst):
        os.rename(self.p(src), self.p(dst))
        self.expected[dst] = self.expected[src]
        self.expected[src] = None
        if src in self.uncertain:
            self.uncertain.add(dst)        # moved bytes we were unsure of
        else:
            self.uncertain.discard(dst)
        self.uncertain.discard(src)        # src is now certainly absent

    def op_unlink(self, rel):
        os.unlink(self.p(rel))
        self.expected[rel] = None
        self.uncertain.discard(rel)

    def op_verify(self, rel):
        """Read-your-writes on the writer's own node for a certain path."""
        want = self.expected[rel]
        try:
            with open(self.p(rel), "rb") as f:
                got = f.read()
        except FileNotFoundError:
            got = None
        if got != want:
            self.anomalies.append(
                f"read {rel} on node {self.node}: "
                f"{'absent' if got is None else f'{len(got)} bytes'}, expected "
                f"{'absent' if want is None else f'{len(want)} bytes'} (acknowledged)")

    def pick(self):
        present = [n for n, v in self.expected.items() if v is not None and n not in self.uncertain]
        absent = [n for n, v in self.expected.items() if v is None and n not in self.uncertain]
        unsure = sorted(self.uncertain)
        r = self.rnd.random()
        if unsure and r < 0.5:
            return ("write", self.rnd.choice(unsure))     # make it certain again
        r = self.rnd.random()
        if r < 0.45 or not present:
            return ("write", self.rnd.choice(present + absent + unsure))
        if r < 0.70:
            src = self.rnd.choice(present)
            dst = self.rnd.choice([n for n in self.expected if n != src])
            return ("rename", src, dst)
        if r < 0.85:
            return ("unlink", self.rnd.choice(present))
        return ("verify", self.rnd.choice(present + absent))

    def run(self):
        try:
            while not self.stop.is_set():
                op = self.pick()
                try:
                    self.gate.enter(self.stop)
                except Stop:
                    return
                acked = False
                self.uncertain_before = set(self.uncertain)
                try:
                    if op[0] == "write":
                        self.op_write(op[1])
                    elif op[0] == "rename":
                        self.op_rename(op[1], op[2])
                    elif op[0] == "unlink":
                        self.op_unlink(op[1])
                    else:
                        try:
                            self.op_verify(op[1])
                        except OSError:
                            pass          # a read error under a kill is no lost change
                    acked = op[0] != "verify"
                    if acked:
                        self.acked += 1
                        now, ep = time.monotonic(), self.gate.epoch
                        if (self.last_ack and self.last_ack[1] == ep and self.gate.up
                                and not self.gate.faulted):
                            gap = now - self.last_ack[0]
                            if gap > self.max_stall[0]:
                                self.max_stall = (gap, f"{op[0]} {' '.join(op[1:])} at "
                                                       f"{time.strftime('%H:%M:%S')}")
                        self.last_ack = (now, ep)
                except OSError as e:
                    self.note_error(e, list(op[1:]), op[0])
                finally:
                    self.gate.leave(acked)
                time.sleep(self.rnd.random() * 0.01)
        except BaseException as e:  # noqa: BLE001 - reported at the end
            self.crash = "".join(traceback.format_exception(e))


# ------------------------------------------------------------------ campaign

class Campaign:
    def __init__(self, args):
        self.args = args
        self.rnd = random.Random(args.seed)
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.max_seconds
        self.base = Path(tempfile.mkdtemp(prefix="nsync-chaos-"))
        # A short lease, so that a pause outlives it within a round.
        self.c = Cluster(self.base, n=args.nodes, log_level=args.log_level, name="chaos",
                         extra_args=["-o", f"lease={LEASE_S}"])
        self.faults = [f for f in args.faults.split(",") if f]
        bad = [f for f in self.faults if f not in ("kill", "partition", "pause")]
        if bad or not self.faults:
            raise SystemExit(f"chaos: --faults takes kill, partition, pause (got {args.faults})")
        self.net = NetCut(self.c) if "partition" in self.faults else None
        self.gates = [NodeGate() for _ in range(args.nodes)]
        self.stop = threading.Event()
        self.writers = []
        self.rounds_done = 0
        self.failures = []
        self.kills = {"leader": 0, "follower": 0}
        self.by_fault = {f: 0 for f in ("kill", "partition", "pause")}
        self.samples = []   # (seconds since start, [RSS KiB], [data dir bytes]) per minute

    def left(self):
        return self.deadline - time.monotonic()

    def bounded(self, t):
        """t, capped by what is left of the total budget."""
        left = self.left()
        if left <= 1:
            raise WaitTimeout(f"the total time budget of {self.args.max_seconds:.0f} s is used up")
        return min(t, left)

    def live(self):
        return [i for i in range(len(self.c)) if self.gates[i].up]

    def wait_progress(self, idxs, what):
        """Each node in idxs acknowledges a few more operations (bounded)."""
        need = self.rnd.randint(*ACKS_PER_PHASE)
        base = {i: self.gates[i].acks for i in idxs}

        def ok():
            for i in idxs:
                self.c.node(i).check_alive()
            return all(self.gates[i].acks - base[i] >= need for i in idxs)

        try:
            wait_for(ok, self.bounded(PHASE_TIMEOUT), f"{need} acknowledged operations "
                     f"on each of nodes {idxs} ({what})", interval=0.02)
        except WaitTimeout as e:
            got = {i: self.gates[i].acks - base[i] for i in idxs}
            errs = {w.name: w.errors for w in self.writers}
            raise WaitTimeout(f"{e}; acks so far {got}; writer errors {errs}") from None

    def setup(self):
        log(f"binary {BINARY}; base {self.base}; seed {self.args.seed}")
        self.c.start_all(timeout=self.bounded(nsynctest.READY_TIMEOUT))
        lead = self.c.leader(timeout=self.bounded(10))
        for i in range(len(self.c)):
            for t in range(self.args.writers):
                ns = f"w{i}-{t}"
                os.makedirs(self.c.node(i).path(f"{ns}/s"))
                w = Writer(self.c, i, t, self.gates[i], self.stop,
                           seed=self.rnd.getrandbits(64))
                self.writers.append(w)
        self.c.wait_trees_equal(timeout=self.bounded(nsynctest.SYNC_TIMEOUT))
        log(f"cluster up (leader: node {lead}); {len(self.writers)} writers")
        for g in self.gates:
            g.open()
        for w in self.writers:
            w.start()
        self.wait_progress(self.live(), "warm-up")

    def one_round(self, r):
        fault = self.rnd.choice(self.faults)
        self.by_fault[fault] += 1
        if fault == "kill":
            self.kill_round(r)
        else:
            self.cut_or_pause_round(r, fault)

    def cut_or_pause_round(self, r, fault):
        """Node v cut off (or paused) while the others go on; v's own writers
        keep trying (a paused node's block in their syscall). Then heal."""
        n = len(self.c)
        lead = self.c.leader(timeout=self.bounded(nsynctest.READY_TIMEOUT))
        v = lead if self.rnd.random() < 0.4 else self.rnd.choice([i for i in range(n) if i != lead])
        others = [i for i in range(n) if i != v]
        t0 = time.monotonic()
        self.gates[v].set_faulted(True)
        pid = self.c.node(v).proc.pid
        if fault == "partition":
            self.net.isolate(v)
        else:
            os.kill(pid, signal.SIGSTOP)
        try:
            new_lead = self.c.wait_ready(others, timeout=self.bounded(nsynctest.READY_TIMEOUT))
            self.wait_progress(others, f"round {r}, node {v} {fault}")
            if fault == "pause":
                # Longer than its lease: the others may take its locks.
                until = t0 + LEASE_S + 1
                wait_for(lambda: time.monotonic() >= until, self.bounded(LEASE_S + 5),
                         f"node {v}'s pause to outlast its {LEASE_S} s lease")
            else:
                wait_for(lambda: (self.c.node(v).try_status() or {}).get("writable") is False,
                         self.bounded(15), f"cut-off node {v} to know it has no quorum")
        finally:
            if fault == "partition":
                self.net.heal()
            else:
                os.kill(pid, signal.SIGCONT)
        t_fault = time.monotonic() - t0
        self.c.wait_ready(timeout=self.bounded(nsynctest.READY_TIMEOUT))
        self.gates[v].set_faulted(False)
        self.wait_progress(list(range(n)), f"round {r}, node {v} back from {fault}")
        acks = sum(g.acks for g in self.gates)
        log(f"round {r}: {fault} of node {v} ({'leader' if v == lead else 'follower'}) for "
            f"{t_fault:.1f} s; the others led by node {new_lead}; {acks} acknowledged "
            f"operations so far")

    def kill_round(self, r):
        n = len(self.c)
        want_leader = self.rnd.random() < 0.4
        lead = self.c.leader(timeout=self.bounded(nsynctest.READY_TIMEOUT))
        if want_leader:
            v = lead
        else:
            v = self.rnd.choice([i for i in range(n) if i != lead])
        self.kills["leader" if v == lead else "follower"] += 1
        others = [i for i in range(n) if i != v]
        t0 = time.monotonic()

        self.gates[v].close()
        self.c.kill9(v, clear_mount=False)
        if not self.gates[v].wait_idle(self.bounded(IDLE_TIMEOUT)):
            raise WaitTimeout(f"writers of killed node {v} still inside a syscall "
                              f"after {IDLE_TIMEOUT:.0f} s")
        wait_for(lambda: nsynctest._clear_mount(self.c.node(v).mnt), self.bounded(10),
                 f"clearing node {v}'s stale mount")
        new_lead = self.c.wait_ready(others, timeout=self.bounded(nsynctest.READY_TIMEOUT))
        t_elect = time.monotonic() - t0
        self.wait_progress(others, f"round {r}, node {v} down")

        t1 = time.monotonic()
        self.c.start(v, timeout=self.bounded(nsynctest.READY_TIMEOUT))
        t_start = time.monotonic() - t1
        self.gates[v].open()
        self.wait_progress(list(range(n)), f"round {r}, node {v} back")
        acks = sum(g.acks for g in self.gates)
        log(f"round {r}: killed node {v} ({'leader' if v == lead else 'follower'}); "
            f"leader agreed after {t_elect:.1f} s (node {new_lead}); restart ready in "
            f"{t_start:.1f} s; {acks} acknowledged operations so far")

    def stop_writers(self):
        self.stop.set()
        with_deadline = time.monotonic() + WRITER_JOIN_TIMEOUT
        hung = []
        for w in self.writers:
            w.join(max(0.1, with_deadline - time.monotonic()))
            if w.is_alive():
                hung.append(w.name)
        if hung:
            self.failures.append(f"writers {hung} did not return from a syscall within "
                                 f"{WRITER_JOIN_TIMEOUT:.0f} s of the stop (hung FUSE call)")
        for w in self.writers:
            if w.crash:
                self.failures.append(f"writer {w.name} crashed:\n{w.crash}")
        return not hung

    def check(self):
        """Identical trees everywhere, then every certain path as expected."""
        n = len(self.c)
        checked = present = absent = lost = 0
        uncertain = sum(len(w.uncertain) for w in self.writers)
        try:
            ref = self.c.wait_trees_equal(list(range(n)),
                                          timeout=min(CONVERGE_TIMEOUT, max(5.0, self.left())))
        except WaitTimeout as e:
            self.failures.append(f"divergence: {e}")
            ref = None
        lost_list = []
        for w in self.writers:
            for rel, want in sorted(w.expected.items()):
                if rel in w.uncertain:
                    continue
                checked += 1
                if want is None:
                    absent += 1
                else:
                    present += 1
                bad = []
                for i in range(n):
                    for where, p in (("mount", self.c.node(i).path(rel)),
                                     ("backing", self.c.node(i).bpath(rel))):
                        got = read_bytes(p) if os.path.lexists(p) else None
                        if got != want:
                            bad.append(f"node {i} {where}: "
                                       + ("absent" if got is None else f"{len(got)} bytes"))
                if bad:
                    lost += 1
                    lost_list.append(f"{rel}: expected "
                                     + ("absent" if want is None else f"{len(want)} bytes")
                                     + "; " + ", ".join(bad[:6]))
        extra = []
        if ref is not None:
            known = {rel for w in self.writers for rel in w.expected}
            extra = sorted(k for k, v in ref.items()
                           if v[0] != "dir" and k not in known)
        return dict(checked=checked, present=present, absent=absent, lost=lost,
                    lost_list=lost_list, uncertain=uncertain, extra=extra)

    def sample(self):
        """RSS (KiB) and raft directory size (bytes) of every node, now."""
        rss, raft = [], []
        for nd in self.c.nodes:
            kib = None
            try:
                with open(f"/proc/{nd.proc.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            kib = int(line.split()[1])
            except (OSError, AttributeError):
                pass
            rss.append(kib)
            total = 0
            for dirpath, _, files in os.walk(nd.backing / nsynctest.DATA_DIR):
                for fn in files:
                    try:
                        total += os.lstat(os.path.join(dirpath, fn)).st_size
                    except OSError:
                        pass
            raft.append(total)
        self.samples.append((time.monotonic() - self.t0, rss, raft))

    def run(self):
        result = None
        try:
            self.setup()
            if self.args.soak_minutes:
                self.sample()
                end = time.monotonic() + self.args.soak_minutes * 60
                r = 0
                while time.monotonic() < end:
                    r += 1
                    t_round = time.monotonic()
                    self.one_round(r)
                    self.rounds_done = r
                    self.sample()
                    s = self.samples[-1]
                    log(f"minute {r}: RSS MiB {[round(k / 1024, 1) if k else None for k in s[1]]}, "
                        f"{nsynctest.DATA_DIR} MiB {[round(b / 2**20, 1) for b in s[2]]}")
                    # One fault a minute; the writers go on meanwhile.
                    until = min(end, t_round + 60)
                    wait_for(lambda: time.monotonic() >= until, self.bounded(70),
                             "the next minute of the soak", interval=0.5)
                self.sample()
            for r in range(1, self.args.rounds + 1):
                self.one_round(r)
                self.rounds_done = r
        except WaitTimeout as e:
            self.failures.append(f"round {self.rounds_done + 1}: {e}")
        except nsynctest.NodeDied as e:
            self.failures.append(f"round {self.rounds_done + 1}: {e}")
        except AssertionError as e:
            self.failures.append(f"round {self.rounds_done + 1}: {e}")
        writers_ok = self.stop_writers()
        # Bring back a node that a failed round left down, so the check covers it.
        for i in range(len(self.c)):
            if not self.c.node(i).running:
                try:
                    self.c.start(i, timeout=min(nsynctest.READY_TIMEOUT, max(5.0, self.left())))
                except (WaitTimeout, AssertionError) as e:
                    self.failures.append(f"restarting node {i} for the final check: {e}")
        if writers_ok:
            result = self.check()
        return result

    def report(self, result):
        el = time.monotonic() - self.t0
        acked = sum(w.acked for w in self.writers)
        failed = sum(w.failed for w in self.writers)
        errs = {}
        for w in self.writers:
            for k, v in w.errors.items():
                errs[k] = errs.get(k, 0) + v
        anomalies = [a for w in self.writers for a in w.anomalies]
        live_errors = sorted(a for w in self.writers for a in w.live_errors)
        print()
        planned = "soak" if self.args.soak_minutes else self.args.rounds
        log(f"rounds survived: {self.rounds_done}/{planned} "
            f"(kill {self.by_fault['kill']}: the leader {self.kills['leader']}x, a follower "
            f"{self.kills['follower']}x; partition {self.by_fault['partition']}; "
            f"pause {self.by_fault['pause']})")
        log(f"operations: {acked} acknowledged ({sum(w.fsyncs for w in self.writers)} of the "
            f"writes fsynced), {failed} failed {errs or ''}")
        if result is not None:
            log(f"files checked: {result['checked']} paths on {len(self.c)} nodes "
                f"({result['present']} present, {result['absent']} absent); "
                f"{result['uncertain']} left uncertain by failed operations")
            log(f"lost changes: {result['lost']}")
            for x in result["lost_list"][:20]:
                log(f"  LOST {x}")
            if result["extra"]:
                log(f"files not written by any writer (conflict copies?): {len(result['extra'])}: "
                    + ", ".join(result["extra"][:10]))
            if result["lost"]:
                self.failures.append(f"{result['lost']} lost changes")
        else:
            log("files checked: 0 (no final check: see the failures)")
            log("lost changes: unknown")
        if live_errors:
            log(f"operations that failed on a node that was not being killed: {len(live_errors)}")
            for a in live_errors[:10]:
                log(f"  {a}")
        for a in anomalies[:20]:
            log(f"  ANOMALY {a}")
        if anomalies:
            self.failures.append(f"{len(anomalies)} anomalies (acknowledged state contradicted)")
        stall = max((w.max_stall for w in self.writers), default=(0.0, ""))
        log(f"longest stall of a writer (node neither down nor faulted): {stall[0]:.2f} s "
            f"({stall[1]})")
        if self.samples:
            a, b = self.samples[0], self.samples[-1]
            mib = lambda xs: [round(x / 1024, 1) if x else None for x in xs]  # noqa: E731
            log(f"RSS MiB per node: start {mib(a[1])}, end {mib(b[1])}, max "
                f"{mib([max((s[1][i] or 0) for s in self.samples) for i in range(len(self.c))])}")
            log(f"{nsynctest.DATA_DIR} MiB per node (raft log, snapshots, journal): start "
                f"{[round(x / 2**20, 1) for x in a[2]]}, end {[round(x / 2**20, 1) for x in b[2]]}, "
                f"max {[round(max(s[2][i] for s in self.samples) / 2**20, 1) for i in range(len(self.c))]}")
        log(f"elapsed: {el:.0f} s")
        ok = not self.failures
        if not ok:
            for f in self.failures:
                log(f"FAILURE: {f}")
            print("\n" + logs_report([self.c]), flush=True)
        log("PASSED" if ok else "FAILED")
        return ok

    def cleanup(self, keep, graceful):
        self.stop.set()
        if graceful:
            # One at a time, so that every leave has a quorum to go through
            # (the harness' teardown unmounts them all at once).
            for i in self.c.running_idx():
                try:
                    self.c.stop(i, timeout=15, check=False)
                except Exception as e:  # noqa: BLE001 - teardown below finishes the job
                    log(f"stopping node {i}: {e}")
        self.c.teardown()
        if keep:
            log(f"logs kept in {self.base}")
        else:
            shutil.rmtree(self.base, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description="kill -9, cut off and pause nsyncfs nodes under "
                                 "load; check that no acknowledged change is lost")
    ap.add_argument("rounds", type=int)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--writers", type=int, default=2, help="writer threads per node")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="total time budget (default 120 + 30 per round)")
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--faults", default="kill,partition,pause",
                    help="comma-separated: kill, partition, pause")
    ap.add_argument("--soak-minutes", type=float, default=None,
                    help="run this long, one fault a minute, sampling RSS and disk")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir even on success")
    args = ap.parse_args()
    if args.rounds < 0 or args.nodes < 3:
        ap.error("ROUNDS >= 0 and --nodes >= 3 (a kill must leave a quorum)")
    if args.seed is None:
        args.seed = random.SystemRandom().getrandbits(32)
    if args.max_seconds is None:
        args.max_seconds = 120 + 30 * args.rounds + 60 * (args.soak_minutes or 0) * 1.1
    if not BINARY.exists():
        print(f"chaos: {BINARY} does not exist: build first", file=sys.stderr)
        return 2
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        print("chaos: needs root and /dev/fuse (it mounts FUSE filesystems)", file=sys.stderr)
        return 2

    # SIGTERM behaves like Ctrl-C: unwind, clean up. SIGINT too when started
    # in the background (where the shell set it to ignored).
    def on_term(signum, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    camp = Campaign(args)
    ok = False
    graceful = False
    try:
        result = camp.run()
        graceful = not any(w.is_alive() for w in camp.writers)
        ok = camp.report(result)
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
    finally:
        # A writer stuck in a FUSE call is released by the nodes' death (ENOTCONN).
        try:
            camp.cleanup(keep=args.keep or not ok, graceful=graceful)
        except KeyboardInterrupt:
            camp.c.kill_all_now()
            camp.c.teardown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
