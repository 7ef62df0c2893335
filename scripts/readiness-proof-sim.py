#!/usr/bin/env python3
"""Simulates the readiness proofs under the emulator's replica model (docs/readiness-proof.md).

Each replica sees a new credential once the latest of the application's, the service
principal's and the credential's offsets (uniform in [0, window]) has passed; each token
request lands on a replica at random. "old" is the proof before issue 12 (three consecutive
successes, one request at a time, 100 ms apart, doubling after failures up to 2 s); "new" is
prove_usable (rounds of 6 parallel requests; 2 full rounds in a row once a failure was seen;
50 ms doubling to 1 s after a failed round). Prints the table in docs/readiness-proof.md.
"""
import random, statistics, sys
def visible_times(R, W):
    # app, service principal and credential each reach replica r at their own offset
    return [max(random.uniform(0,W) for _ in range(3)) for _ in range(R)]
def old(vis, L):
    t=0.0; s=0; delay=100.0
    while True:
        tr=t+L/2; t+=L
        ok = vis[random.randrange(len(vis))] <= tr
        if ok:
            s+=1
            if s>=3: return t
            delay=100.0
        else: s=0
        t+=delay; delay=min(delay*2,2000.0)
def new(vis, L, width=6, after=2):
    t=0.0; streak=0; need=1; delay=50.0
    while True:
        tr=t+L/2; t+=L
        if all(vis[random.randrange(len(vis))] <= tr for _ in range(width)):
            streak+=1
            if streak>=need: return t
        else:
            streak=0; need=after; t+=delay; delay=min(delay*2,1000.0)
def run(R,W,L,N=20000):
    out={}
    for name,f in (("old",old),("new",new)):
        early=0; fail=0.0; waits=[]
        for _ in range(N):
            vis=visible_times(R,W); t=f(vis,L)
            waits.append(t)
            refusing=sum(1 for v in vis if v>t)/R
            if refusing>0: early+=1
            fail+=refusing
        out[name]=(early/N, fail/N, statistics.median(waits), max(vis))
    return out
random.seed(12)
print("| replicas | window | latency | proof | handed out early | client's first request refused | median wait |")
print("|---|---|---|---|---|---|---|")
for R,W,L in [(2,1500,20),(4,1500,20),(8,1500,20),(4,5000,100),(16,5000,100)]:
    o=run(R,W,L)
    for name in ("old","new"):
        e,f,w,_=o[name]
        print(f"| {R} | {W} ms | {L} ms | {name} | {e*100:.2f} % | {f*100:.3f} % | {w:.0f} ms |")
