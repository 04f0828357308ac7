"""serve start --deploy FILE --watch: an edit re-deploys within 2 s, a
broken edit is refused with its line while the server keeps serving, and a
ConfigMap-style symlink swap counts as an edit."""
import os
import re
import shutil
import signal
import tempfile
import time
import unittest

from serve_harness import Server, run_cli

ONE = """backends:
  - name: a
    plugin: echo
endpoints:
  - name: a
    route: /a
    backend: a
"""

TWO = ONE + """  - name: b
    route: /b
    backend: a
"""


def wait_for(predicate, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


class Watch(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="serve-watch-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.file = os.path.join(self.dir, "deploy.yaml")
        self.write(ONE)

    def write(self, text, path=None):
        # Written whole and renamed in, as editors and ConfigMaps do: never
        # a half-written file for the poll to see.
        path = path or self.file
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)

    def start(self, path=None):
        server = Server("--deploy", path or self.file, "--watch")
        self.addCleanup(server.close)
        return server

    def test_an_edit_redeploys_and_a_broken_one_is_refused(self):
        server = self.start()
        self.assertEqual(server.post("/a", b"x").body, b"x")
        self.assertEqual(server.post("/b", b"x").status, 404)
        self.write(TWO)
        t0 = time.monotonic()
        self.assertTrue(wait_for(lambda: server.post("/b", b"y").status == 200, 2.0),
                        "the edit was not deployed within 2 s")
        self.assertLess(time.monotonic() - t0, 2.0)
        # A broken edit: refused whole, logged with its line; both routes stay.
        self.write(TWO + "  - name: c\n    route: [unclosed\n")
        self.assertTrue(wait_for(lambda: "was refused" in server.log(), 2.0), server.log()[-2000:])
        refusal = [l for l in server.log().splitlines() if "was refused" in l][-1]
        self.assertRegex(refusal, re.escape(self.file) + r":1[34]: ")  # file:line: reason
        for path in ("/a", "/b"):
            self.assertEqual(server.post(path, b"z").status, 200)
        # A version that parses but cannot be applied is refused whole too.
        self.write(ONE.replace("plugin: echo", "plugin: no-such-plugin"))
        self.assertTrue(wait_for(lambda: server.log().count("was refused") >= 2, 2.0))
        self.assertEqual(server.post("/b", b"z").status, 200)
        # Fixed again: deployed (b goes, as the file says).
        self.write(ONE)
        self.assertTrue(wait_for(lambda: server.post("/b", b"y").status == 404, 2.0))
        self.assertEqual(server.post("/a", b"q").body, b"q")
        server.stop()

    def test_a_configmap_symlink_swap_is_an_edit(self):
        # Kubernetes mounts a ConfigMap as FILE -> ..data/FILE, ..data -> a
        # timestamped folder, and updates it by pointing ..data elsewhere.
        mount = os.path.join(self.dir, "mount")
        os.makedirs(os.path.join(mount, "v1"))
        self.write(ONE, os.path.join(mount, "v1", "deploy.yaml"))
        os.symlink("v1", os.path.join(mount, "..data"))
        os.symlink(os.path.join("..data", "deploy.yaml"), os.path.join(mount, "deploy.yaml"))
        server = self.start(os.path.join(mount, "deploy.yaml"))
        self.assertEqual(server.post("/b", b"x").status, 404)
        os.makedirs(os.path.join(mount, "v2"))
        self.write(TWO, os.path.join(mount, "v2", "deploy.yaml"))
        os.symlink("v2", os.path.join(mount, "..data_tmp"))
        os.replace(os.path.join(mount, "..data_tmp"), os.path.join(mount, "..data"))
        shutil.rmtree(os.path.join(mount, "v1"))
        self.assertTrue(wait_for(lambda: server.post("/b", b"y").status == 200, 2.0))
        server.stop()

    def test_a_restarted_server_applies_what_changed_while_it_was_down(self):
        # The state dir holds what the dead process had deployed; the file
        # changed meanwhile: the new process applies it at its first look.
        server = self.start()
        pid = server.server_pid()
        os.kill(pid, signal.SIGSTOP)  # it sees nothing from here on
        self.write(TWO)
        os.kill(pid, signal.SIGKILL)
        self.assertTrue(wait_for(lambda: self.serves(server, "/b"), 30),
                        "the restarted server did not apply the edit")
        self.assertNotEqual(server.server_pid(), pid)
        server.stop()

    @staticmethod
    def serves(server, path):
        try:
            return server.post(path, b"x", timeout=2).status == 200
        except OSError:
            return False  # between the two server processes

    def test_watch_needs_deploy(self):
        state = tempfile.mkdtemp(prefix="serve-watch-state-")
        self.addCleanup(shutil.rmtree, state, True)
        proc = run_cli(state, "start", "--http", "127.0.0.1:0", "--watch", check=False)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("--watch re-applies the file of --deploy FILE", proc.stderr)


if __name__ == "__main__":
    unittest.main()
