"""One slow or idle control client never blocks the others: idle
connections, a client trickling a frame byte by byte, and a `serve call`
whose client does not read its 15 MB answer leave `serve status`, `serve
stop` and the backend's HTTP traffic answering at once. The CLI gives up on a
server that does not answer (--control-timeout).

The server closes a control connection idle for 5 s, or whose frame has not
arrived whole 5 s after its first byte (CONTROL_IDLE_S, CONTROL_FRAME_S in
runtime/control.c). Bounds are wide: sanitizer builds run 5-20x slower."""
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest

from serve_harness import (SANITIZED, SERVE_BIN, FakeControlServer, Server, connect_control,
                           control_frame, mp_bin, mp_map, mp_str, read_frame, run_cli)

# How long a command that should answer at once may take.
PROMPT_S = 8 if SANITIZED else 2
# The server's limits for an idle connection and for one frame.
CONTROL_IDLE_S = CONTROL_FRAME_S = 5


def timed(fn, *args, **kw):
    start = time.monotonic()
    result = fn(*args, **kw)
    return result, time.monotonic() - start


def closed_within(sock, seconds):
    """True when the server closes `sock` within `seconds` (reading what it
    sends meanwhile)."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


class Trickler(threading.Thread):
    """Sends a status frame one byte a second for `seconds`, as slowloris
    would; notes when the server cut it off."""

    def __init__(self, state_dir, seconds):
        super().__init__(daemon=True)
        self.sock = connect_control(state_dir)
        self.frame = control_frame(mp_map(("cmd", mp_str("status")))) * 100
        self.seconds = seconds
        self.cut_off_after = None

    def run(self):
        start = time.monotonic()
        for i in range(self.seconds):
            try:
                self.sock.send(self.frame[i:i + 1])
            except OSError:
                self.cut_off_after = time.monotonic() - start
                break
            time.sleep(1)
        self.sock.close()


class SlowClients(unittest.TestCase):
    def setUp(self):
        self.server = Server()
        self.addCleanup(self.server.close)

    def test_idle_connections_block_nothing_and_are_closed(self):
        idle = [connect_control(self.server.state_dir) for _ in range(3)]
        for sock in idle:
            self.addCleanup(sock.close)
        proc, elapsed = timed(self.server.cli, "status")
        self.assertIn("serve at", proc.stdout)
        self.assertLess(elapsed, PROMPT_S, "serve status waited for idle control connections")
        for sock in idle:
            self.assertTrue(closed_within(sock, CONTROL_IDLE_S + 10),
                            "an idle control connection was never closed")

    def test_a_trickling_client_delays_neither_status_nor_stop(self):
        trickler = Trickler(self.server.state_dir, 10)
        trickler.start()
        time.sleep(1.5)
        proc, elapsed = timed(self.server.cli, "status", "--json")
        self.assertLess(elapsed, PROMPT_S, "serve status waited for a trickling client")
        trickler.join(30)
        self.assertIsNotNone(trickler.cut_off_after, "a frame sent over 10 s was accepted")
        self.assertLess(trickler.cut_off_after, CONTROL_FRAME_S + 3)

        trickler = Trickler(self.server.state_dir, 10)
        trickler.start()
        time.sleep(1.5)
        proc, elapsed = timed(self.server.stop)
        self.assertIn("stopped", proc.stdout)
        self.assertLess(elapsed, PROMPT_S + 2, "serve stop waited for a trickling client")
        trickler.join(30)

    def test_a_call_whose_client_does_not_read_holds_no_backend(self):
        self.server.deploy("echo", "echo", "/echo")
        body = os.urandom(15 * 1024 * 1024)
        sock = connect_control(self.server.state_dir)
        self.addCleanup(sock.close)
        sock.sendall(control_frame(mp_map(("cmd", mp_str("call")), ("endpoint", mp_str("echo")),
                                          ("body", mp_bin(body)))))
        # The 15 MB answer now waits for this client, which does not read.
        time.sleep(0.5)
        for i in range(3):
            answer, elapsed = timed(self.server.post, "/echo", b"hello %d" % i, timeout=60)
            self.assertEqual(answer.body, b"hello %d" % i)
            self.assertLess(elapsed, PROMPT_S, "HTTP waited for a control client that does not read")
        _, elapsed = timed(self.server.cli, "status")
        self.assertLess(elapsed, PROMPT_S)
        answer = read_frame(sock)
        self.assertIsNotNone(answer, "the answer was dropped before its deadline")
        self.assertTrue(answer.endswith(body), "the answer is not the echoed body")

    def test_pipelined_half_closed_and_oversized_frames(self):
        status = control_frame(mp_map(("cmd", mp_str("status"))))
        sock = connect_control(self.server.state_dir)
        self.addCleanup(sock.close)
        sock.sendall(status * 2)
        sock.shutdown(socket.SHUT_WR)  # the answers still come
        for _ in range(2):
            answer = read_frame(sock)
            self.assertIsNotNone(answer)
            self.assertIn(b"uptime_s", answer)
        self.assertIsNone(read_frame(sock), "the connection stayed open after EOF")

        sock = connect_control(self.server.state_dir)
        self.addCleanup(sock.close)
        sock.sendall(struct.pack(">I", 16 * 1024 * 1024 + 1) + b"x" * 1000)
        answer = read_frame(sock)
        self.assertIsNotNone(answer)
        self.assertIn(b"control frame too large", answer)
        self.assertTrue(closed_within(sock, 10))
        self.assertIn("serve at", self.server.cli("status").stdout)

    def test_serve_call_carries_a_15_mb_answer(self):
        self.server.deploy("echo", "echo")
        tmp = tempfile.mkdtemp(prefix="serve-test-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "body")
        body = os.urandom(15 * 1024 * 1024)
        with open(path, "wb") as f:
            f.write(body)
        proc = subprocess.run([SERVE_BIN, "--state-dir", self.server.state_dir, "call", "echo",
                               "--data", "@" + path], capture_output=True, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout, body)


class CliTimeout(unittest.TestCase):
    def setUp(self):
        self.state_dir = tempfile.mkdtemp(prefix="serve-test-")
        self.addCleanup(shutil.rmtree, self.state_dir, True)
        self.fake = FakeControlServer(self.state_dir)
        self.addCleanup(self.fake.close)

    def cli(self, *args):
        try:
            return timed(run_cli, self.state_dir, *args, check=False, timeout=60)
        except subprocess.TimeoutExpired:
            self.fail("serve %s waited without end for a server that does not answer" % args[-1])

    def test_the_cli_gives_up_on_a_server_that_does_not_answer(self):
        for args in (["--control-timeout", "2", "status"], ["status", "--control-timeout=2"],
                     ["--control-timeout", "2", "stop", "--timeout", "60"],
                     ["--control-timeout", "1.5", "call", "x", "--data", "y"]):
            with self.subTest(args=args):
                proc, elapsed = self.cli(*args)
                command = [a for a in args if a in ("status", "stop", "call")][0]
                limit = "1.5" if "1.5" in args else "2"
                self.assertEqual(proc.returncode, 1)
                self.assertEqual(proc.stderr, "serve: %s: no answer from the server in %s s\n"
                                 % (command, limit))
                self.assertGreater(elapsed, float(limit) - 0.2)
                self.assertLess(elapsed, float(limit) + PROMPT_S)
        self.assertEqual(self.fake.connections(), 4)

    def test_bad_control_timeouts_are_refused(self):
        for value in ("abc", "-1", "1e9", ""):
            with self.subTest(value=value):
                proc, _ = self.cli("--control-timeout", value, "status")
                self.assertEqual(proc.returncode, 2)
                self.assertEqual(proc.stderr, "serve: --control-timeout %s: expected seconds, "
                                 "0 (no limit) to 86400\n" % value)
        proc, _ = self.cli("status", "--control-timeout")
        self.assertEqual(proc.returncode, 2)
        self.assertEqual(proc.stderr, "serve: --control-timeout needs a number of seconds\n")


if __name__ == "__main__":
    unittest.main()
