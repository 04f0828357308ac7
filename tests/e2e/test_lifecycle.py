"""State dir, persistence across SIGKILL, graceful stop, the control rules."""
import os
import shutil
import socket
import stat
import struct
import subprocess
import tempfile
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

from serve_harness import SERVE_BIN, Server, ServeTestCase, run_cli


class Persistence(unittest.TestCase):
    def test_sigkill_then_restart_restores_everything(self):
        s = Server()
        try:
            s.deploy("counter1", "counter", "/increment", "--max-batch-size", "5",
                     "--batch-wait-timeout-ms", "5", "--config", "start=41")
            s.deploy("echo", "echo", "/echo", "--num-replicas", "2")
            s.cli("create-endpoint", "hidden", "--backend", "echo")
            self.assertEqual(s.post("/increment").body, b"42")
            s.kill()
            s.start()
            self.assertEqual(s.post("/increment").body, b"42")  # fresh replica state
            self.assertEqual(s.post("/echo", b"hi").body, b"hi")
            names = {e["name"]: e for e in s.status()["endpoints"]}
            self.assertEqual(set(names), {"counter1", "echo", "hidden"})
            self.assertIsNone(names["hidden"]["route"])
            b = s.backend_status("counter1")["spec"]
            self.assertEqual((b["max_batch_size"], b["batch_wait_timeout_ms"], b["config"]),
                             (5, 5.0, {"start": "41"}))
            self.assertEqual(s.backend_status("echo")["spec"]["num_replicas"], 2)
        finally:
            s.close()

    def test_state_dir_and_socket_are_private(self):
        s = Server()
        try:
            mode = stat.S_IMODE(os.stat(os.path.join(s.state_dir, "control.sock")).st_mode)
            self.assertEqual(mode, 0o600)
            self.assertEqual(stat.S_IMODE(os.stat(s.state_dir).st_mode), 0o700)
        finally:
            s.close()

    def test_second_server_on_same_state_dir_is_refused(self):
        s = Server()
        try:
            proc = run_cli(s.state_dir, "start", "--http", "127.0.0.1:0", check=False)
            self.assertNotEqual(proc.returncode, 0)
            self.assertIn("already runs on state dir", proc.stderr)
            self.assertEqual(s.get("/-/healthz").status, 200)
        finally:
            s.close()

    def test_corrupt_state_file_is_refused_and_kept(self):
        s = Server()
        s.deploy("echo", "echo", "/echo")
        s.stop()
        path = os.path.join(s.state_dir, "state.msgpack")
        with open(path, "rb") as f:
            good = f.read()
        with open(path, "wb") as f:
            f.write(good[: len(good) // 2])
        proc = run_cli(s.state_dir, "start", "--http", "127.0.0.1:0", check=False)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("state.msgpack is corrupt", proc.stderr)
        with open(path, "rb") as f:
            self.assertEqual(len(f.read()), len(good) // 2, "the state file was rewritten")
        s.close()

    def test_hostile_control_frames_are_refused(self):
        """Found by fuzz_control: a frame whose msgpack header claims 2^32
        elements made msgpack-c ask for about 100 GB."""
        s = Server()
        try:
            s.deploy("echo", "echo", "/echo")
            frames = [b"\xdd\xff\xff\xff\xff", b"\x81\xa3cmd\xdf\xff\xff\xff\xff",
                      b"\xc1", b"\x92\x01"]
            for frame in frames:
                sock = socket.socket(socket.AF_UNIX)
                sock.connect(os.path.join(s.state_dir, "control.sock"))
                sock.sendall(struct.pack(">I", len(frame)) + frame)
                answer = b""
                while len(answer) < 4 or len(answer) < 4 + struct.unpack(">I", answer[:4])[0]:
                    chunk = sock.recv(4096)
                    self.assertTrue(chunk, "the control connection closed without an answer")
                    answer += chunk
                sock.close()
                self.assertIn(b"malformed control frame", answer, frame)
            self.assertEqual(s.post("/echo", b"still").body, b"still")
        finally:
            s.close()

    def test_corrupt_state_files_of_every_kind_are_refused(self):
        for name, data in (("huge count", b"\x92\x01\xdf\xff\xff\xff\xff"),
                           ("not msgpack", b"\xc1\xc1"), ("empty", b"")):
            d = tempfile.mkdtemp(prefix="serve-test-")
            with open(os.path.join(d, "state.msgpack"), "wb") as f:
                f.write(data)
            proc = run_cli(d, "start", "--http", "127.0.0.1:0", check=False)
            self.assertNotEqual(proc.returncode, 0, name)
            self.assertIn("state.msgpack is corrupt", proc.stderr, name)
            shutil.rmtree(d, ignore_errors=True)

    def test_commands_without_a_server_say_so(self):
        s = Server()
        s.stop()
        proc = s.cli("list-backends", check=False)
        self.assertEqual(proc.returncode, 1)
        self.assertEqual(proc.stderr.count("\n"), 1)
        self.assertIn("no server is running on state dir", proc.stderr)
        s.close()


class GracefulStop(unittest.TestCase):
    def _stop_under_load(self, stop):
        s = Server()
        try:
            s.deploy("slow", "sim", "/slow", "--max-batch-size", "4",
                     "--config", "base_us=300000")
            with ThreadPoolExecutor(max_workers=12) as pool:
                futures = [pool.submit(s.post, "/slow") for _ in range(12)]
                time.sleep(0.2)  # all accepted, most still queued
                stop(s)
                answers = [f.result(timeout=30) for f in futures]
            self.assertEqual([a.status for a in answers], [200] * 12)
            self.assertFalse(s.alive())
            s.assert_log_clean()
        finally:
            s.close()

    def test_serve_stop_answers_everything_accepted(self):
        self._stop_under_load(lambda s: s.cli("stop"))

    def test_sigterm_answers_everything_accepted(self):
        def term(s):
            os.kill(s.pid, 15)
            for _ in range(1000):
                if not s.alive():
                    return
                time.sleep(0.01)
        self._stop_under_load(term)


class ControlRules(ServeTestCase):
    def test_delete_backend_refused_while_used(self):
        self.server.deploy("echo", "echo", "/echo")
        proc = self.server.cli("delete-backend", "echo", check=False)
        self.assertNotEqual(proc.returncode, 0)
        self.assertEqual(proc.stderr.strip(),
                         "serve: delete-backend: backend echo is used by endpoint echo; "
                         "delete that endpoint or move its traffic first")
        self.server.cli("delete-endpoint", "echo")
        self.assertEqual(self.server.post("/echo").status, 404)
        self.server.cli("delete-backend", "echo")
        self.assertEqual(self.server.status()["backends"], [])

    def test_duplicates_and_unknowns_are_refused(self):
        self.server.deploy("echo", "echo", "/echo")
        cases = [
            (["create-backend", "echo", "echo"], "backend echo already exists"),
            (["create-endpoint", "echo", "--backend", "echo"], "endpoint echo already exists"),
            (["create-endpoint", "e2", "--backend", "echo", "--route", "/echo"],
             "route /echo is already served by endpoint echo"),
            (["create-endpoint", "e3", "--backend", "nope"], "backend nope does not exist"),
            (["delete-endpoint", "nope"], "endpoint nope does not exist"),
            (["delete-backend", "nope"], "backend nope does not exist"),
            (["create-backend", "x", "echo", "--max-batch-size", "0"], "--max-batch-size 0"),
            (["create-backend", "bad name", "echo"], "backend name 'bad name' is invalid"),
            (["create-endpoint", "e4", "--backend", "echo", "--route", "nope"],
             "must start with '/'"),
            (["create-endpoint", "e5", "--backend", "echo", "--route", "/-/x"], "reserved"),
            (["create-endpoint", "e6", "--backend", "echo", "--methods", "FETCH"],
             "unknown HTTP method"),
            (["create-backend", "x", "nosuchplugin"], "plugin nosuchplugin not found"),
            (["frobnicate"], "unknown command"),
        ]
        for args, message in cases:
            proc = self.server.cli(*args, check=False)
            self.assertNotEqual(proc.returncode, 0, args)
            self.assertIn(message, proc.stderr, args)
            self.assertEqual(proc.stderr.count("\n"), 1, proc.stderr)
        self.assertEqual(self.server.post("/echo", b"still").body, b"still")

    def test_a_plugin_not_found_names_each_folder_once_and_plainly(self):
        def folders_named(plugin_path):
            env = dict(os.environ)
            env.pop("SERVE_PLUGIN_PATH", None)
            if plugin_path is not None:
                env["SERVE_PLUGIN_PATH"] = plugin_path
            proc = subprocess.run([SERVE_BIN, "--state-dir", self.server.state_dir,
                                   "create-backend", "x", "nosuchplugin"],
                                  capture_output=True, text=True, env=env, timeout=60)
            self.assertEqual(proc.returncode, 1, proc.stderr)
            listed = proc.stderr.strip().split(".so in ", 1)[1]
            return listed.split(" (SERVE_PLUGIN_PATH is unset)")[0].split(", "), proc.stderr

        folders, message = folders_named(None)
        self.assertIn("(SERVE_PLUGIN_PATH is unset)", message)
        self.assertGreaterEqual(len(folders), 2, message)
        for folder in folders:
            self.assertTrue(folder.startswith("/"), message)
            self.assertNotIn("/../", folder + "/", message)
            self.assertNotIn("/./", folder + "/", message)
        self.assertEqual(len(folders), len(set(folders)), message)
        # A folder given twice, and again as the build's own, is looked in once.
        build_plugins = os.path.join(os.path.dirname(os.path.realpath(SERVE_BIN)), "plugins")
        again, message = folders_named("/nonexistent-a:%s:/nonexistent-a" % build_plugins)
        self.assertEqual(again[:2], ["/nonexistent-a", build_plugins], message)
        self.assertEqual(len(again), len(set(again)), message)
        self.assertNotIn("unset", message)

    def test_a_change_that_cannot_be_persisted_is_undone(self):
        # The state file is written through STATE.tmp; a folder in its place
        # makes every write fail, as a full or read-only disk would (root
        # ignores permission bits, so they cannot stand in for it here).
        self.server.deploy("c", "counter", "/c")
        self.assertEqual(self.server.post("/c").body, b"1")
        blocker = os.path.join(self.server.state_dir, "state.msgpack.tmp")
        os.mkdir(blocker)
        try:
            for args in (["create-backend", "e", "echo"],
                         ["update-backend", "c", "--config", "step=10"],   # reconfigure, undone
                         ["update-backend", "c", "--num-replicas", "2"],   # replacement, undone
                         ["delete-endpoint", "c"]):
                proc = self.server.cli(*args, check=False)
                self.assertNotEqual(proc.returncode, 0, args)
                self.assertIn("cannot write state file", proc.stderr)
            status = self.server.status()
            self.assertEqual([b["spec"]["name"] for b in status["backends"]], ["c"])
            self.assertEqual(status["backends"][0]["spec"]["num_replicas"], 1)
            self.assertEqual(status["backends"][0]["spec"]["config"], {})
            # The same replica, with its old step, still serves.
            self.assertEqual(self.server.post("/c").body, b"2")
        finally:
            os.rmdir(blocker)
        self.server.cli("update-backend", "c", "--config", "step=10")
        self.assertEqual(self.server.post("/c").body, b"12")

    def test_bad_options_give_one_line_and_exit_2(self):
        cases = [
            (["create-backend", "x", "counter", "--num-replicas"],
             "missing value for option --num-replicas"),
            (["create-backend", "x", "counter", "--num-replica", "2"],
             "unknown option --num-replica (did you mean --num-replicas?)"),
            (["create-backend", "x", "counter", "--bogus"], "unknown option --bogus"),
            (["status", "--jso"], "unknown option --jso"),
        ]
        for args, message in cases:
            proc = self.server.cli(*args, check=False)
            self.assertEqual(proc.returncode, 2, args)
            self.assertEqual(proc.stderr.count("\n"), 1, proc.stderr)
            self.assertIn(message, proc.stderr)
        self.assertEqual(self.server.status()["backends"], [])

    def test_routes_match_longest_prefix_on_segments(self):
        self.server.cli("create-backend", "a", "counter", "--config", "start=100")
        self.server.cli("create-backend", "b", "counter", "--config", "start=200")
        self.server.cli("create-endpoint", "a", "--backend", "a", "--route", "/api")
        self.server.cli("create-endpoint", "b", "--backend", "b", "--route", "/api/v2")
        self.assertEqual(self.server.post("/api").body, b"101")
        self.assertEqual(self.server.post("/api/v1/x").body, b"102")
        self.assertEqual(self.server.post("/api/v2/x").body, b"201")
        self.assertEqual(self.server.post("/apix").status, 404)
        self.assertEqual(self.server.get("/-/routes").json(), {"/api": "a", "/api/v2": "b"})

    def test_methods_are_checked(self):
        self.server.cli("create-backend", "echo", "echo")
        self.server.cli("create-endpoint", "echo", "--backend", "echo", "--route", "/e",
                        "--methods", "POST")
        r = self.server.get("/e")
        self.assertEqual(r.status, 405)
        self.assertEqual(r.headers["allow"], "POST")
        self.assertIn("method GET not allowed", r.json()["error"])
        self.assertEqual(self.server.post("/e", b"x").status, 200)

    def test_list_commands(self):
        self.server.deploy("echo", "echo", "/echo")
        out = self.server.cli("list-backends").stdout
        self.assertIn("echo", out)
        out = self.server.cli("list-endpoints").stdout
        self.assertIn("/echo", out)
        import json
        self.assertEqual(json.loads(self.server.cli("list-endpoints", "--json").stdout),
                         [{"name": "echo", "route": "/echo", "methods": "GET,POST",
                           "traffic": {"echo": 1.0}, "shadow": {}}])


if __name__ == "__main__":
    unittest.main()
