"""The seed's batching example end to end: a counter backend batched up to 5
with a 50 ms wait, 20 concurrent POSTs get exactly the values 1..20."""
import unittest

from serve_harness import ServeTestCase


class QuickStart(ServeTestCase):
    def test_counter_gives_one_to_twenty(self):
        self.server.cli("create-backend", "counter1", "counter", "--max-batch-size", "5",
                        "--batch-wait-timeout-ms", "50")
        self.server.cli("create-endpoint", "counter1", "--backend", "counter1",
                        "--route", "/increment")
        answers = self.server.concurrent([b""] * 20, "/increment")
        self.assertEqual([a.status for a in answers], [200] * 20)
        self.assertEqual(sorted(int(a.body) for a in answers), list(range(1, 21)))
        status = self.server.backend_status("counter1")
        self.assertEqual(status["requests"], 20)
        # Concurrent arrivals within 50 ms were batched: fewer batches than requests.
        self.assertLess(status["batches"], 20)

    def test_counter_start_config(self):
        self.server.deploy("c", "counter", "/c", "--config", "start=100")
        self.assertEqual(self.server.post("/c").body, b"101")
        self.assertEqual(self.server.get("/c").body, b"102")

    def test_echo_keeps_body_and_content_type(self):
        self.server.deploy("echo", "echo", "/echo")
        r = self.server.post("/echo", b'{"x": 1}', headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b'{"x": 1}')
        self.assertEqual(r.headers["content-type"], "application/json")


if __name__ == "__main__":
    unittest.main()
