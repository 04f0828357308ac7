"""valgrind memcheck over a whole start / serve / stop cycle of the plain
build: no invalid read or write, no use of uninitialised memory, no definite
leak. Skipped where valgrind is not installed, and for sanitized builds
(their runtimes and valgrind cannot share a process)."""
import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.request

from serve_harness import SANITIZED, SERVE_BIN, run_cli, test_plugin


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@unittest.skipIf(SANITIZED, "sanitized build")
@unittest.skipIf(not shutil.which("valgrind"), "valgrind is not installed")
class Valgrind(unittest.TestCase):
    def test_start_serve_stop_is_clean(self):
        state = tempfile.mkdtemp(prefix="serve-valgrind-")
        port = free_port()
        log = os.path.join(state, "valgrind.log")
        server = subprocess.Popen(
            ["valgrind", "--error-exitcode=99", "--leak-check=full",
             "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite",
             "--track-origins=yes", "--log-file=" + log,
             SERVE_BIN, "--state-dir", state, "start", "--foreground",
             "--http", "127.0.0.1:%d" % port, "--http-threads", "2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while True:
                self.assertIsNone(server.poll(), "the server exited while starting")
                if run_cli(state, "status", check=False).returncode == 0:
                    break
                self.assertLess(time.monotonic(), deadline, "no server after 60 s")
                time.sleep(0.5)
            url = "http://127.0.0.1:%d" % port
            run_cli(state, "create-backend", "echo", "echo", "--max-batch-size", "4")
            run_cli(state, "create-endpoint", "echo", "--backend", "echo", "--route", "/echo")
            run_cli(state, "create-backend", "relay", test_plugin("relay"))
            run_cli(state, "create-endpoint", "relay", "--backend", "relay", "--route", "/relay")
            for i in range(20):
                req = urllib.request.Request(url + "/echo", data=b"hello %d" % i)
                self.assertEqual(urllib.request.urlopen(req, timeout=30).read(), b"hello %d" % i)
            req = urllib.request.Request(url + "/relay?to=echo", data=b"through")
            self.assertEqual(urllib.request.urlopen(req, timeout=30).read(), b"through")
            urllib.request.urlopen(url + "/metrics", timeout=30).read()
            run_cli(state, "update-backend", "echo", "--num-replicas", "2")
            run_cli(state, "delete-endpoint", "relay")
            run_cli(state, "delete-backend", "relay")
            run_cli(state, "stop", timeout=120)
            rc = server.wait(timeout=120)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        with open(log) as f:
            report = f.read()
        shutil.rmtree(state, ignore_errors=True)
        self.assertEqual(rc, 0, report[-6000:])
        self.assertIn("ERROR SUMMARY: 0 errors", report)


if __name__ == "__main__":
    unittest.main()
