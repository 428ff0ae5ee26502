"""Cutting links between the nodes of a test cluster, on loopback only.

Every node runs in a cgroup (v2) of its own, and one nftables table that the
test creates and removes drops what a node's sockets send to another node's
ports. Rules match the sending socket's cgroup rather than a source address:
libraft (0.15) cannot bind its outgoing connections to a source address, so
on one machine they all leave from 127.0.0.1.

    net = NetCut(cluster)     # before cluster.start_all(): nodes spawn into their cgroups
    net.cut(0, 1)             # 0 and 1 cannot reach each other
    net.block(2, 0)           # 2 cannot reach 0 (0 still reaches 2: asymmetric)
    net.isolate(0)            # 0 cut from every other node
    net.heal()                # every rule gone
The table and the cgroups go in cluster.teardown(), also when a test fails.
"""
import os
import subprocess
from pathlib import Path

CG_BASE = Path("/sys/fs/cgroup")


def _cgroup2_root():
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return Path(parts[1])
    raise RuntimeError("no cgroup2 hierarchy mounted: partition tests need one")


def _nft(*args, stdin=None):
    r = subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise RuntimeError(f"nft {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


class NetCut:
    def __init__(self, cluster):
        self.cluster = cluster
        self.table = f"nsynctest_{os.getpid()}_{id(self) & 0xffff:x}"
        root = _cgroup2_root()
        self.cgroups = []
        for nd in cluster.nodes:
            cg = root / f"{self.table}_n{nd.idx}"
            cg.mkdir(exist_ok=True)
            self.cgroups.append(cg)
        _nft("add", "table", "inet", self.table)
        _nft("add", "chain", "inet", self.table, "out",
             "{ type filter hook output priority 0; policy accept; }")
        cluster.spawn_hook = self._preexec
        cluster.teardown_hooks.append(self.close)
        self.rules = set()

    def _preexec(self, idx):
        procs = str(self.cgroups[idx] / "cgroup.procs")

        def enter():  # in the child, before exec: every socket it makes is in the cgroup
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
        return enter

    def _path(self, idx):
        return os.path.relpath(self.cgroups[idx], CG_BASE)

    def block(self, src, dst):
        """Node src's sockets cannot send to node dst's ports. src cannot open
        a connection to dst; dst can still open one to src and have src answer
        on it (the answers go to dst's ephemeral port), so dst -> src works
        where the protocol answers on the same connection (HTTP), and raft
        messages from dst reach src while src's own messages to dst do not."""
        if (src, dst) in self.rules:
            return
        d = self.cluster.node(dst)
        _nft("add", "rule", "inet", self.table, "out", "socket", "cgroupv2", "level", "1",
             f'"{self._path(src)}"', "ip", "daddr", "127.0.0.0/8", "tcp", "dport",
             f"{{ {d.cport}, {d.fport} }}", "drop")
        self.rules.add((src, dst))

    def cut(self, a, b):
        self.block(a, b)
        self.block(b, a)

    def isolate(self, a):
        for nd in self.cluster.nodes:
            if nd.idx != a:
                self.cut(a, nd.idx)

    def heal(self):
        _nft("flush", "chain", "inet", self.table, "out")
        self.rules.clear()

    def close(self):
        try:
            _nft("delete", "table", "inet", self.table)
        except RuntimeError:
            pass
        for cg in self.cgroups:
            try:
                cg.rmdir()  # empty once the cluster's processes are gone
            except OSError:
                pass
