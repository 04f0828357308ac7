"""Every way a plugin can fail to load gives one clear line naming the path,
a non-zero exit, and a server that goes on serving."""
import os
import tempfile
import unittest

from serve_harness import ServeTestCase, test_plugin


class BadPlugins(ServeTestCase):
    def setUp(self):
        super().setUp()
        self.server.deploy("echo", "echo", "/echo")

    def assert_refused(self, plugin, *expected, options=()):
        proc = self.server.cli("create-backend", "bad", plugin, *options, check=False)
        self.assertNotEqual(proc.returncode, 0)
        lines = proc.stderr.splitlines()
        self.assertEqual(len(lines), 1, proc.stderr)
        self.assertTrue(lines[0].startswith("serve: create-backend: plugin "), lines[0])
        for text in expected:
            self.assertIn(text, lines[0])
        self.assertEqual(self.server.post("/echo", b"alive").body, b"alive")
        self.assertEqual([b["spec"]["name"] for b in self.server.status()["backends"]], ["echo"])
        return lines[0]

    def test_missing_file(self):
        path = "/nonexistent/dir/model.so"
        self.assert_refused(path, path, "No such file or directory")

    def test_not_a_shared_object(self):
        with tempfile.NamedTemporaryFile(suffix=".so", delete=False) as f:
            f.write(b"#!/bin/sh\necho not a plugin\n")
        try:
            self.assert_refused(f.name, f.name, "not a shared object")
        finally:
            os.unlink(f.name)

    def test_truncated_elf(self):
        with open(test_plugin("faulty"), "rb") as src, \
                tempfile.NamedTemporaryFile(suffix=".so", delete=False) as f:
            f.write(src.read()[:200])
        try:
            self.assert_refused(f.name, f.name, "cannot load")
        finally:
            os.unlink(f.name)

    def test_missing_entry_symbol(self):
        path = test_plugin("no_entry")
        line = self.assert_refused(path)
        self.assertEqual(line, "serve: create-backend: plugin %s: missing symbol serve_plugin_entry"
                         % path)

    def test_abi_mismatch(self):
        path = test_plugin("bad_abi")
        line = self.assert_refused(path)
        self.assertEqual(line, "serve: create-backend: plugin %s: built for SDK ABI version 99, "
                         "this server speaks version 1" % path)

    def test_a_plugin_for_a_newer_server_says_so(self):
        path = test_plugin("newer_sdk")
        line = self.assert_refused(path)
        self.assertEqual(line, "serve: create-backend: plugin %s: needs a newer server: it calls "
                         "serve_request_tensor_count, which this server (SDK ABI version 1) "
                         "does not have" % path)

    def test_descriptors_of_other_sizes(self):
        # Built before the descriptor stated its size (data right after
        # it), and built against a newer header (fields this server does
        # not know): both load, in both isolation modes, and serve.
        for plugin, answer in (("old_descriptor", b"old"), ("newer_descriptor", b"newer")):
            for isolation in ("process", "thread"):
                with self.subTest(plugin=plugin, isolation=isolation):
                    name = "%s_%s" % (plugin, isolation)
                    self.server.deploy(name, test_plugin(plugin), "/" + name,
                                       "--isolation", isolation)
                    self.assertEqual(self.server.post("/" + name, b"x").body, answer)
                    self.server.cli("delete-endpoint", name)
                    self.server.cli("delete-backend", name)
        path = test_plugin("short_descriptor")
        line = self.assert_refused(path)
        self.assertEqual(line, "serve: create-backend: plugin %s: descriptor smaller than the "
                         "first one of this ABI version" % path)

    def test_init_failure_carries_the_plugins_reason(self):
        path = test_plugin("init_fail")
        self.assert_refused(path, path, "init failed: model file /models/x.pt is missing",
                            options=("--config", "model=/models/x.pt"))

    def test_init_failure_in_one_of_three_replicas(self):
        path = test_plugin("init_fail")
        self.assert_refused(path, "init failed in replica 2 of 3", options=(
            "--num-replicas", "3", "--config", "fail_replica=2"))
        self.assertIn("backend=bad replica=2: init failed", self.server.log())
        # The same plugin with healthy replicas loads fine, twice over.
        self.server.cli("create-backend", "good", path, "--num-replicas", "3",
                        "--config", "fail_replica=7")
        self.server.cli("create-backend", "good2", path, "--config", "fail_replica=7")

    def test_same_plugin_in_two_backends_has_separate_state(self):
        self.server.cli("create-backend", "c1", "counter")
        self.server.cli("create-backend", "c2", "counter", "--config", "start=10")
        self.server.cli("create-endpoint", "c1", "--backend", "c1", "--route", "/c1")
        self.server.cli("create-endpoint", "c2", "--backend", "c2", "--route", "/c2")
        self.assertEqual([self.server.post("/c1").body for _ in range(3)], [b"1", b"2", b"3"])
        self.assertEqual(self.server.post("/c2").body, b"11")


if __name__ == "__main__":
    unittest.main()
