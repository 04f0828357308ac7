"""Model composition through handles: the seed's composition example,
fan-out, and every target error reaching the caller."""
import os
import subprocess
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

from serve_harness import SERVE_BIN, ServeTestCase, test_plugin

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


class Composition(ServeTestCase):
    def relay(self, options=()):
        self.server.deploy("relay", test_plugin("relay"), "/relay", *options)

    def test_seed_example_from_curl_and_serve_call(self):
        env = dict(os.environ, SERVE=SERVE_BIN, SERVE_STATE_DIR=self.server.state_dir)
        subprocess.run(["bash", os.path.join(ROOT, "samples/composition/create.sh")],
                       env=env, check=True, capture_output=True)
        answers = [self.server.post("/composed", b"data %d" % i) for i in range(40)]
        used = set()
        for a in answers:
            self.assertEqual(a.status, 200, a)
            j = a.json()
            self.assertEqual(j["model_used"], 2 if j["score"] > 0.5 else 1, j)
            used.add(j["model_used"])
        self.assertEqual(used, {1, 2})
        proc = self.server.cli("call", "composed", "--data", "via handle")
        self.assertIn('"model_used": ', proc.stdout)
        self.assertIn("model_one got via handle", self.server.log())
        # model_one and model_two have no route.
        self.assertEqual(self.server.get("/-/routes").json(), {"/composed": "composed"})

    def test_serve_call_reaches_handle_only_endpoints(self):
        self.server.cli("create-backend", "echo", "echo")
        self.server.cli("create-endpoint", "hidden", "--backend", "echo")
        self.assertEqual(self.server.cli("call", "hidden", "--data", "secret").stdout, "secret")
        proc = self.server.cli("call", "nope", check=False)
        self.assertEqual(proc.returncode, 4)
        self.assertIn("nope answered 404", proc.stderr)

    def test_fan_out_of_32_calls_from_one_request(self):
        self.server.cli("create-backend", "scorer", "model_one", "--max-batch-size", "32",
                        "--batch-wait-timeout-ms", "20")
        self.server.cli("create-endpoint", "scorer", "--backend", "scorer")
        self.server.deploy("fan", "ensemble", "/fan", "--config", "members=scorer",
                           "--config", "repeat=32")
        r = self.server.post("/fan", b"x")
        self.assertEqual(r.status, 200)
        j = r.json()
        self.assertEqual((j["members"], j["answered"]), (32, 32))
        self.assertTrue(0 <= j["mean"] < 1)
        self.assertEqual(self.server.backend_status("scorer")["requests"], 32)
        # 32 parallel calls arrived together: batched, not one by one.
        self.assertLess(self.server.backend_status("scorer")["batches"], 32)

    def test_calls_answered_before_their_send_returns(self):
        # A fast target often answers a call before serve_call_send has
        # put it on its caller's list of calls; the call must then stay
        # off it (TSan saw the late link race the answer's unlink).
        for isolation in ("process", "thread"):
            self.server.cli("create-backend", "fast-" + isolation, "echo",
                            "--isolation", isolation, "--num-replicas", "2")
            self.server.cli("create-endpoint", "fast-" + isolation, "--backend", "fast-" + isolation)
            self.server.deploy("relay-" + isolation, test_plugin("relay"), "/relay-" + isolation,
                               "--isolation", isolation, "--max-batch-size", "8")
            path = "/relay-%s?to=fast-%s" % (isolation, isolation)
            with ThreadPoolExecutor(max_workers=8) as pool:
                answers = list(pool.map(lambda i: self.server.post(path, b"%d" % i), range(400)))
            self.assertEqual([a.body for a in answers], [b"%d" % i for i in range(400)])
        self.server.stop()  # the log has no sanitizer report

    def test_ensemble_latency_is_the_slowest_member(self):
        for m in ("s1", "s2", "s3"):
            self.server.cli("create-backend", m, "sim", "--config", "base_us=100000")
            self.server.cli("create-endpoint", m, "--backend", m)
        self.server.deploy("ens", "ensemble", "/ens", "--config", "members=s1,s2,s3")
        self.server.post("/ens", b"warm")
        t0 = time.monotonic()
        r = self.server.post("/ens", b"x")
        elapsed = time.monotonic() - t0
        self.assertEqual((r.status, r.json()["members"]), (200, 3))
        self.assertGreaterEqual(elapsed, 0.1)
        self.assertLess(elapsed, 0.2)
        for m in ("s1", "s2", "s3"):
            self.assertEqual(self.server.backend_status(m)["requests"], 2)

    def test_missing_endpoint_gives_404_to_the_caller(self):
        self.relay()
        r = self.server.post("/relay?to=nowhere", b"x")
        self.assertEqual(r.status, 404)
        self.assertEqual(r.json(), {"error": "no endpoint named nowhere"})

    def test_endpoint_created_after_the_caller_resolves(self):
        self.relay()
        self.assertEqual(self.server.post("/relay?to=later", b"x").status, 404)
        self.server.cli("create-backend", "later", "echo")
        self.server.cli("create-endpoint", "later", "--backend", "later")
        r = self.server.post("/relay?to=later", b"now")
        self.assertEqual((r.status, r.body), (200, b"now"))

    def test_target_at_its_queue_limit_gives_503(self):
        self.relay()
        self.server.cli("create-backend", "slow", "sim", "--max-concurrent-queries", "1",
                        "--max-queued-requests", "1", "--config", "base_us=800000")
        self.server.cli("create-endpoint", "slow", "--backend", "slow")
        # Occupy the one replica first and wait until it is in flight: a
        # burst that lands before the worker has taken its first request
        # would see two queued and rightly refuse the second.
        with ThreadPoolExecutor(max_workers=6) as pool:
            busy = pool.submit(self.server.post, "/relay?to=slow", b"")
            deadline = time.monotonic() + 5
            while self.server.backend_status("slow")["in_flight"] != 1:
                self.assertLess(time.monotonic(), deadline, "the first call never started")
                time.sleep(0.01)
            burst = [pool.submit(self.server.post, "/relay?to=slow", b"") for _ in range(5)]
            answers = [busy.result()] + [f.result() for f in burst]
        statuses = sorted(a.status for a in answers)
        self.assertEqual(statuses.count(200), 2, statuses)
        self.assertEqual(statuses.count(503), 4, statuses)
        for a in answers:
            if a.status == 503:
                self.assertTrue(a.json()["error"].startswith(
                    "request dropped: backend slow is overloaded"))

    def test_target_timeout_and_failure_reach_the_caller(self):
        self.relay()
        self.server.cli("create-backend", "f", test_plugin("faulty"), "--request-timeout-ms", "200")
        self.server.cli("create-endpoint", "f", "--backend", "f")
        r = self.server.post("/relay?to=f", b"fail")
        self.assertEqual((r.status, r.json()["error"]), (500, "faulty: this request failed"))
        self.assertEqual(self.server.post("/relay?to=f", b"never").status, 504)
        t0 = time.monotonic()
        r = self.server.post("/relay?to=f", b"sleep:1000")
        self.assertEqual(r.status, 504)
        self.assertLess(time.monotonic() - t0, 0.8)
        self.assertIn("timed out after 200 ms in backend f", r.json()["error"])
        time.sleep(1)  # the sleeping call's late answer is dropped safely
        self.assertEqual(self.server.post("/relay?to=f", b"ok").status, 200)

    def test_futures(self):
        self.relay()
        self.server.cli("create-backend", "echo", "echo")
        self.server.cli("create-endpoint", "echo", "--backend", "echo")
        r = self.server.post("/relay?to=echo&future=1", b"by future",
                             headers={"Content-Type": "text/x-test"})
        self.assertEqual((r.status, r.body), (200, b"by future"))
        self.assertEqual(self.server.post("/relay?to=missing&future=1", b"").status, 404)

    def test_concurrency_limit_holds_for_composed_models(self):
        # relay (composed) with max_concurrent_queries 10 in front of a target
        # that batches everything waiting: the target's batch size is exactly
        # the number of calls in flight.
        self.relay(("--max-concurrent-queries", "10", "--max-batch-size", "10",
                    "--max-queued-requests", "4096"))
        self.server.cli("create-backend", "target", "sim", "--max-batch-size", "64",
                        "--batch-wait-timeout-ms", "30", "--config", "base_us=10000")
        self.server.cli("create-endpoint", "target", "--backend", "target")

        def client(_):
            return [self.server.post("/relay?to=target", b"") for _ in range(5)]

        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=64) as pool:
            answers = [a for batch in pool.map(client, range(64)) for a in batch]
        self.assertLess(time.monotonic() - t0, 60)
        self.assertEqual([a.status for a in answers], [200] * 320)
        sizes = [a.json()["batch_size"] for a in answers]
        self.assertLessEqual(max(sizes), 10)
        self.assertEqual(max(sizes), 10, "the composed backend never had 10 calls in flight")
        status = self.server.backend_status("relay")
        self.assertEqual((status["queued"], status["in_flight"]), (0, 0))


if __name__ == "__main__":
    unittest.main()
