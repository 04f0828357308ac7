"""Full queues answer 503 at once; slow answers become 504; both leave the
server serving."""
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

from serve_harness import ServeTestCase, test_plugin


class Backpressure(ServeTestCase):
    def test_full_queue_answers_503_at_once(self):
        # One replica, one request at a time (concurrency 1), 2 may wait.
        self.server.deploy("slow", "sim", "/slow", "--max-concurrent-queries", "1",
                           "--max-queued-requests", "2", "--config", "base_us=400000")
        t0 = time.monotonic()
        answers = self.server.concurrent([b""] * 8, "/slow")
        statuses = sorted(a.status for a in answers)
        # 2 queued, plus 1 executing when the replica took its first request
        # before the others arrived (on a slow, sanitized build it may not).
        self.assertIn(statuses.count(200), (2, 3), statuses)
        self.assertEqual(statuses.count(200) + statuses.count(503), 8, statuses)
        dropped = [a for a in answers if a.status == 503]
        for a in dropped:
            self.assertTrue(a.json()["error"].startswith(
                "request dropped: backend slow is overloaded"), a.json())
        self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual(self.server.post("/slow").status, 200)

    def test_request_timeout_gives_504_and_drops_late_answer(self):
        self.server.deploy("f", test_plugin("faulty"), "/f", "--request-timeout-ms", "200")
        t0 = time.monotonic()
        r = self.server.post("/f", b"sleep:800")
        self.assertEqual(r.status, 504)
        self.assertLess(time.monotonic() - t0, 0.75)
        self.assertIn("timed out after 200 ms in backend f", r.json()["error"])
        time.sleep(0.8)  # the late answer arrives and must be dropped safely
        self.assertEqual(self.server.post("/f", b"ok").status, 200)

    def test_timeout_catches_a_plugin_that_never_answers(self):
        self.server.deploy("f", test_plugin("faulty"), "/f", "--request-timeout-ms", "300")
        self.assertEqual(self.server.post("/f", b"never").status, 504)
        self.assertIn("backend=f replica=0 request=", self.server.log())
        self.assertIn("no answer within 300 ms; the client got 504", self.server.log())
        self.assertEqual(self.server.post("/f", b"ok").status, 200)
        # The unanswered request is still deferred; stopping the server must
        # settle it (answered by the runtime) and exit cleanly.
        self.server.stop()

    def test_queued_requests_time_out_too(self):
        self.server.deploy("f", test_plugin("faulty"), "/f", "--max-concurrent-queries", "1",
                           "--request-timeout-ms", "300")
        with ThreadPoolExecutor(max_workers=3) as pool:
            busy = pool.submit(self.server.post, "/f", b"sleep:600")
            time.sleep(0.1)  # the replica is busy; the next two must queue
            queued = [pool.submit(self.server.post, "/f", b"ok") for _ in range(2)]
            answers = [busy.result()] + [f.result() for f in queued]
        self.assertEqual([a.status for a in answers], [504, 504, 504])
        time.sleep(0.5)
        self.assertEqual(self.server.post("/f", b"ok").status, 200)
        status = self.server.backend_status("f")
        self.assertEqual((status["queued"], status["in_flight"]), (0, 0))


if __name__ == "__main__":
    unittest.main()
