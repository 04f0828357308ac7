"""The batching rule (SPEC section 3), observed from the batch sizes the
sim plugin reports for every request it answers."""
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

from serve_harness import ServeTestCase, test_plugin


class Batching(ServeTestCase):
    def test_batch_is_held_until_it_fills(self):
        # max 3, a wait far longer than the test: only a third request may
        # release the first two.
        self.server.deploy("sim", "sim", "/sim", "--max-batch-size", "3",
                           "--batch-wait-timeout-ms", "60000")
        with ThreadPoolExecutor(max_workers=3) as pool:
            first = [pool.submit(self.server.post, "/sim") for _ in range(2)]
            time.sleep(0.5)
            self.assertFalse(any(f.done() for f in first), "a partial batch left early")
            self.assertEqual(self.server.backend_status("sim")["queued"], 2)
            t0 = time.monotonic()
            third = pool.submit(self.server.post, "/sim")
            answers = [f.result(timeout=10) for f in first + [third]]
            self.assertLess(time.monotonic() - t0, 5)
        self.assertEqual([a.status for a in answers], [200, 200, 200])
        self.assertEqual([a.json()["batch_size"] for a in answers], [3, 3, 3])
        self.assertEqual(sorted(a.json()["index"] for a in answers), [0, 1, 2])

    def test_lone_request_leaves_after_the_wait(self):
        self.server.deploy("sim", "sim", "/sim", "--max-batch-size", "8",
                           "--batch-wait-timeout-ms", "300")
        self.server.post("/sim")  # warm the connection path
        t0 = time.monotonic()
        r = self.server.post("/sim")
        elapsed = time.monotonic() - t0
        self.assertEqual(r.json()["batch_size"], 1)
        self.assertGreaterEqual(elapsed, 0.29)
        self.assertLess(elapsed, 2.0)

    def test_wait_counts_from_the_first_request(self):
        # The second request arrives 200 ms after the first; both leave at
        # 400 ms after the first, in one batch.
        self.server.deploy("sim", "sim", "/sim", "--max-batch-size", "8",
                           "--batch-wait-timeout-ms", "400")
        with ThreadPoolExecutor(max_workers=2) as pool:
            t0 = time.monotonic()
            a = pool.submit(self.server.post, "/sim")
            time.sleep(0.2)
            b = pool.submit(self.server.post, "/sim")
            ra, rb = a.result(), b.result()
            elapsed = time.monotonic() - t0
        self.assertEqual((ra.json()["batch_size"], rb.json()["batch_size"]), (2, 2))
        self.assertGreaterEqual(elapsed, 0.39)
        self.assertLess(elapsed, 0.4 + 1.5)

    def test_batches_never_exceed_max_under_load(self):
        self.server.deploy("sim", "sim", "/sim", "--max-batch-size", "4",
                           "--batch-wait-timeout-ms", "5", "--config", "base_us=2000",
                           "--max-queued-requests", "4096")

        def client(_):
            return [self.server.post("/sim") for _ in range(5)]

        with ThreadPoolExecutor(max_workers=64) as pool:
            answers = [a for batch in pool.map(client, range(64)) for a in batch]
        self.assertEqual(len(answers), 320)
        self.assertTrue(all(a.status == 200 for a in answers))
        sizes = [a.json()["batch_size"] for a in answers]
        self.assertLessEqual(max(sizes), 4)
        self.assertEqual(max(sizes), 4, "64 concurrent clients never filled a batch of 4")
        for a in answers:
            self.assertLess(a.json()["index"], a.json()["batch_size"])

    def test_max_batch_one_never_waits(self):
        self.server.deploy("sim", "sim", "/sim", "--max-batch-size", "1",
                           "--batch-wait-timeout-ms", "10000")
        t0 = time.monotonic()
        for _ in range(5):
            self.assertEqual(self.server.post("/sim").json()["batch_size"], 1)
        self.assertLess(time.monotonic() - t0, 3)

    def test_deep_queue_drains_completely(self):
        self.server.deploy("sim", "sim", "/sim", "--max-batch-size", "16",
                           "--config", "per_item_us=100", "--max-queued-requests", "5000")

        def client(_):
            return [self.server.post("/sim").status for _ in range(25)]

        with ThreadPoolExecutor(max_workers=40) as pool:
            statuses = [s for batch in pool.map(client, range(40)) for s in batch]
        self.assertEqual(statuses, [200] * 1000)
        status = self.server.backend_status("sim")
        self.assertEqual(status["requests"], 1000)
        self.assertEqual(status["queued"], 0)
        self.assertEqual(status["in_flight"], 0)

    def test_replicas_share_the_load(self):
        self.server.deploy("sim", "sim", "/sim", "--num-replicas", "3",
                           "--config", "base_us=20000")
        answers = self.server.concurrent([b""] * 30, "/sim")
        replicas = {a.json()["replica"] for a in answers}
        self.assertEqual(replicas, {0, 1, 2})

    def test_plugin_errors_reach_only_their_requests(self):
        self.server.deploy("f", test_plugin("faulty"), "/f", "--max-batch-size", "5",
                           "--batch-wait-timeout-ms", "2000")
        answers = self.server.concurrent([b"ok", b"fail", b"ok", b"skip", b"ok"], "/f")
        by_body = {}
        for body, a in zip([b"ok", b"fail", b"ok", b"skip", b"ok"], answers):
            by_body.setdefault(body, []).append(a)
        for a in by_body[b"ok"]:
            self.assertEqual((a.status, a.body), (200, b"ok batch=5"))
        self.assertEqual(by_body[b"fail"][0].status, 500)
        self.assertEqual(by_body[b"fail"][0].json(), {"error": "faulty: this request failed"})
        skipped = by_body[b"skip"][0]
        self.assertEqual(skipped.status, 500)
        self.assertIn("returned without answering", skipped.json()["error"])
        self.assertIn("backend=f replica=0", self.server.log())
        self.assertIn("plugin bug: returned without answering", self.server.log())

    def test_double_answer_is_refused_and_first_stands(self):
        self.server.deploy("f", test_plugin("faulty"), "/f")
        r = self.server.post("/f", b"twice")
        self.assertEqual((r.status, r.body), (200, b"ok batch=1"))
        self.assertIn("answered the same request twice", self.server.log())
        self.assertNotIn("second answer was not refused", self.server.log())
        self.assertEqual(self.server.post("/f", b"ok").status, 200)

    def test_failed_batch_answers_500_to_unanswered(self):
        self.server.deploy("f", test_plugin("faulty"), "/f", "--max-batch-size", "3",
                           "--batch-wait-timeout-ms", "2000")
        answers = self.server.concurrent([b"ok", b"crashbatch", b"ok"], "/f")
        statuses = sorted(a.status for a in answers)
        self.assertEqual(statuses, [200, 200, 500])
        failed = [a for a in answers if a.status == 500][0]
        self.assertIn("plugin failed on this batch", failed.json()["error"])

    def test_a_failed_batch_is_logged_at_most_once_a_second(self):
        for isolation in ("process", "thread"):
            with self.subTest(isolation=isolation):
                name = "f_" + isolation
                self.server.deploy(name, test_plugin("faulty"), "/" + name, "--isolation",
                                   isolation)
                started = time.monotonic()
                for _ in range(5):
                    self.assertEqual(self.server.post("/" + name, b"crashbatch").status, 500)
                took = time.monotonic() - started
                line = "backend=%s replica=0: handle_batch returned -1 for a batch of 1" % name
                deadline = time.monotonic() + 10
                while line not in self.server.log():
                    self.assertLess(time.monotonic(), deadline, self.server.log()[-2000:])
                    time.sleep(0.05)
                self.assertLessEqual(self.server.log().count(line), 1 + int(took))

    def test_deferred_answers_from_another_thread(self):
        self.server.deploy("f", test_plugin("faulty"), "/f", "--max-batch-size", "4",
                           "--batch-wait-timeout-ms", "50")
        answers = self.server.concurrent([b"defer:100"] * 4 + [b"ok"] * 4, "/f")
        self.assertEqual([a.status for a in answers], [200] * 8)
        self.assertEqual([a.body for a in answers[:4]], [b"deferred"] * 4)


if __name__ == "__main__":
    unittest.main()
