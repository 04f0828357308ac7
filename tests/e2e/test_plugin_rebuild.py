"""The plugin author's loop: rebuild a plugin at the same path, then update.

A backend runs the file as it was when the server accepted it (a private
copy in the state dir, named by its content): rewriting the running file
in place changes nothing until an update, an update with a rebuilt file
loads the new code, the same bytes again are "no changes", and a restart
loads what the state names. Both isolation modes."""
import os
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

from serve_harness import SERVE_BIN, Server

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
CC = os.environ.get("CC", "cc")

SOURCE = r"""
#include <serve/plugin.h>
static int batch(void *state, serve_request *const *requests, size_t n)
{
    (void)state;
    for (size_t i = 0; i < n; i++)
        serve_respond(requests[i], 200, "text/plain", VERSION, sizeof VERSION - 1);
    return 0;
}
static const serve_plugin plugin = {
    .abi_version = SERVE_ABI_VERSION, .name = "version", .handle_batch = batch,
};
SERVE_PLUGIN_DEFINE(plugin)
"""


def build(workdir, version, out):
    """Compiles the plugin answering `version` into `out` (a new file)."""
    src = os.path.join(workdir, "version.c")
    with open(src, "w") as f:
        f.write(SOURCE)
    subprocess.run([CC, "-shared", "-fPIC", "-O1", "-I", os.path.join(ROOT, "sdk"),
                    '-DVERSION="%s"' % version, "-o", out, src], check=True)


def rewrite_in_place(src, dst):
    """What `cp src dst` does to an existing dst: same inode, truncated and
    rewritten."""
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "r+b") as f:
        f.truncate(0)
        f.write(data)


class Load:
    """8 clients GETting `path` until stopped; every answer kept."""

    def __init__(self, server, path):
        self.server, self.path = server, path
        self.answers, self.errors = [], []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run) for _ in range(8)]
        for t in self.threads:
            t.start()

    def run(self):
        while not self.stop.is_set():
            try:
                r = self.server.get(self.path, timeout=30)
                self.answers.append((r.status, r.body))
            except Exception as e:  # noqa: BLE001 - every failure counts
                self.errors.append(repr(e))

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()
        return self.answers


class Rebuild(unittest.TestCase):
    isolation = "process"

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="serve-rebuild-")
        self.plugin = os.path.join(self.work, "version.so")
        for v in ("v1", "v2", "v3"):
            build(self.work, v, os.path.join(self.work, v + ".so"))
        shutil.copy(os.path.join(self.work, "v1.so"), self.plugin)
        self.server = Server()
        self.server.deploy("ver", self.plugin, "/ver", "--isolation", self.isolation)

    def tearDown(self):
        self.server.close()
        shutil.rmtree(self.work, ignore_errors=True)

    def version(self):
        r = self.server.get("/ver")
        self.assertEqual(r.status, 200, r)
        return r.body.decode()

    def test_rewriting_the_running_file_in_place_changes_nothing(self):
        load = Load(self.server, "/ver")
        time.sleep(0.3)
        rewrite_in_place(os.path.join(self.work, "v2.so"), self.plugin)
        time.sleep(1.0)
        answers = load.finish()
        self.assertEqual(load.errors, [])
        self.assertTrue(answers)
        self.assertEqual({a for a in answers if a != (200, b"v1")}, set())
        self.assertTrue(self.server.alive())

    def test_rebuild_then_update_runs_the_new_code_without_a_failed_request(self):
        load = Load(self.server, "/ver")
        time.sleep(0.3)
        rewrite_in_place(os.path.join(self.work, "v2.so"), self.plugin)
        out = self.server.cli("update-backend", "ver", "--plugin", self.plugin).stdout
        self.assertIn("backend ver updated", out)
        time.sleep(0.5)
        answers = load.finish()
        self.assertEqual(load.errors, [])
        self.assertEqual({s for s, _ in answers}, {200})
        self.assertEqual(answers[-1], (200, b"v2"))
        self.assertEqual(self.version(), "v2")
        # The same bytes again: nothing to do.
        out = self.server.cli("update-backend", "ver", "--plugin", self.plugin).stdout
        self.assertIn("backend ver: no changes", out)
        self.assertIn("no changes", self.server.cli(
            "deploy", self.deploy_file()).stdout)

    def test_a_relative_path_is_the_same_file(self):
        rewrite_in_place(os.path.join(self.work, "v2.so"), self.plugin)
        proc = subprocess.run([os.path.abspath(SERVE_BIN), "--state-dir", self.server.state_dir, "update-backend",
                               "ver", "--plugin", "./version.so"], cwd=self.work,
                              capture_output=True, text=True, check=True)
        self.assertIn("backend ver updated", proc.stdout)
        self.assertEqual(self.version(), "v2")

    def test_a_restart_after_a_rebuild_loads_what_the_state_says(self):
        rewrite_in_place(os.path.join(self.work, "v2.so"), self.plugin)
        self.server.cli("update-backend", "ver", "--plugin", self.plugin)
        # Rebuilt again, never updated: the acknowledged code is v2.
        rewrite_in_place(os.path.join(self.work, "v3.so"), self.plugin)
        self.server.stop()
        self.server.start()
        self.assertEqual(self.version(), "v2")
        store = os.path.join(self.server.state_dir, "plugins")
        self.assertEqual(len(os.listdir(store)), 1, os.listdir(store))

    def deploy_file(self):
        path = os.path.join(self.work, "serve.yaml")
        with open(path, "w") as f:
            f.write("backends:\n  - name: ver\n    plugin: version.so\n    isolation: %s\n"
                    "endpoints:\n  - name: ver\n    route: /ver\n    backend: ver\n"
                    % self.isolation)
        return path


class StoreRefused(unittest.TestCase):
    def test_a_copy_that_cannot_be_made_fails_the_command_and_changes_nothing(self):
        # The state dir's plugins/ is taken by a file: the copy cannot be
        # written; create-backend says why, and the server goes on serving.
        s = Server()
        try:
            s.deploy("echo", "echo", "/echo")
            store = os.path.join(s.state_dir, "plugins")
            shutil.rmtree(store)
            with open(store, "w") as f:
                f.write("not a folder")
            proc = s.cli("create-backend", "c", "counter", check=False)
            self.assertEqual(proc.returncode, 1)
            # (echo's copy went with the folder: it is the first to be made again)
            self.assertRegex(proc.stderr, r"^serve: create-backend: plugin \S+\.so: cannot copy "
                                          r"it to \S+/plugins/[0-9a-f]{16}-\w+\.so: Not a "
                                          r"directory\n$")
            self.assertEqual([b["spec"]["name"] for b in s.status()["backends"]], ["echo"])
            self.assertEqual(s.post("/echo", b"still").body, b"still")
            os.unlink(store)
        finally:
            s.close()


class RebuildThreadMode(Rebuild):
    isolation = "thread"


if __name__ == "__main__":
    unittest.main()
