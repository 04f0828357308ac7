"""Process replicas (the default isolation): a plugin that crashes, aborts,
exits, hangs or grows without end costs only the requests its replica held.

Each faulty mode runs under load: 16 clients on the faulty backend, 16 on a
healthy echo backend, while a few requests inject the fault. The echo
backend must see no failure; on the faulty backend exactly the requests the
dying replica held fail (the server's log line names them, and the failed
answers carry those ids), each with the documented status and message; the
replica serves again within its backoff; metrics and status count what was
injected."""
import os
import re
import threading
import time
import unittest

from serve_harness import SANITIZED, Server, test_plugin

# A deliberate crash must die of its signal, not be reported by the
# sanitizer as a bug of ours (its report would fail the log check).
for var, extra in (("ASAN_OPTIONS", "handle_segv=0:handle_sigbus=0:handle_abort=0:detect_leaks=0"),
                   ("TSAN_OPTIONS", "handle_segv=0:handle_sigbus=0:handle_abort=0")):
    os.environ[var] = ":".join(filter(None, [os.environ.get(var, ""), extra]))

SECONDS = float(os.environ.get("SERVE_ISOLATION_SECONDS", "3" if SANITIZED else "10"))
INJECTIONS = 3
CLIENTS = 16
# Backoffs of the first three restarts (100, 200, 400 ms), with room for a
# loaded 2-core machine and a sanitized build.
BACK_WITHIN_S = (0.1, 0.2, 0.4)
SLACK_S = 8 if SANITIZED else 3

MODES = {
    # body: (status, message pattern, metric reason, extra backend options)
    "segv": (502, r"died \(SIGSEGV\)", "SIGSEGV", ()),
    "abort": (502, r"died \(SIGABRT\)", "SIGABRT", ()),
    "exit": (502, r"died \(exit status 3\)", "exit", ()),
    "loop": (504, r"hung \(handle_batch ran past --hang-timeout-ms 300; killed\)", "hang",
             ("--hang-timeout-ms", "300")),
    "grow": (502, r"died \(killed at \d+M resident, over --max-memory 256M\)", "memory",
             ("--max-memory", "256M")),
    "thread-segv": (502, r"died \(SIGSEGV\)", "SIGSEGV", ()),
}


class Load:
    """CLIENTS threads POSTing `body` to `path` until stopped; records every
    answer (status, request id, body)."""

    def __init__(self, server, path, body=b"ok"):
        self.server, self.path, self.body = server, path, body
        self.results, self.errors = [], []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run) for _ in range(CLIENTS)]
        for t in self.threads:
            t.start()

    def run(self):
        while not self.stop.is_set():
            try:
                r = self.server.post(self.path, self.body, timeout=60)
            except Exception as e:  # noqa: BLE001 - every failure counts
                with self.lock:
                    self.errors.append(repr(e))
                continue
            with self.lock:
                self.results.append((r.status, r.headers.get("x-request-id"), r.body))

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()
        return self.results


