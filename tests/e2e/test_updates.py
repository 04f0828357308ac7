"""Changing backends under load: user config through reconfigure, replica
counts, the plugin itself and a re-deployed file, with no failed request."""
import os
import tempfile
import threading
import time
import unittest

from serve_harness import ServeTestCase


class Load:
    """8 clients posting to a route until stopped; keeps every answer."""

    def __init__(self, server, path, clients=8):
        self.server, self.path = server, path
        self.answers, self.stop = [], threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def run(self):
        while not self.stop.is_set():
            try:
                r = self.server.post(self.path, b"x")
                answer = (r.status, r.body)
            except Exception as e:  # a dropped connection is a failure too
                answer = (0, repr(e).encode())
            with self.lock:
                self.answers.append(answer)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()
        return self.answers


class Updates(ServeTestCase):
    def test_reconfigure_keeps_replica_state(self):
        self.server.deploy("c", "counter", "/c")
        self.assertEqual([self.server.post("/c").body for _ in range(3)], [b"1", b"2", b"3"])
        self.server.cli("update-backend", "c", "--config", "step=10")
        self.assertEqual(self.server.post("/c").body, b"13")
        self.assertEqual(self.server.backend_status("c")["spec"]["config"], {"step": "10"})
        self.assertIn("backend=c: reconfigured", self.server.log())
        self.server.cli("update-backend", "c", "--unset-config", "step")
        self.assertEqual(self.server.post("/c").body, b"14")

    def test_refused_reconfigure_changes_nothing(self):
        self.server.deploy("c", "counter", "/c", "--num-replicas", "2")
        proc = self.server.cli("update-backend", "c", "--config", "step=lots", check=False)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("reconfigure failed", proc.stderr)
        self.assertEqual(self.server.backend_status("c")["spec"]["config"], {})
        self.assertEqual(self.server.post("/c").status, 200)

    def test_plugin_without_reconfigure_is_replaced(self):
        self.server.deploy("e", "echo", "/e")
        self.server.cli("update-backend", "e", "--config", "mode=loud")
        log = self.server.log()
        # The log tells the steps in the order they ran: new replicas serve
        # first, then the old ones drain.
        routed = log.index("backend=e: new replicas running and routed to")
        self.assertLess(routed, log.index("backend=e: draining and stopping the old replicas"))
        self.assertEqual(self.server.post("/e", b"hi").body, b"hi")
        self.server.cli("update-backend", "e", "--num-replicas", "3")
        metrics = self.server.get("/metrics").body.decode()
        self.assertIn('serve_backend_replica_restarts_total{backend="e"} 4\n', metrics)

    def test_batching_options_apply_to_the_next_batches(self):
        self.server.deploy("sim", "sim", "/sim")
        self.assertEqual(self.server.post("/sim").json()["batch_size"], 1)
        self.server.cli("update-backend", "sim", "--max-batch-size", "4",
                        "--batch-wait-timeout-ms", "500")
        answers = self.server.concurrent([b""] * 4, "/sim")
        self.assertEqual([a.json()["batch_size"] for a in answers], [4] * 4)

    def test_no_request_fails_during_updates(self):
        self.server.deploy("z", "counter", "/z", "--max-batch-size", "4",
                           "--batch-wait-timeout-ms", "1", "--config", "start=1000000")
        deploy_file = os.path.join(self.server.state_dir, "z.yaml")
        load = Load(self.server, "/z")
        steps = [
            ("update-backend", "z", "--config", "step=2"),        # reconfigure
            ("update-backend", "z", "--num-replicas", "4"),       # scale up
            ("update-backend", "z", "--num-replicas", "1"),       # scale down
            ("update-backend", "z", "--plugin", "echo"),          # another .so
            ("update-backend", "z", "--plugin", "counter"),       # and back
            ("deploy", deploy_file),                              # a changed file
        ]
        try:
            for step in steps:
                time.sleep(0.6)
                if step[0] == "deploy":
                    with open(deploy_file, "w") as f:
                        f.write("backends:\n  - name: z\n    plugin: counter\n"
                                "    num_replicas: 2\n    config: {start: \"5000000\"}\n"
                                "endpoints:\n  - name: z\n    route: /z\n    backend: z\n")
                self.server.cli(*step)
            time.sleep(0.6)
        finally:
            answers = load.finish()
        failures = [a for a in answers if a[0] != 200]
        self.assertEqual(failures, [], "%d of %d requests failed" % (len(failures), len(answers)))
        self.assertGreater(len(answers), 500)
        for status, body in answers:
            self.assertTrue(body == b"x" or body.isdigit(), body)
        self.assertTrue(any(b == b"x" for _, b in answers))              # the echo version answered
        self.assertTrue(any(b.isdigit() and int(b) > 5000000 for _, b in answers))  # the deployed one


if __name__ == "__main__":
    unittest.main()
