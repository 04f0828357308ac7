#!/usr/bin/env python3
"""A1 of ../shared/BENCH.md: autoscaling follows a load step.

sim at 10 ms per batch (max batch 1, process replicas, the default
isolation), --min-replicas 1 --max-replicas 24 --target-ongoing-requests 2.
`serve bench` steps the load 1 -> 32 -> 1 closed-loop connections. The 32
step lasts long enough to also hold a steady load at the target for 60 s.
A thread reads /metrics every 100 ms (replicas running and their target).

Goals: replicas reach what the load needs (ceil(32 / 2) = 16) within the
up-delay + 2 s of the step, return to the minimum after the down-delay
(not before it, and within it + 2 s), never leave the bounds, 0 failed
requests, and no change during the 60 s at the target.
  usage: autoscale.py SERVE_BIN   (env UP, DOWN: the delays in s, default 3, 10)
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

SERVE = sys.argv[1]
UP = float(os.environ.get("UP", 3))
DOWN = float(os.environ.get("DOWN", 10))
MIN, MAX, TARGET = 1, 24, 2
STEADY_S = 60

work = tempfile.mkdtemp(prefix="serve-bench-a1-")


def serve(*args, check=True):
    return subprocess.run([SERVE, "--state-dir", work, *args], check=check, capture_output=True,
                          text=True)


url = re.search(r"listening on (http://\S+)",
                serve("start", "--http", "127.0.0.1:0", "--log-level", "info").stdout).group(1)
timeline = []  # (t, replicas, target)
stop = threading.Event()
t0 = time.monotonic()


def poll():
    pat = re.compile(r'serve_backend_(replicas|target_replicas)\{backend="m"\} (\d+)')
    while not stop.is_set():
        try:
            text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
            v = dict(pat.findall(text))
            timeline.append((time.monotonic() - t0, int(v["replicas"]), int(v["target_replicas"])))
        except OSError:
            pass
        time.sleep(0.1)


def bench(conns, seconds):
    start = time.monotonic() - t0
    out = subprocess.run([SERVE, "--state-dir", work, "bench", "m", "-c", str(conns), "-d",
                          "%ds" % seconds, "--json", "--timeout", "60s"],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    return start, r


try:
    serve("create-backend", "m", "sim", "--config", "base_us=10000", "--min-replicas", str(MIN),
          "--max-replicas", str(MAX), "--target-ongoing-requests", str(TARGET),
          "--upscale-delay", str(UP), "--downscale-delay", str(DOWN),
          "--max-queued-requests", "100000")
    serve("create-endpoint", "m", "--backend", "m", "--route", "/m")
    poller = threading.Thread(target=poll)
    poller.start()
    steps = []
    need = -(-32 // TARGET)
    for conns, seconds in [(1, 8), (32, int(UP) + 8 + STEADY_S), (1, int(DOWN) + 8)]:
        start, r = bench(conns, seconds)
        steps.append((conns, start, start + seconds, r))
        print("step c=%-2d  %5.1f..%5.1f s: %7.1f req/s, p50 %.1f ms, p99 %.1f ms, errors %d"
              % (conns, start, start + seconds, r["throughput_rps"], r["latency_us"]["p50"] / 1e3,
                 r["latency_us"]["p99"] / 1e3, r["errors"]["total"]), flush=True)
    time.sleep(1)
finally:
    stop.set()
    serve("stop", check=False)

errors = sum(r["errors"]["total"] for _, _, _, r in steps)
requests = sum(r["requests"] for _, _, _, r in steps)
up_start, up_end = steps[1][1], steps[1][2]
down_start = steps[2][1]
reached = next((t for t, n, _ in timeline if up_start <= t and n >= need), None)
back = next((t for t, n, _ in timeline if t >= down_start and n == MIN), None)
# The steady part: from 2 s after the count reached what the load needs to
# the end of the step; any change of running or target there is a flap.
steady = [(t, n, g) for t, n, g in timeline if reached and reached + 2 <= t <= up_end - 0.5]
flaps = sum(1 for a, b in zip(steady, steady[1:]) if (a[1], a[2]) != (b[1], b[2]))
bounds_ok = all(MIN <= n <= MAX and MIN <= g <= MAX for _, n, g in timeline)

print("\ntimeline (one sample a second): t, replicas running, target")
last = -1
for t, n, g in timeline:
    if int(t) != last:
        print("  %5.1f s  %2d  %2d" % (t, n, g))
        last = int(t)
print()
print("requests %d, failed %d" % (requests, errors))
print("up: replicas reached %d %.1f s after the 32-connection step (goal <= up-delay %.0f + 2 = %.0f s)"
      % (need, reached - up_start if reached else float("nan"), UP, UP + 2))
print("down: back to %d %.1f s after the 1-connection step (goal >= down-delay %.0f s, <= %.0f s)"
      % (MIN, back - down_start if back else float("nan"), DOWN, DOWN + 2))
print("steady at the target: %.1f s observed, %d change(s)"
      % ((steady[-1][0] - steady[0][0]) if steady else 0, flaps))
print("bounds [%d, %d] kept: %s" % (MIN, MAX, bounds_ok))
ok = (errors == 0 and reached is not None and reached - up_start <= UP + 2 and back is not None
      and DOWN <= back - down_start <= DOWN + 2 and flaps == 0 and bounds_ok
      and steady and steady[-1][0] - steady[0][0] >= STEADY_S - 1)
print("A1:", "met" if ok else "MISSED")
subprocess.run(["rm", "-rf", work])
sys.exit(0 if ok else 1)
