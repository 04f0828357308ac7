"""Deploy files: applied, idempotent, removal of what is no longer named,
bad files refused whole with file, line and reason."""
import json
import os
import tempfile
import textwrap
import unittest

from serve_harness import Server, ServeTestCase, run_cli

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")

GOOD = """\
backends:
  - name: counter1
    plugin: counter
    num_replicas: 2
    max_batch_size: 8
    batch_wait_timeout_ms: 5
    config: {start: "100"}
  - name: other
    plugin: echo
endpoints:
  - name: counter1
    route: /increment
    methods: [GET, POST]
    backend: counter1
    shadow: {other: 0.1}
  - name: hidden
    backend: other
"""


class Deploy(ServeTestCase):
    def write(self, text, name="deploy.yaml"):
        path = os.path.join(self.server.state_dir, name)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
        return path

    def snapshot(self):
        s = self.server.status()
        return ([b["spec"] for b in s["backends"]], s["endpoints"])

    def test_apply_then_idempotent(self):
        path = self.write(GOOD)
        out = self.server.cli("deploy", path).stdout
        self.assertIn("created backend counter1", out)
        self.assertIn("created endpoint hidden", out)
        self.assertEqual(self.server.post("/increment").body, b"101")
        before = self.snapshot()
        requests = self.server.backend_status("counter1")["requests"]
        out = self.server.cli("deploy", path).stdout
        self.assertIn("no changes", out)
        self.assertEqual(self.snapshot(), before)
        # The same replicas kept serving: the count went on.
        self.assertEqual(self.server.backend_status("counter1")["requests"], requests)
        spec = self.server.backend_status("counter1")["spec"]
        self.assertEqual((spec["num_replicas"], spec["max_batch_size"], spec["config"]),
                         (2, 8, {"start": "100"}))

    def test_removes_what_the_file_no_longer_names(self):
        self.server.cli("deploy", self.write(GOOD))
        self.server.deploy("manual", "echo", "/manual")
        smaller = self.write("""\
            backends:
              - name: counter1
                plugin: counter
            endpoints:
              - name: counter1
                route: /increment
                backend: counter1
            """, "smaller.yaml")
        out = self.server.cli("deploy", smaller).stdout
        for line in ("deleted backend other", "deleted endpoint hidden", "deleted backend manual",
                     "updated backend counter1", "updated endpoint counter1"):
            self.assertIn(line, out)
        names = [b["spec"]["name"] for b in self.server.status()["backends"]]
        self.assertEqual(names, ["counter1"])
        self.assertEqual(self.server.post("/manual").status, 404)

    def test_bad_files_are_refused_whole(self):
        self.server.cli("deploy", self.write(GOOD))
        before = self.snapshot()
        cases = {
            "syntax": ("backends:\n  - name: a\n    plugin: [echo\n", ":4: ", "flow sequence"),
            "plugin": ("backends:\n  - name: a\n    plugin: no_such_plugin\n", ":3: ",
                       "plugin no_such_plugin not found"),
            "split": ("backends:\n  - name: a\n    plugin: echo\nendpoints:\n  - name: e\n"
                      "    traffic: {a: 0.5, ghost: 0.5}\n", ":6: ",
                      "backend ghost is not defined in this file"),
            "weights": ("backends:\n  - name: a\n    plugin: echo\n  - name: b\n    plugin: echo\n"
                        "endpoints:\n  - name: e\n    traffic: {a: 0.5, b: 0.4}\n", ":8: ",
                        "weights must sum to 1, these sum to 0.9"),
            "key": ("backends:\n  - name: a\n    plugin: echo\n    max_batch: 3\n", ":4: ",
                    "unknown backend key 'max_batch'"),
            "option": ("backends:\n  - name: a\n    plugin: echo\n    num_replicas: 0\n", ":2: ",
                       "backend a: num_replicas must be between 1 and 256"),
            "relative": ("backends:\n  - name: a\n    plugin: ./missing.so\n", ":3: ",
                         "missing.so: No such file or directory"),
            # Found by fuzz_deploy: the first value leaked and the second won.
            "twice": ("backends:\n  - name: a\n    plugin: echo\n    plugin: counter\n", ":4: ",
                      "'plugin' given twice"),
            "both": ("backends:\n  - name: a\n    plugin: echo\nendpoints:\n  - name: e\n"
                     "    backend: a\n    traffic: {a: 1}\n", ":7: ",
                     "give backend: or traffic:, not both"),
            "split twice": ("backends:\n  - name: a\n    plugin: echo\nendpoints:\n  - name: e\n"
                            "    traffic: {a: 0.5, a: 0.5}\n", ":6: ", "'a' given twice"),
            "isolation": ("backends:\n  - name: a\n    plugin: echo\n    isolation: vm\n", ":4: ",
                          "isolation must be process or thread"),
            "max_memory": ("backends:\n  - name: a\n    plugin: echo\n    max_memory: lots\n",
                           ":4: ", "max_memory must be a size"),
            "thread memory": ("backends:\n  - name: a\n    plugin: echo\n    isolation: thread\n"
                              "    max_memory: 1G\n", ":2: ", "max_memory needs --isolation process"),
        }
        for name, (text, line, reason) in cases.items():
            path = self.write(text, name + ".yaml")
            proc = self.server.cli("deploy", path, check=False)
            self.assertNotEqual(proc.returncode, 0, name)
            self.assertIn(path + line, proc.stderr, name)
            self.assertIn(reason, proc.stderr, name)
            self.assertEqual(proc.stderr.count("\n"), 1, proc.stderr)
        self.assertEqual(self.snapshot(), before)
        self.assertEqual(self.server.post("/increment").status, 200)

    def test_isolation_options(self):
        self.server.cli("deploy", self.write("""\
            backends:
              - name: t
                plugin: echo
                isolation: thread
                hang_timeout_ms: 250
              - name: p
                plugin: echo
                max_memory: 64M
            endpoints:
              - {name: t, route: /t, backend: t}
              - {name: p, route: /p, backend: p}
            """))
        t, p = self.server.backend_status("t"), self.server.backend_status("p")
        self.assertEqual((t["isolation"], t["spec"]["hang_timeout_ms"]), ("thread", 250))
        self.assertEqual((p["isolation"], p["spec"]["max_memory"]), ("process", 64 << 20))
        self.assertEqual(self.server.post("/t", b"x").body, b"x")
        self.assertEqual(self.server.post("/p", b"y").body, b"y")
        # They survive a restart (the state file keeps them).
        self.server.stop()
        self.server.start()
        self.assertEqual(self.server.backend_status("t")["isolation"], "thread")
        self.assertEqual(self.server.backend_status("p")["spec"]["max_memory"], 64 << 20)

    def test_plugin_paths_are_relative_to_the_file(self):
        plugins = os.environ.get("SERVE_BUILD_PLUGIN_DIR",
                                 os.path.join(ROOT, "build", "plugins"))
        folder = tempfile.mkdtemp(dir=self.server.state_dir)
        os.symlink(os.path.join(plugins, "echo.so"), os.path.join(folder, "my_echo.so"))
        path = os.path.join(folder, "d.yaml")
        with open(path, "w") as f:
            f.write("backends:\n  - name: e\n    plugin: ./my_echo.so\n"
                    "endpoints:\n  - name: e\n    route: /e\n    backend: e\n")
        self.server.cli("deploy", path)
        self.assertEqual(self.server.post("/e", b"relative").body, b"relative")

    def test_composition_sample_deploys(self):
        self.server.cli("deploy", os.path.join(ROOT, "samples/composition/deploy.yaml"))
        r = self.server.post("/composed", b"data")
        self.assertIn(r.json()["model_used"], (1, 2))
        self.assertEqual(self.server.get("/-/routes").json(), {"/composed": "composed"})


class StartWithDeploy(unittest.TestCase):
    def test_start_deploy(self):
        s = Server("--deploy", os.path.join(ROOT, "samples/deploy/canary.yaml"))
        try:
            versions = {s.post("/score").body[:1] for _ in range(200)}
            self.assertEqual(versions, {b"1", b"2"})
        finally:
            s.close()

    def test_start_with_a_bad_file_fails(self):
        folder = tempfile.mkdtemp()
        bad = os.path.join(folder, "bad.yaml")
        with open(bad, "w") as f:
            f.write("endpoints: [")
        proc = run_cli(folder, "start", "--http", "127.0.0.1:0", "--deploy", bad, check=False)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn(bad + ":", proc.stderr)


if __name__ == "__main__":
    unittest.main()
