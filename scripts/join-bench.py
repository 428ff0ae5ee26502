#!/usr/bin/env python3
"""Join time of an empty node: a 3-node cluster on 127.0.0.1 gets N files of
SIZE bytes (8 writer threads on the leader's mount), then a 4th node with an
empty BACKING joins; prints how long until it is mounted and has caught up
(catchup.entries == 0), and its peak RSS. Needs root and build/nsyncfs.

    /usr/bin/python3 scripts/join-bench.py 10000 107374     # 10,000 files, 1 GiB
"""
import sys, os, time, tempfile, pathlib, threading
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))
from nsynctest import Cluster, Node, free_ports
N=int(sys.argv[1]); SIZE=int(sys.argv[2])
base = pathlib.Path(tempfile.mkdtemp(prefix="joinbench"))
c = Cluster(base, n=3, log_level="info", name="jb")
try:
    c.start_all()
    w = c.node(c.leader())
    blob = os.urandom(SIZE)
    T=8
    def wr(k):
        d = w.path(f"d{k}"); os.makedirs(d, exist_ok=True)
        for i in range(k, N, T):
            with open(f"{d}/f{i}", "wb") as f: f.write(blob[:SIZE-8] + i.to_bytes(8,"little"))
    t0=time.monotonic(); th=[threading.Thread(target=wr,args=(k,)) for k in range(T)]
    [x.start() for x in th]; [x.join() for x in th]
    print(f"wrote {N} files x {SIZE} B in {time.monotonic()-t0:.1f} s", flush=True)
    t0=time.monotonic()
    while any(c.node(i).status()["catchup"]["entries"] for i in range(3)):
        time.sleep(0.2)
    print(f"replicated to 3 nodes after another {time.monotonic()-t0:.1f} s", flush=True)
    cport, fport = free_ports(2)
    nd = Node(c, 3, c.base, cport, fport); c.nodes.append(nd)
    t0=time.monotonic(); nd.spawn()
    while not nd.mounted(): time.sleep(0.01)
    tm=time.monotonic()-t0
    last=None
    while True:
        st = nd.try_status()
        if st and "catchup" in st and len(st["members"])==4 and st["catchup"]["entries"]==0 and st.get("pending",1)==0:
            break
        time.sleep(0.05)
    tj=time.monotonic()-t0
    files=sum(len(fs) for _,_,fs in os.walk(nd.backing) if ".nsyncfs" not in _)
    print(f"join: mounted after {tm:.2f} s, caught up after {tj:.1f} s; files in its BACKING: {files}", flush=True)
    rss=[l.strip() for l in open(f"/proc/{nd.proc.pid}/status") if l.startswith(("VmHWM","VmRSS"))]
    print(rss)
finally:
    c.teardown()
