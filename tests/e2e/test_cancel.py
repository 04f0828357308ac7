"""Cancellation: a request whose client went away before it ran is never
executed.

50 clients send a request to a backend whose one replica is busy, then
close their connections; when the replica is free again, none of the 50
has run (the plugin's own count), serve_backend_cancelled_total says 50,
and the access log has 499 for each. Both isolation modes."""
import os
import socket
import threading
import time
import unittest

from serve_harness import SANITIZED, Server, test_plugin


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


class QueuedRequestsOfGoneClients(unittest.TestCase):
    def check(self, isolation):
        s = Server()
        log = os.path.join(s.state_dir, "access.log")
        s.stop()
        s.start_args = ("--access-log", log)
        s.start()
        try:
            # One in flight: the rest wait in the backend's queue, not in a
            # process replica's ring (where they would count as running).
            s.deploy("f", test_plugin("faulty"), "/f", "--isolation", isolation,
                     "--max-queued-requests", "100", "--max-concurrent-queries", "1")
            self.assertEqual(s.post("/f", b"count").body, b"1")
            busy = threading.Thread(target=lambda: s.post("/f", b"sleep:%d" % (
                3000 if SANITIZED else 1500), timeout=60))
            busy.start()
            time.sleep(0.3)  # the replica holds the sleep
            request = (b"POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            socks = [socket.create_connection((s.host, s.port)) for _ in range(50)]
            for sock in socks:
                sock.sendall(request)
            deadline = time.monotonic() + 20
            while s.backend_status("f")["queued"] < 50:
                self.assertLess(time.monotonic(), deadline, s.backend_status("f"))
                time.sleep(0.05)
            for sock in socks:
                sock.close()
            busy.join()
            # The sleep ran (2), then this one (3): none of the 50 did.
            self.assertEqual(s.post("/f", b"count").body, b"3")
            metrics = s.get("/metrics").body.decode()
            self.assertIn('serve_backend_cancelled_total{backend="f"} 50', metrics)
            self.assertEqual(s.backend_status("f")["cancelled"], 50)
            deadline = time.monotonic() + 10
            while read(log).count('"POST /f HTTP/1.1" 499 ') < 50:
                self.assertLess(time.monotonic(), deadline, read(log)[-3000:])
                time.sleep(0.05)
        finally:
            s.close()

    def test_process_replica(self):
        self.check("process")

    def test_thread_replica(self):
        self.check("thread")


class RunningRequestsOfGoneClients(unittest.TestCase):
    """A request already running sees serve_request_cancelled turn true,
    soon after its client left or its timeout passed, and stops."""

    def check(self, isolation):
        limit = 10 if SANITIZED else 3
        s = Server()
        try:
            # One replica: "cancels" waits behind the long request, so its
            # answer comes only once that request stopped.
            s.deploy("f", test_plugin("faulty"), "/f", "--isolation", isolation)
            before = int(s.post("/f", b"cancels").body)
            sock = socket.create_connection((s.host, s.port))
            sock.sendall(b"POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n"
                         b"wait-cancel:20000")
            time.sleep(0.5)  # running now
            left = time.monotonic()
            sock.close()
            self.assertEqual(int(s.post("/f", b"cancels", timeout=30).body), before + 1)
            self.assertLess(time.monotonic() - left, limit, "the plugin saw the cancel late")

            # The same for a request that times out.
            s.cli("update-backend", "f", "--request-timeout-ms", "300")
            before = int(s.post("/f", b"cancels").body)
            started = time.monotonic()
            self.assertEqual(s.post("/f", b"wait-cancel:20000", timeout=30).status, 504)
            self.assertEqual(int(s.post("/f", b"cancels", timeout=30).body), before + 1)
            self.assertLess(time.monotonic() - started, limit)
        finally:
            s.close()

    def test_process_replica(self):
        self.check("process")

    def test_thread_replica(self):
        self.check("thread")


if __name__ == "__main__":
    unittest.main()


class CancelCallbackAndStop(unittest.TestCase):
    """A thread replica's cancel callback that is still running when its
    backend is deleted: the replica's stop (the plugin's destroy, which
    frees the state the callback reads) waits for it. The callback runs on
    a plugin's own thread here (a caller cancelling its call), which no
    route change waits for. Under ASan the callback read freed memory
    before the fix."""

    def test_stop_waits_for_a_running_cancel_callback(self):
        s = Server()
        try:
            s.deploy("f", test_plugin("faulty"), None, "--isolation", "thread")
            s.deploy("r", test_plugin("relay"), "/r", "--isolation", "thread")
            answer = {}
            caller = threading.Thread(target=lambda: answer.update(
                r=s.post("/r?to=f&cancel_ms=100", b"slow-cancel", timeout=30)))
            caller.start()
            time.sleep(0.3)  # cancelled at 100 ms: f's callback runs until 600 ms
            s.cli("delete-endpoint", "f")
            s.cli("delete-backend", "f")
            caller.join()
            self.assertEqual(answer["r"].status, 499)
            time.sleep(0.5)  # the callback has ended: nothing it read was freed
            self.assertEqual(s.post("/r?to=nowhere", b"ok").status, 404)
        finally:
            s.close()
