"""The supervisor above the server process (SPEC 6a): a server process that
dies is started again, with its state, on the listening socket the
supervisor kept open, so that no client sees a refused connection; `serve
stop` and a SIGKILL of the supervisor leave no process behind; a failed
first start fails once, loudly. And the crash report a fatal signal leaves
in the log: where it happened (backend and replica, or the plugin .so of a
thread of its own) and the backtrace."""
import errno
import http.client
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import unittest

from serve_harness import Server, run_cli, state_dir_locked, test_plugin


def process_alive(pid):
    """True while pid runs (a zombie counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False




def wait_until(predicate, timeout=20, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.02)


class EchoLoop(threading.Thread):
    """POSTs to /echo on a fresh connection each time, until stopped; counts
    answers, refused connections, and other failures."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server = server
        self.stopped = threading.Event()
        self.answered = self.refused = self.failed = 0
        self.statuses = []  # answers other than the echo, by status

    def run(self):
        while not self.stopped.is_set():
            conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=10)
            try:
                conn.request("POST", "/echo", body=b"ping")
                response = conn.getresponse()
                if response.read() == b"ping":
                    self.answered += 1
                else:
                    self.statuses.append(response.status)
                    self.failed += 1
            except ConnectionRefusedError:
                self.refused += 1
            except OSError as e:
                if e.errno == errno.ECONNREFUSED:
                    self.refused += 1
                else:
                    self.failed += 1
            except http.client.HTTPException:
                self.failed += 1  # in flight when the process died
            finally:
                conn.close()

    def stop(self):
        self.stopped.set()
        self.join(30)


