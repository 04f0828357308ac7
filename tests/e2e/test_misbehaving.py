"""Plugins that misbehave in ways the batching tests do not cover: a
10-second handle_batch, and a backend that calls its own endpoint without
end. Each: the right status to the right client, a log line naming the
backend and replica, and the other backends served as usual meanwhile."""
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

from serve_harness import SANITIZED, ServeTestCase, test_plugin


class Misbehaving(ServeTestCase):
    def echo_latencies(self, seconds):
        """p50 of /echo requests sent one after another for `seconds`."""
        latencies = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.monotonic()
            r = self.server.post("/echo", b"x")
            latencies.append(time.monotonic() - t)
            self.assertEqual(r.status, 200)
        latencies.sort()
        return latencies[len(latencies) // 2]

    def test_a_ten_second_batch_gets_its_timeout_and_blocks_nothing_else(self):
        self.server.deploy("echo", "echo", "/echo")
        self.server.deploy("slow", test_plugin("faulty"), "/slow", "--request-timeout-ms", "1000")
        with ThreadPoolExecutor(max_workers=2) as pool:
            t0 = time.monotonic()
            slow = pool.submit(self.server.post, "/slow", b"sleep:10000")
            p50 = self.echo_latencies(2.0)
            r = slow.result()
            self.assertEqual(r.status, 504)
            self.assertLess(time.monotonic() - t0, 3.0, "the timeout answered late")
            self.assertIn("timed out after 1000 ms in backend slow", r.json()["error"])
        self.assertLess(p50, 0.05 if SANITIZED else 0.01, "other backends slowed down")
        # The replica is stuck in handle_batch for 10 s; when it returns, the
        # log says so, and the backend serves again.
        deadline = time.monotonic() + 15
        while "handle_batch of 1 ran" not in self.server.log():
            self.assertLess(time.monotonic(), deadline, self.server.log()[-2000:])
            time.sleep(0.2)
        self.assertIn("backend=slow replica=0: handle_batch of 1 ran 10.", self.server.log())
        self.assertEqual(self.server.post("/slow", b"ok").status, 200)

    def test_a_ten_second_batch_without_a_timeout_is_waited_for(self):
        self.server.deploy("echo", "echo", "/echo")
        self.server.deploy("slow", test_plugin("faulty"), "/slow")
        with ThreadPoolExecutor(max_workers=1) as pool:
            t0 = time.monotonic()
            slow = pool.submit(self.server.post, "/slow", b"sleep:10000")
            p50 = self.echo_latencies(3.0)
            r = slow.result()
        self.assertEqual((r.status, r.body), (200, b"ok batch=1"))
        self.assertGreaterEqual(time.monotonic() - t0, 10.0)
        self.assertLess(p50, 0.05 if SANITIZED else 0.01)

    def test_a_backend_calling_itself_without_end_gets_508(self):
        self.server.deploy("echo", "echo", "/echo")
        # One replica, one request at a time: each level of the recursion
        # must borrow its caller's slot, or the second level waits for ever.
        self.server.deploy("loop", test_plugin("relay"), "/loop", "--max-concurrent-queries", "1",
                           "--max-batch-size", "1")
        t0 = time.monotonic()
        r = self.server.post("/loop?to=loop&forward=1", b"again")
        self.assertLess(time.monotonic() - t0, 5.0)
        self.assertEqual(r.status, 508, r.body)
        self.assertEqual(r.json()["error"], "call to endpoint loop refused: over 16 nested calls")
        log = self.server.log()
        self.assertIn("backend=loop replica=0", log)
        self.assertIn("plugin bug: call to endpoint loop refused: over 16 nested calls", log)
        self.assertEqual(self.server.post("/echo", b"fine").body, b"fine")
        # Nothing stays in flight or queued once the chain has unwound.
        status = self.server.backend_status("loop")
        self.assertEqual((status["queued"], status["in_flight"]), (0, 0))
        self.assertEqual(status["requests"], 17)  # the HTTP request and 16 calls

    def test_one_self_call_with_one_slot_does_not_deadlock(self):
        self.server.deploy("r", test_plugin("relay"), "/r", "--max-concurrent-queries", "1",
                           "--max-batch-size", "1")
        r = self.server.post("/r?to=r", b"x", timeout=5)  # the inner r has no ?to=: its 400
        self.assertEqual(r.status, 400)
        self.assertIn("?to=ENDPOINT is required", r.json()["error"])


if __name__ == "__main__":
    unittest.main()