class Isolation(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()
        cls.server.deploy("echo", "echo", "/echo")

    @classmethod
    def tearDownClass(cls):
        cls.server.close()

    def check_mode(self, mode):
        status, pattern, reason, options = MODES[mode]
        s = self.server
        name = "f_" + mode.replace("-", "_")
        s.deploy(name, test_plugin("faulty"), "/" + name, *options)
        healthy = Load(s, "/echo", b"hello")
        faulty = Load(s, "/" + name)
        injected = []
        started = time.monotonic()
        for k in range(INJECTIONS):
            time.sleep(SECONDS / (INJECTIONS + 1))
            r = s.post("/" + name, mode.encode(), timeout=60)
            injected.append(r)
            self.assertEqual(r.status, status, r)
            self.assertRegex(r.json()["error"],
                             r"^backend %s replica 0 %s while it held this request$" % (name, pattern))
            # Back within its backoff: the next request is answered by the
            # restarted replica.
            t0 = time.monotonic()
            after = s.post("/" + name, b"ok", timeout=60)
            self.assertEqual(after.status, 200, after)
            self.assertLess(time.monotonic() - t0, BACK_WITHIN_S[k] + SLACK_S)
        time.sleep(max(0.0, SECONDS - (time.monotonic() - started)))
        healthy_results = healthy.finish()
        faulty_results = faulty.finish()

        # The healthy backend: every request answered 200.
        self.assertEqual(healthy.errors, [])
        self.assertTrue(healthy_results)
        self.assertEqual([r for r in healthy_results if r[0] != 200], [])

        # The faulty backend: the failures are exactly the requests the
        # log says the dying replica held, each with the documented answer.
        self.assertEqual(faulty.errors, [])
        failed = [r for r in faulty_results if r[0] != 200] + \
                 [(r.status, r.headers.get("x-request-id"), r.body) for r in injected]
        for st, rid, body in failed:
            self.assertEqual(st, status, body)
            self.assertRegex(body.decode(), pattern)
        log = s.log()
        held = set()
        lines = re.findall(r"backend=%s replica=0 pid=\d+ .*?; (\d+) request\(s\) it held failed: ([0-9a-f,]+)"
                           % name, log)
        self.assertEqual(len(lines), INJECTIONS, log[-3000:])
        for count, ids in lines:
            self.assertEqual(int(count), len(ids.split(",")))
            held.update(ids.split(","))
        self.assertEqual({rid for _, rid, _ in failed}, held)
        # The crash report of the replica process: where, and a backtrace.
        if mode == "segv":
            self.assertIn("fatal signal SIGSEGV in backend=%s replica=0\n" % name, log)
            self.assertRegex(log, r"faulty\.so\(|faulty\.so\+")
        if mode == "thread-segv":
            self.assertRegex(log, r"fatal signal SIGSEGV in a thread of plugin \S*faulty\.so")
        self.assertGreater(len([r for r in faulty_results if r[0] == 200]), 0)

        # Status and metrics count what was injected.
        b = s.backend_status(name)
        self.assertEqual(b["crashes"], INJECTIONS)
        self.assertRegex(b["last_crash"], r"^replica 0 " + pattern)
        self.assertEqual(b["isolation"], "process")
        metrics = s.get("/metrics").body.decode()
        self.assertIn('serve_backend_replica_crashes_total{backend="%s",reason="%s"} %d'
                      % (name, reason, INJECTIONS), metrics)
        text = s.cli("status").stdout
        self.assertIn("backend %s: %d replica crash(es); last: replica 0 " % (name, INJECTIONS), text)

    def test_segv(self):
        self.check_mode("segv")

    def test_abort(self):
        self.check_mode("abort")

    def test_exit(self):
        self.check_mode("exit")

    def test_endless_loop(self):
        self.check_mode("loop")

    @unittest.skipIf(SANITIZED, "a sanitizer's allocator keeps memory of its own; "
                                "resident size is only meaningful in the plain build")
    def test_allocation_without_end(self):
        self.check_mode("grow")

    def test_crash_on_a_plugin_thread(self):
        self.check_mode("thread-segv")


class InitFailsAfterCrash(unittest.TestCase):
    def test_backend_answers_503_with_the_reason_then_recovers(self):
        s = Server()
        try:
            flag = os.path.join(s.state_dir, "crash-init")
            s.deploy("f", test_plugin("faulty"), "/f", "--config", "crash_init_if=" + flag)
            open(flag, "w").close()
            r = s.post("/f", b"segv")
            self.assertEqual(r.status, 502)
            # Each restart's init now crashes: no silent wait, a 503 that
            # says why.
            deadline = time.monotonic() + 30
            while True:
                r = s.post("/f", b"ok")
                if r.status == 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            self.assertEqual(r.status, 503, r)
            self.assertRegex(r.json()["error"],
                             r"^backend f replica 0 cannot restart: plugin .*faulty\.so: init failed: "
                             r"the replica process died \(SIG(SEGV)\)$")
            self.assertIn("restart failed", s.log())
            os.remove(flag)
            deadline = time.monotonic() + 30
            while s.post("/f", b"ok").status != 200:
                self.assertLess(time.monotonic(), deadline, "the replica never came back")
                time.sleep(0.1)
        finally:
            s.close()


class OtherReplicasServe(unittest.TestCase):
    def test_a_request_after_a_crash_goes_to_the_replica_that_is_up(self):
        # Replica 0 crashes until its backoff is long (100 ms doubling); the
        # request sent next is answered by replica 1 at once. It used to
        # wake the dead replica's worker and wait out the whole backoff.
        s = Server()
        try:
            s.deploy("two", test_plugin("faulty"), "/two", "--num-replicas", "2")
            crashes = 0
            deadline = time.monotonic() + 120
            while crashes < 6:
                self.assertLess(time.monotonic(), deadline)
                if s.post("/two", b"segv0").status == 502:
                    crashes += 1
                    if crashes < 6:  # let replica 0 come back, so that it crashes again
                        while s.log().count("backend=two replica=0: restarted") < crashes:
                            self.assertLess(time.monotonic(), deadline)
                            time.sleep(0.05)
            # Replica 0's backoff is now 3.2 s.
            for _ in range(3):
                t0 = time.monotonic()
                self.assertEqual(s.post("/two", b"ok").status, 200)
                self.assertLess(time.monotonic() - t0, 2.0)
            # The history survives an update that replaces the replicas.
            s.cli("update-backend", "two", "--num-replicas", "1")
            b = s.backend_status("two")
            self.assertEqual(b["crashes"], 6)
            self.assertRegex(b["last_crash"], r"^replica 0 died \(SIGSEGV\)$")
            self.assertIn("backend two: 6 replica crash(es); last: replica 0 died (SIGSEGV)",
                          s.cli("status").stdout)
        finally:
            s.close()


class ProcessBatchFigures(unittest.TestCase):
    def test_exec_time_is_the_childs_handle_batch(self):
        # run_batch returns as soon as the batch is handed over; the time in
        # handle_batch comes from the child, as do the batch-size figures.
        s = Server()
        try:
            s.deploy("f", test_plugin("faulty"), "/f", "--request-timeout-ms", "100")
            r = s.post("/f", b"sleep:400")
            self.assertEqual(r.status, 504)
            deadline = time.monotonic() + 20
            while "handle_batch of 1 ran" not in s.log():
                self.assertLess(time.monotonic(), deadline, s.log()[-2000:])
                time.sleep(0.1)
            metrics = s.get("/metrics").body.decode()
            total = float(re.search(r'serve_backend_exec_seconds_sum\{backend="f"\} (\S+)',
                                    metrics).group(1))
            self.assertGreaterEqual(total, 0.4)
        finally:
            s.close()

    def test_requests_go_to_the_least_loaded_replica(self):
        # A request handed to a process replica waits in its ring behind
        # the ones it holds: two slow requests at once must run on two
        # replicas side by side, not one after the other on the first.
        s = Server()
        try:
            s.deploy("two", test_plugin("faulty"), "/two", "--num-replicas", "2")
            s.post("/two", b"ok")
            answers = []
            threads = [threading.Thread(target=lambda: answers.append(
                s.post("/two", b"sleep:1000", timeout=60))) for _ in range(2)]
            started = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            took = time.monotonic() - started
            self.assertEqual([r.status for r in answers], [200, 200])
            self.assertLess(took, 1.7, "the two requests ran one after the other")
        finally:
            s.close()

    def test_large_bodies_that_do_not_fit_go_through_the_worker(self):
        # With max batch 1, I/O threads and the thread that reads a
        # replica's answers hand it requests themselves, but may not wait
        # for room in its work ring (an I/O thread has other clients; the
        # answers reader would wait on a child that waits for it): 64
        # bodies of 60 KB, in flight at once, are more than the work ring
        # holds while the child sleeps, and what does not fit must go
        # through the replica's worker, in full, none lost or stuck.
        s = Server()
        try:
            s.deploy("big", test_plugin("faulty"), "/big", "--max-concurrent-queries", "64")
            bodies = [b"slow-echo:2:" + bytes([65 + k % 26]) * (60 << 10) for k in range(64)]
            failures = []

            def client(k):
                for _ in range(3 if SANITIZED else 10):
                    r = s.post("/big", bodies[k], timeout=60)
                    if r.status != 200 or r.body != bodies[k]:
                        failures.append((r.status, len(r.body)))
                        return

            threads = [threading.Thread(target=client, args=(k,)) for k in range(64)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            self.assertFalse(any(t.is_alive() for t in threads), "clients stuck")
            self.assertEqual(failures, [])
        finally:
            s.close()


class ThreadIsolation(unittest.TestCase):
    def test_thread_mode_is_kept_and_refuses_max_memory(self):
        s = Server()
        try:
            s.deploy("t", "echo", "/t", "--isolation", "thread")
            self.assertEqual(s.post("/t", b"x").body, b"x")
            self.assertEqual(s.backend_status("t")["isolation"], "thread")
            self.assertEqual(s.backend_status("t")["spec"]["isolation"], "thread")
            bad = s.cli("create-backend", "u", "echo", "--isolation", "thread", "--max-memory",
                        "1G", check=False)
            self.assertNotEqual(bad.returncode, 0)
            self.assertIn("--max-memory needs --isolation process", bad.stderr)
            bad = s.cli("create-backend", "u", "echo", "--isolation", "vm", check=False)
            self.assertIn("--isolation vm: expected process or thread", bad.stderr)
            # Switching a running backend's isolation replaces its replicas.
            s.cli("update-backend", "t", "--isolation", "process")
            self.assertEqual(s.backend_status("t")["isolation"], "process")
            self.assertEqual(s.post("/t", b"y").body, b"y")
        finally:
            s.close()


class NoOrphans(unittest.TestCase):
    def replica_pids(self, server_pid):
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if len(argv) > 4 and argv[1] == b"__replica-host":
                pids.append(int(entry))
        return pids

    def test_replicas_die_with_stop_and_with_sigkill(self):
        before = set(self.replica_pids(0))
        for how in ("stop", "kill"):
            s = Server()
            s.deploy("e", "echo", "/e", "--num-replicas", "3")
            self.assertEqual(s.post("/e", b"x").status, 200)
            mine = set(self.replica_pids(0)) - before
            self.assertEqual(len(mine), 3)
            if how == "stop":
                s.stop()
            else:
                s.kill()
            deadline = time.monotonic() + 20
            while set(self.replica_pids(0)) & mine:
                self.assertLess(time.monotonic(), deadline, "replicas outlived the server (%s)" % how)
                time.sleep(0.05)
            s.close()


if __name__ == "__main__":
    unittest.main()
