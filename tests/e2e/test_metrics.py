"""GET /metrics after known traffic: exact counts."""
import re
import unittest

from serve_harness import ServeTestCase


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


if __name__ == "__main__":
    unittest.main()
