"""Time GET /health every 50 ms from its own process (as the kubelet would), until stopped; print JSON."""

import http.client
import json
import signal
import sys
import time

host, port = sys.argv[1], int(sys.argv[2])
latencies: list[float] = []
running = True


def stop(*_: object) -> None:
    global running
    running = False


signal.signal(signal.SIGTERM, stop)
conn = http.client.HTTPConnection(host, port, timeout=10)
while running:
    t0 = time.perf_counter()
    try:
        conn.request("GET", "/health")
        conn.getresponse().read()
        latencies.append(time.perf_counter() - t0)
    except (OSError, http.client.HTTPException):
        conn.close()
        conn = http.client.HTTPConnection(host, port, timeout=10)
    time.sleep(0.05)
print(json.dumps(latencies))