class Supervisor(unittest.TestCase):
    def setUp(self):
        self.server = Server()
        self.addCleanup(self.server.close)
        self.server.deploy("echo", "echo", "/echo")
        self.server.deploy("faulty", test_plugin("faulty"), "/faulty", "--isolation", "thread")

    def server_pid(self):
        return self.server.status()["server_pid"]

    def crash(self, body):
        """Sends the faulty plugin a request that kills the server process;
        the request gets no answer."""
        with self.assertRaises((http.client.HTTPException, OSError)):
            self.server.post("/faulty", body, timeout=10)

    def wait_restarted(self, old_pid):
        def new_pid():
            try:
                pid = self.server_pid()
            except AssertionError:
                return None  # the control socket is not back yet
            return pid if pid != old_pid else None
        return wait_until(new_pid, what="a new server process")

    def test_segv_in_a_replica_restarts_the_server_and_no_connection_is_refused(self):
        first = self.server_pid()
        self.assertNotEqual(first, self.server.pid)
        self.assertEqual(self.server.status()["pid"], self.server.pid)
        loop = EchoLoop(self.server)
        loop.start()
        try:
            wait_until(lambda: loop.answered > 20, what="echo answers")
            self.crash(b"segv")
            second = self.wait_restarted(first)
            answered = loop.answered
            wait_until(lambda: loop.answered > answered + 20, what="echo answers after the restart")
        finally:
            loop.stop()
        self.assertEqual(loop.refused, 0, "connections refused while the server restarted")
        # Nor a wrong answer: a connection waits until the routes are back
        # (the restarted process used to accept before restoring them: 404).
        self.assertEqual(loop.statuses, [], "answers other than the echo during the restart")
        self.assertFalse(process_alive(first))
        self.assertTrue(process_alive(self.server.pid), "the supervisor is gone")

        status = self.server.status()
        self.assertEqual(status["restarts"], 1)
        self.assertEqual(status["pid"], self.server.pid)
        self.assertEqual(sorted(b["spec"]["name"] for b in status["backends"]), ["echo", "faulty"])
        self.assertEqual(sorted(e["name"] for e in status["endpoints"]), ["echo", "faulty"])
        self.assertEqual(self.server.post("/echo", b"back").body, b"back")
        self.assertEqual(self.server.post("/faulty", b"ok").status, 200)

        log = self.server.log()
        self.assertRegex(log, r"error fatal signal SIGSEGV in backend=faulty replica=0\n")
        self.assertIn("error backtrace of the crashing thread (fault address 0x0):", log)
        self.assertRegex(log, r"faulty\.so\(|faulty\.so\+", "the backtrace names no plugin frame")
        self.assertIn("error server process %d died (SIGSEGV); restarting it" % first, log)
        self.assertIn("server process %d serves again (restart 1)" % second, log)
        # The text status names the server process too.
        text = self.server.cli("status").stdout
        self.assertIn("server process pid %d, restarted 1 time" % second, text)

    def test_a_crash_in_a_thread_of_the_plugin_names_the_plugin(self):
        first = self.server_pid()
        self.crash(b"thread-segv")
        self.wait_restarted(first)
        m = re.search(r"error fatal signal SIGSEGV in a thread of plugin (\S+)\n", self.server.log())
        self.assertTrue(m, self.server.log()[-3000:])
        self.assertEqual(os.path.realpath(m.group(1)), os.path.realpath(test_plugin("faulty")))
        self.assertEqual(self.server.post("/echo", b"back").body, b"back")

    def test_stop_after_a_restart_stops_both_processes(self):
        first = self.server_pid()
        os.kill(first, signal.SIGKILL)  # from outside: no crash report, a restart all the same
        second = self.wait_restarted(first)
        self.assertIn("error server process %d died (SIGKILL); restarting it" % first,
                      self.server.log())
        supervisor = self.server.pid
        out = self.server.stop().stdout  # returns once the state dir's lock is free
        self.assertIn("stopped (pid %d)" % supervisor, out)
        self.assertFalse(process_alive(second), "the server process outlived serve stop")
        self.assertFalse(process_alive(supervisor), "the supervisor outlived serve stop")
        self.assertNotIn("restarting it", self.server.log().split("received SIGTERM")[-1],
                         "a stop restarted the server")

    def test_sigterm_to_the_supervisor_stops_both_with_status_zero(self):
        server_pid, supervisor = self.server_pid(), self.server.pid
        os.kill(supervisor, signal.SIGTERM)
        wait_until(lambda: not process_alive(supervisor) and not self.server.state_dir_locked(),
                   what="the supervisor to exit")
        self.assertFalse(process_alive(server_pid))
        self.assertIn("info stopped", self.server.log())
        self.assertNotIn("restarting it", self.server.log())
        self.server.pid = None

    def test_sigkill_of_the_supervisor_leaves_no_server_process(self):
        server_pid = self.server_pid()
        self.server.kill()  # SIGKILL of the printed pid; waits for the lock
        wait_until(lambda: not process_alive(server_pid), timeout=10,
                   what="the server process to die with its supervisor")
        # The state dir and the port are free: a new server starts there.
        self.server.start()
        self.assertEqual(self.server.status()["restarts"], 0)
        self.assertEqual(self.server.post("/echo", b"again").body, b"again")


class FailedFirstStart(unittest.TestCase):
    def test_a_bad_deploy_file_fails_once_with_its_error(self):
        state_dir = tempfile.mkdtemp(prefix="serve-test-")
        self.addCleanup(shutil.rmtree, state_dir, True)
        bad = os.path.join(state_dir, "bad.yaml")
        with open(bad, "w") as f:
            f.write("backends:\n  - name: a\n    plugin: no_such_plugin\n")
        started = time.monotonic()
        proc = run_cli(state_dir, "start", "--http", "127.0.0.1:0", "--deploy", bad, check=False)
        self.assertLess(time.monotonic() - started, 20)
        self.assertNotEqual(proc.returncode, 0)
        self.assertEqual(proc.stderr.count("\n"), 1, proc.stderr)
        self.assertTrue(proc.stderr.startswith("serve: start: "), proc.stderr)
        self.assertIn("plugin no_such_plugin not found", proc.stderr)
        # Nothing runs there, and nothing restarted.
        self.assertFalse(state_dir_locked(state_dir))
        with open(os.path.join(state_dir, "serve.log")) as f:
            log = f.read()
        self.assertNotIn("restarting", log)
        self.assertEqual(log.count("plugin no_such_plugin not found"), 1, log)
        self.assertNotEqual(run_cli(state_dir, "status", check=False).returncode, 0)


if __name__ == "__main__":
    unittest.main()
