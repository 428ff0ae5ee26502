#!/usr/bin/env python3
"""Restart time after many changes: a single-node nsyncfs takes N writes of
distinct files (8 threads, 2 changes each: LOCK and ANNOUNCE), is killed with
-9, and is started again; prints the write rate, the catalog size, RSS, the
raft directory's size and how long the restart took. Needs root.

    /usr/bin/python3 scripts/restart-bench.py 50000      # 100,000 changes
"""
import os, sys, time, threading, subprocess, json, urllib.request, pathlib
REPO = pathlib.Path(__file__).resolve().parent.parent
B="/tmp/r100k"; subprocess.run(["fusermount3","-u","-z",B+"/m"],stderr=subprocess.DEVNULL)
subprocess.run(["rm","-rf",B]); os.makedirs(B+"/b"); os.makedirs(B+"/m")
cmd=[str(REPO / "build" / "nsyncfs"),B+"/b",B+"/m","--host","127.0.0.1","--cluster-port","46001","--file-server-port","46002","-f","--log-level","warn"]
def start():
    t=time.monotonic(); p=subprocess.Popen(cmd,stdout=open(B+"/log","ab"),stderr=subprocess.STDOUT)
    while True:
        try:
            st=json.load(urllib.request.urlopen("http://127.0.0.1:46002/v1/status",timeout=1))
            if st["role"]=="leader" and os.path.ismount(B+"/m"): return p,time.monotonic()-t,st
        except Exception: pass
        time.sleep(0.01)
p,t,st=start(); print("fresh start", round(t,2), flush=True)
N=int(sys.argv[1]); T=8
def w(k):
    d=f"{B}/m/d{k}"; os.makedirs(d, exist_ok=True)
    for i in range(N//T):
        with open(f"{d}/f{i}","wb") as f: f.write(b"x"*100)
t0=time.monotonic(); th=[threading.Thread(target=w,args=(k,)) for k in range(T)]
[x.start() for x in th]; [x.join() for x in th]
el=time.monotonic()-t0
st=json.load(urllib.request.urlopen("http://127.0.0.1:46002/v1/status"))
print(f"{N} writes in {el:.1f}s ({N/el:.0f}/s); fsm_version {st['fsm_version']} applied {st['applied']} entries {st['catalog_entries']}", flush=True)
rss=[l for l in open(f"/proc/{p.pid}/status") if l.startswith(("VmRSS","VmHWM"))]; print(rss, flush=True)
p.send_signal(9); p.wait(); subprocess.run(["fusermount3","-u","-z",B+"/m"])
print("raft dir:", subprocess.run(["du","-sh",B+"/b/.nsyncfs/raft"],capture_output=True,text=True).stdout.strip(), flush=True)
p,t,st=start(); print("restart after kill -9:", round(t,2), "s; applied", st["applied"], "entries", st["catalog_entries"], flush=True)
subprocess.run(["fusermount3","-u",B+"/m"]); p.wait()
