"""GET /metrics after known traffic: exact counts."""
import json
import os
import re
import shutil
import subprocess
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

from serve_harness import SERVE_BIN, ServeTestCase, test_plugin


def samples(text):
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


class Metrics(ServeTestCase):
    def test_counts_after_known_traffic(self):
        self.server.deploy("sim", "sim", "/sim", "--max-batch-size", "4",
                           "--batch-wait-timeout-ms", "2000")
        answers = self.server.concurrent([b""] * 8, "/sim")
        self.assertEqual([a.json()["batch_size"] for a in answers], [4] * 8)
        self.assertEqual(self.server.get("/nope").status, 404)
        r = self.server.get("/metrics")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.headers["content-type"].startswith("text/plain; version=0.0.4"))
        m = samples(r.body.decode())
        self.assertEqual(m['serve_http_requests_total{endpoint="sim",code="200"}'], 8)
        self.assertEqual(m['serve_http_requests_total{endpoint="",code="404"}'], 1)
        self.assertEqual(m['serve_http_request_seconds_count{endpoint="sim"}'], 8)
        self.assertEqual(m['serve_backend_requests_total{backend="sim"}'], 8)
        self.assertEqual(m['serve_backend_batches_total{backend="sim"}'], 2)
        self.assertEqual(m['serve_backend_batch_size_bucket{backend="sim",le="2"}'], 0)
        self.assertEqual(m['serve_backend_batch_size_bucket{backend="sim",le="4"}'], 2)
        self.assertEqual(m['serve_backend_batch_size_sum{backend="sim"}'], 8)  # = requests
        self.assertEqual(m['serve_backend_queue_seconds_count{backend="sim"}'], 8)
        self.assertEqual(m['serve_backend_exec_seconds_count{backend="sim"}'], 2)
        self.assertEqual(m['serve_backend_replicas{backend="sim"}'], 1)
        self.assertEqual(m['serve_backend_queued_requests{backend="sim"}'], 0)
        self.assertGreater(m["serve_process_resident_memory_bytes"], 0)
        # Every series has HELP and TYPE lines.
        text = r.body.decode()
        for name in {re.sub(r"(_bucket|_sum|_count)$", "", k.split("{")[0]) for k in m}:
            self.assertIn("# TYPE %s " % name, text)
            self.assertIn("# HELP %s " % name, text)


    def test_promtool_accepts_the_exposition(self):
        promtool = shutil.which("promtool")
        if not promtool:
            self.skipTest("promtool is not installed (Debian package prometheus)")
        self.server.deploy("sim", "sim", "/sim")
        self.server.deploy("relay", test_plugin("relay"), "/relay")
        self.server.post("/sim")
        self.server.post("/relay?to=sim")
        body = self.server.get("/metrics").body
        proc = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)

    def test_rejections_and_handle_calls_are_counted(self):
        self.server.deploy("slow", "sim", "/slow", "--max-concurrent-queries", "1",
                           "--max-queued-requests", "1", "--config", "base_us=300000")
        self.server.deploy("f", test_plugin("faulty"), "/f", "--request-timeout-ms", "100")
        self.server.deploy("relay", test_plugin("relay"), "/relay")
        statuses = [a.status for a in self.server.concurrent([b""] * 5, "/slow")]
        self.assertEqual(self.server.post("/f", b"sleep:300").status, 504)
        time.sleep(0.4)  # the replica is free again
        self.assertEqual(self.server.post("/f", b"fail").status, 500)
        for _ in range(3):
            self.server.post("/relay?to=f", b"ok")
        m = samples(self.server.get("/metrics").body.decode())
        self.assertEqual(m['serve_requests_rejected_total{backend="slow",reason="backpressure"}'],
                         statuses.count(503))
        self.assertEqual(m['serve_requests_rejected_total{backend="f",reason="timeout"}'], 1)
        self.assertEqual(m['serve_requests_rejected_total{backend="f",reason="plugin_error"}'], 1)
        self.assertEqual(m['serve_handle_calls_total{backend="relay",target="f"}'], 3)
        self.assertIn('serve_replica_in_flight{backend="f",replica="0"}', m)
        self.assertEqual(m['serve_backend_batch_wait_seconds_count{backend="slow"}'],
                         m['serve_backend_batches_total{backend="slow"}'])

    def test_counters_survive_an_update_that_replaces_the_replicas(self):
        # A replacing update makes a new backend object; Prometheus counters
        # must go on from where they were, never back to 0.
        self.server.deploy("f", test_plugin("faulty"), "/f")
        self.server.deploy("relay", test_plugin("relay"), "/relay")
        for _ in range(3):
            self.assertEqual(self.server.post("/relay?to=f", b"ok").status, 200)
        self.assertEqual(self.server.post("/f", b"fail").status, 500)
        self.server.cli("update-backend", "f", "--num-replicas", "2")
        self.server.cli("update-backend", "relay", "--num-replicas", "2")
        for _ in range(2):
            self.assertEqual(self.server.post("/relay?to=f", b"ok").status, 200)
        m = samples(self.server.get("/metrics").body.decode())
        self.assertEqual(m['serve_backend_replicas{backend="f"}'], 2)
        self.assertEqual(m['serve_backend_requests_total{backend="f"}'], 6)
        self.assertEqual(m['serve_backend_batches_total{backend="f"}'], 6)
        self.assertEqual(m['serve_backend_batch_size_count{backend="f"}'], 6)
        self.assertEqual(m['serve_backend_exec_seconds_count{backend="f"}'], 6)
        self.assertEqual(m['serve_requests_rejected_total{backend="f",reason="plugin_error"}'], 1)
        self.assertEqual(m['serve_backend_requests_total{backend="relay"}'], 5)
        self.assertEqual(m['serve_handle_calls_total{backend="relay",target="f"}'], 5)

    def test_open_connections(self):
        import socket
        self.server.deploy("echo", "echo", "/echo")
        held = [socket.create_connection((self.server.host, self.server.port)) for _ in range(3)]
        for s in held:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx")
            s.recv(4096)
        m = samples(self.server.get("/metrics").body.decode())
        self.assertGreaterEqual(m["serve_http_open_connections"], 3)
        for s in held:
            s.close()
        for _ in range(100):
            m = samples(self.server.get("/metrics").body.decode())
            if m["serve_http_open_connections"] <= 1:
                break
            time.sleep(0.02)
        self.assertLessEqual(m["serve_http_open_connections"], 1)  # only the scrape's own

    def test_plugins_see_the_stage_times(self):
        self.server.deploy("f", test_plugin("faulty"), "/f")
        t = self.server.post("/f", b"timing").json()
        self.assertTrue(0 < t["received"] <= t["queued"] <= t["dispatched"], t)
        self.assertLess(t["dispatched"] - t["received"], 5e9)

    def test_status_shows_live_figures(self):
        self.server.deploy("sim", "sim", "/sim", "--max-batch-size", "4",
                           "--batch-wait-timeout-ms", "2")
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda _: self.server.post("/sim"), range(400)))
        time.sleep(1.2)  # at least one sample after the load
        live = self.server.status()["live"]
        self.assertGreater(live["window_s"], 0)
        self.assertGreater(live["backends"]["sim"]["rps"], 0)
        self.assertGreaterEqual(live["backends"]["sim"]["mean_batch_size"], 1)
        self.assertGreater(live["endpoints"]["sim"]["rps"], 0)
        self.assertGreater(live["endpoints"]["sim"]["p99_ms_at_most"], 0)
        # Only endpoints that exist now: not "" (unrouted answers), not a
        # deleted one (its metrics stay, its live figures go).
        self.server.get("/nowhere")
        self.server.deploy("gone", "echo", "/gone")
        self.server.post("/gone")
        self.server.cli("delete-endpoint", "gone")
        time.sleep(1.2)
        self.assertEqual(sorted(self.server.status()["live"]["endpoints"]), ["sim"])
        text = self.server.cli("status").stdout
        self.assertIn("RPS_10S", text)
        proc = subprocess.run(["timeout", "2.5", SERVE_BIN, "--state-dir", self.server.state_dir,
                               "status", "--watch"], capture_output=True, text=True)
        self.assertGreaterEqual(proc.stdout.count("serve at http://"), 2)


if __name__ == "__main__":
    unittest.main()
