"""Hostile HTTP, from a security probe's findings (SPEC 4): request
smuggling through a HEAD body, a pipelining flood that never reads its
answers, running out of file descriptors, bodies held past the
body-memory budget, NUL bytes in framing headers, sloppy chunked
encoding, and the framing of answers (HEAD, CONNECT, absolute-form,
Expect: 100-continue, a leading CRLF, an unsupported version in a
pipeline, a partial request behind a complete one).

Every exchange is on a raw socket and every answer is parsed strictly:
an answer must start exactly where the previous one ended."""
import json
import os
import re
import selectors
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

from serve_harness import SANITIZED, Server, rss_kb

MiB = 1024 * 1024
# Sanitizer builds run 5-20x slower: waits for something that must happen
# stretch by this much (waits that prove something does NOT happen do not).
SLOW = 10 if SANITIZED else 1


def cpu_seconds(pid):
    """User + system CPU time of the whole process (all its threads)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Answer:
    def __init__(self, status, head, headers, body):
        self.status = status
        self.head = head  # the status line and header lines, as sent
        self.headers = headers  # lower-cased names; repeated ones joined by ", "
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "Answer(%d, %r, %r)" % (self.status, self.head[:300], self.body[:200])


class Conn:
    """A client connection that reads answers one at a time, strictly: an
    answer starts with `HTTP/1.1 NNN ` exactly where the last one ended, and
    its body is framed by Content-Length or chunked encoding (none for HEAD
    and 1xx), or runs to the close."""

    def __init__(self, server, timeout=10 * SLOW, port=None):
        self.sock = socket.create_connection((server.host, port or server.port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, what):
        if self.eof:
            raise AssertionError("connection closed while waiting for %s; unread: %r"
                                 % (what, self.buf[:300]))
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError("nothing more within %g s while waiting for %s; unread: %r"
                                 % (self.timeout, what, self.buf[:300])) from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            raise AssertionError("connection closed while waiting for %s; unread: %r"
                                 % (what, self.buf[:300]))
        self.buf += chunk

    def _take_line(self, what):
        while b"\r\n" not in self.buf:
            self._fill(what)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_answer(self, head_request=False):
        while b"\r\n\r\n" not in self.buf:
            if not self.eof and self.buf and not b"HTTP/1.1 ".startswith(self.buf[:9]):
                break
            self._fill("an answer's head")
        if not re.match(rb"HTTP/1\.1 \d{3} ", self.buf):
            raise AssertionError("an answer does not start where the last one ended: %r"
                                 % self.buf[:300])
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0][9:12])
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise AssertionError("header line without a colon: %r" % head)
            key = name.decode("latin-1").lower()
            value = value.strip().decode("latin-1")
            headers[key] = headers[key] + ", " + value if key in headers else value
        if head_request or status < 200 or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", ""):
            body = b""
            while True:
                size = int(self._take_line("a chunk size").split(b";")[0], 16)
                if size == 0:
                    while self._take_line("the trailer"):
                        pass
                    break
                while len(self.buf) < size + 2:
                    self._fill("chunk data")
                body += self.buf[:size]
                self.buf = self.buf[size + 2:]
        elif "content-length" in headers:
            n = int(headers["content-length"])
            while len(self.buf) < n:
                self._fill("a body of %d bytes" % n)
            body, self.buf = self.buf[:n], self.buf[n:]
        else:
            while not self.eof:
                try:
                    self._fill("the close that ends a body")
                except AssertionError:
                    if not self.eof:
                        raise
            body, self.buf = self.buf, b""
        return Answer(status, head, headers, body)

    def closed_within(self, seconds):
        """True if the server closes the connection within `seconds` (any
        bytes it sends before are kept in self.buf)."""
        deadline = time.monotonic() + seconds
        try:
            while not self.eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                try:
                    chunk = self.sock.recv(65536)
                except socket.timeout:
                    return False
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    self.eof = True
                self.buf += chunk
            return True
        finally:
            self.sock.settimeout(self.timeout)

    def quiet_for(self, seconds):
        """True if nothing arrives and the connection stays open for `seconds`."""
        return not self.buf and not self.closed_within(seconds) and not self.buf


def chunked_post(chunks):
    return b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks


SMUGGLED = b"GET /c HTTP/1.1\r\nHost: x\r\nX-Request-ID: SMUGGLED\r\n\r\n"
assert len(SMUGGLED) == 52


class HostileRequests(unittest.TestCase):
    """Single connections, one server for all: echo at /echo (GET, POST) and
    /c (the smuggling target), counter at /count (GET, HEAD, POST)."""

    @classmethod
    def setUpClass(cls):
        cls.server = Server("--read-timeout", "3", "--idle-timeout", "60")
        try:
            cls.server.deploy("echo", "echo", "/echo")
            cls.server.deploy("c", "echo", "/c")
            cls.server.cli("create-backend", "count", "counter")
            cls.server.cli("create-endpoint", "count", "--backend", "count", "--route", "/count",
                           "--methods", "GET,HEAD,POST")
        except BaseException:
            cls.server.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.server.close()

    def setUp(self):
        self.conns = []

    def tearDown(self):
        for c in self.conns:
            c.close()
        # After every case a good request on a new connection is served.
        self.assertEqual(self.server.post("/echo", b"alive").body, b"alive")

    def conn(self):
        c = Conn(self.server)
        self.conns.append(c)
        return c

    def assert_rejected(self, data, status=400):
        """One answer, `status` with Connection: close, then the close."""
        c = self.conn()
        c.send(data)
        a = c.read_answer()
        self.assertEqual(a.status, status, a)
        self.assertEqual(a.headers.get("connection", "").lower(), "close", a)
        self.assertTrue(c.closed_within(5 * SLOW), "the connection stayed open after %r" % a)
        self.assertEqual(c.buf, b"", "bytes after the %d answer" % status)
        return a

    # -- 1. smuggling through a HEAD body ----------------------------------
    def test_head_body_is_framed_not_a_second_request(self):
        c = self.conn()
        c.send(b"HEAD /-/healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 52\r\n\r\n" + SMUGGLED)
        a = c.read_answer(head_request=True)
        self.assertEqual(a.status, 200, a)
        self.assertNotEqual(a.headers.get("x-request-id"), "SMUGGLED")
        self.assertEqual(c.buf, b"", "bytes after the HEAD answer's headers")
        self.assertTrue(c.quiet_for(1.0), "a second answer (or a close) after one request: %r"
                        % c.buf[:300])
        c.send(b"GET /-/healthz HTTP/1.1\r\nHost: x\r\nX-Request-ID: after-head\r\n\r\n")
        a = c.read_answer()
        self.assertEqual((a.status, a.body, a.headers.get("x-request-id")),
                         (200, b"ok\n", "after-head"))

    # -- 5. NUL bytes in headers --------------------------------------------
    def test_nul_in_headers_is_rejected(self):
        cases = {
            "transfer-encoding": b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                                 b"Transfer-Encoding: chunked\x00, identity\r\n\r\n"
                                 b"5\r\nhello\r\n0\r\n\r\n",
            "content-length": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\x00 9\r\n\r\n"
                              b"hello",
            "x-request-id": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Request-ID: abc\x00def\r\n\r\n",
        }
        for name, data in cases.items():
            with self.subTest(header=name):
                self.assert_rejected(data)

    # -- 6. chunked encoding ---------------------------------------------------
    def test_bad_chunked_framing_is_rejected(self):
        cases = {
            "size 0x5": b"0x5\r\nhello\r\n0\r\n\r\n",
            "size +5": b"+5\r\nhello\r\n0\r\n\r\n",
            "size with a leading space": b" 5\r\nhello\r\n0\r\n\r\n",
            "size then junk": b"5 junk\r\nhello\r\n0\r\n\r\n",
            "size then NUL": b"5\x00zz\r\nhello\r\n0\r\n\r\n",
            "last chunk -0": b"5\r\nhello\r\n-0\r\n\r\n",
            "data without its CRLF": b"5\r\nhello5\r\nworld\r\n0\r\n\r\n",
            "blank line between chunks": b"5\r\nhello\r\n\r\n5\r\nworld\r\n0\r\n\r\n",
            "control character in a trailer": b"5\r\nhello\r\n0\r\nX-T: a\x01b\r\n\r\n",
        }
        for name, chunks in cases.items():
            with self.subTest(case=name):
                self.assert_rejected(chunked_post(chunks))

    def test_chunk_extension_is_valid(self):
        c = self.conn()
        c.send(chunked_post(b"5;foo=bar\r\nhello\r\n0\r\n\r\n"))
        a = c.read_answer()
        self.assertEqual((a.status, a.body), (200, b"hello"), a)

    # -- 7. framing of answers -------------------------------------------------
    def test_head_answers_carry_no_body(self):
        cases = [
            ("unknown route (404)", b"HEAD /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),
            ("method not allowed (405)", b"HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\n", 405),
            ("/-/healthz", b"HEAD /-/healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200),
            ("/metrics", b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 200),
            # counter answers every request with a body: HEAD must drop it.
            ("plugin endpoint that allows HEAD", b"HEAD /count HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        ]
        for i, (name, head, status) in enumerate(cases):
            with self.subTest(case=name):
                c = self.conn()
                c.send(head + b"GET /-/healthz HTTP/1.1\r\nHost: x\r\nX-Request-ID: next-%d\r\n\r\n"
                       % i)
                a = c.read_answer(head_request=True)
                self.assertEqual(a.status, status, a)
                # The next answer starts right after the blank line.
                b = c.read_answer()
                self.assertEqual((b.status, b.body, b.headers.get("x-request-id")),
                                 (200, b"ok\n", "next-%d" % i), b)

    def test_connect_gets_json_501_with_length_and_close(self):
        c = self.conn()
        c.send(b"CONNECT x:80 HTTP/1.1\r\nHost: x:80\r\n\r\n")
        a = c.read_answer()
        self.assertEqual(a.status, 501, a)
        self.assertEqual(a.headers.get("content-type"), "application/json", a)
        self.assertIn("content-length", a.headers, a)
        self.assertEqual(a.headers.get("connection", "").lower(), "close", a)
        self.assertIn("error", a.json())
        self.assertTrue(c.closed_within(5 * SLOW), "the connection stayed open after CONNECT")
        self.assertEqual(c.buf, b"")

    def test_absolute_form_is_routed_by_its_path_and_keeps_the_connection(self):
        c = self.conn()
        c.send(b"POST http://x/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabs"
               b"GET http://x/-/healthz HTTP/1.1\r\nHost: x\r\n\r\n"
               b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nafter")
        answers = []
        for _ in range(3):
            try:
                answers.append(c.read_answer())
            except AssertionError as e:
                self.fail("%d answer(s) %r, then: %s" % (len(answers), answers, e))
        self.assertEqual([(a.status, a.body) for a in answers],
                         [(200, b"abs"), (200, b"ok\n"), (200, b"after")])
        self.assertTrue(c.quiet_for(0.5), "closed or more bytes after three answers")

    def test_expect_continue_on_an_unknown_route_gets_the_404_directly(self):
        c = self.conn()
        c.send(b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        a = c.read_answer()
        self.assertEqual(a.status, 404, "no 100 Continue before the error: %r" % a)
        self.assertEqual(a.headers.get("connection", "").lower(), "close", a)
        self.assertTrue(c.closed_within(5 * SLOW), "the connection stayed open after the 404")

    def test_expect_continue_on_a_good_route_gets_100_then_200(self):
        c = self.conn()
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        a = c.read_answer()
        self.assertEqual(a.status, 100, a)
        self.assertTrue(a.head.startswith(b"HTTP/1.1 100 Continue"), a)
        c.send(b"abc")
        a = c.read_answer()
        self.assertEqual((a.status, a.body), (200, b"abc"), a)

    def test_leading_crlf_is_ignored(self):
        c = self.conn()
        c.send(b"\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        a = c.read_answer()
        self.assertEqual((a.status, a.body), (200, b"hi"), a)

    def test_pipelined_unsupported_version_gets_json_505(self):
        c = self.conn()
        c.send(b"GET /-/healthz HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/2.0\r\nHost: x\r\n\r\n")
        a = c.read_answer()
        self.assertEqual((a.status, a.body), (200, b"ok\n"), a)
        a = c.read_answer()
        self.assertEqual(a.status, 505, a)
        self.assertEqual(a.headers.get("content-type"), "application/json", a)
        self.assertIn("error", a.json())
        self.assertTrue(c.closed_within(5 * SLOW), "the connection stayed open after the 505")

    def test_read_timeout_covers_a_partial_request_behind_a_complete_one(self):
        c = self.conn()
        t0 = time.monotonic()
        c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\nGET /ec")
        a = c.read_answer()
        self.assertEqual(a.status, 200, a)
        # --read-timeout 3, --idle-timeout 60: the read timeout closes it.
        self.assertTrue(c.closed_within(3 + 12 * SLOW),
                        "the partial request was not closed by the 3 s read timeout")
        self.assertGreaterEqual(time.monotonic() - t0, 2.5, "closed before the read timeout")
        self.assertEqual(c.buf, b"", "answered a partial request")


class PipelineFlood(unittest.TestCase):
    """A client writes pipelined requests for 8 s and never reads an answer:
    the server stops reading that connection once enough answers are pending,
    so its memory stays flat, and it keeps serving others meanwhile."""

    def setUp(self):
        self.server = Server("--http-threads", "2")

    def tearDown(self):
        self.server.close()

    def test_unread_pipelined_answers_do_not_grow_memory(self):
        pid = self.server.server_pid()
        for _ in range(20):
            self.assertEqual(self.server.get("/-/healthz").status, 200)
        time.sleep(0.5)
        idle_kb = rss_kb(pid)
        limit_kb = idle_kb + 64 * 1024

        req = b"GET /-/healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 1024
        view = memoryview(req)
        flood = socket.create_connection((self.server.host, self.server.port))
        flood.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(flood, selectors.EVENT_WRITE)
        sent = offset = 0
        peak_kb = idle_kb
        other_latency = None
        t0 = time.monotonic()
        next_sample = t0
        try:
            while time.monotonic() - t0 < 8:
                try:
                    n = flood.send(view[offset:])
                    sent += n
                    offset = (offset + n) % len(req)
                except BlockingIOError:
                    sel.select(timeout=0.05)
                now = time.monotonic()
                if now >= next_sample:
                    peak_kb = max(peak_kb, rss_kb(pid))
                    next_sample = now + 0.1
                if other_latency is None and now - t0 > 3:
                    t = time.monotonic()
                    r = self.server.get("/-/healthz", timeout=10 * SLOW)
                    self.assertEqual(r.status, 200)
                    other_latency = time.monotonic() - t
        finally:
            sel.close()
            flood.close()
        time.sleep(1.5)
        after_kb = rss_kb(pid)
        problems = []
        if not SANITIZED:  # sanitizer allocators keep freed memory (quarantine)
            if peak_kb >= limit_kb:
                problems.append("RSS during the flood: idle %d kB, peak %d kB" % (idle_kb, peak_kb))
            if after_kb >= limit_kb:
                problems.append("RSS after the flood: idle %d kB, after %d kB" % (idle_kb, after_kb))
        # Once the server stops reading, only the kernel's socket buffers
        # take more (tens of MB at most); a server that reads on takes GBs.
        if sent >= 256 * MiB:
            problems.append("the server read %d MB of pipelined requests" % (sent // MiB))
        if other_latency >= 2 * SLOW:
            problems.append("another client waited %.1f s during the flood" % other_latency)
        if problems:
            self.fail("; ".join(problems))
        self.assertEqual(self.server.get("/-/healthz").status, 200)


class OutOfFileDescriptors(unittest.TestCase):
    """With its open-files limit lowered to 64 and more connections than
    that waiting, accept fails with EMFILE: the listener pauses (no spin, one
    log line per pause) and resumes once descriptors are free."""

    def setUp(self):
        self.prlimit = shutil.which("prlimit") or shutil.which("prlimit", path="/usr/bin:/bin")
        if not self.prlimit:
            self.skipTest("prlimit (util-linux) not found")
        self.server = Server("--http-threads", "2")
        self.held = []

    def tearDown(self):
        for s in self.held:
            s.close()
        self.server.close()

    def test_listener_pauses_without_spinning_or_flooding_the_log(self):
        pid = self.server.server_pid()
        self.assertEqual(self.server.get("/-/healthz").status, 200)
        subprocess.run([self.prlimit, "--pid", str(pid), "--nofile=64:64"], check=True)
        log_start = len(self.server.log())
        for _ in range(100):
            # The kernel completes the handshake for the listen backlog:
            # connect succeeds whether or not the server accepts.
            self.held.append(socket.create_connection((self.server.host, self.server.port),
                                                      timeout=5))
        time.sleep(1.0 * SLOW)
        fds = len(os.listdir("/proc/%d/fd" % pid))
        self.assertGreaterEqual(fds, 56, "the server did not run out of descriptors (%d open)" % fds)

        cpu0 = cpu_seconds(pid)
        time.sleep(3)
        cpu = cpu_seconds(pid) - cpu0
        new_log = self.server.log()[log_start:]
        about_accept = [l for l in new_log.splitlines()
                        if re.search(r"accept|open files|descriptor|EMFILE", l, re.I)]
        problems = []
        if len(about_accept) > 10:
            problems.append("%d log lines about accept, e.g. %r" % (len(about_accept), about_accept[0]))
        if len(new_log) >= 64 * 1024:
            problems.append("the log grew by %d bytes" % len(new_log))
        if cpu >= 1.0:
            problems.append("the server used %.2f s of CPU in 3 s out of descriptors" % cpu)
        if problems:
            self.fail("; ".join(problems))

        for s in self.held:
            s.close()
        self.held = []
        t = time.monotonic()
        r = self.server.get("/-/healthz", timeout=3 * SLOW)
        self.assertEqual(r.status, 200)
        self.assertLess(time.monotonic() - t, 3 * SLOW)


class BodyMemoryBudget(unittest.TestCase):
    """--max-body-memory 64M bounds the request bodies held at once over all
    connections: 48 clients each sending a ~16 MiB body (under --max-body)
    and holding before its end do not take 768 MiB; those past the budget
    get a JSON 503 and a close, and the server serves afterwards."""

    def setUp(self):
        # A state dir of our own: a server without --max-body-memory fails
        # to start, and the harness would leave the folder it made behind.
        state_dir = tempfile.mkdtemp(prefix="serve-test-")
        self.addCleanup(shutil.rmtree, state_dir, ignore_errors=True)
        self.server = Server("--max-body-memory", "64M", state_dir=state_dir)
        self.addCleanup(self.server.close)
        self.socks = []
        self.addCleanup(lambda: [s.close() for s in self.socks])
        self.server.deploy("echo", "echo", "/echo")

    def test_bodies_past_the_budget_get_503_and_memory_stays_bounded(self):
        pid = self.server.server_pid()
        for _ in range(5):
            self.assertEqual(self.server.post("/echo", b"warm").status, 200)
        time.sleep(0.5)
        idle_kb = rss_kb(pid)

        n_conns, length, to_send = 48, 16 * MiB - 1, 16 * MiB - 100
        payload = memoryview(b"b" * to_send)
        head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % length
        sel = selectors.DefaultSelector()
        state = {}
        for _ in range(n_conns):
            s = socket.create_connection((self.server.host, self.server.port), timeout=10 * SLOW)
            s.sendall(head)
            s.setblocking(False)
            self.socks.append(s)
            state[s] = {"sent": 0, "got": b"", "closed": False, "write_done": False}
            sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)

        peak_kb = idle_kb
        last_progress = t0 = time.monotonic()
        next_sample = t0
        # Until nothing moves for 3 s: each client has sent its bytes or has
        # been answered / closed (or the server stopped reading it).
        while time.monotonic() - last_progress < 3 and time.monotonic() - t0 < 120 * SLOW:
            for key, events in sel.select(timeout=0.1):
                s, st = key.fileobj, state[key.fileobj]
                if events & selectors.EVENT_READ:
                    try:
                        data = s.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        data = None
                    except ConnectionResetError:
                        data = b""
                    if data:
                        st["got"] += data
                        last_progress = time.monotonic()
                    elif data == b"":
                        st["closed"] = True
                        sel.unregister(s)
                        last_progress = time.monotonic()
                        continue
                if events & selectors.EVENT_WRITE and not st["write_done"]:
                    try:
                        n = s.send(payload[st["sent"]:st["sent"] + 256 * 1024])
                        st["sent"] += n
                        last_progress = time.monotonic()
                    except BlockingIOError:
                        n = 0
                    except (BrokenPipeError, ConnectionResetError):
                        st["write_done"] = True
                    if st["sent"] >= to_send or st["got"]:
                        st["write_done"] = True
                    if st["write_done"]:
                        sel.modify(s, selectors.EVENT_READ)
            now = time.monotonic()
            if now >= next_sample:
                peak_kb = max(peak_kb, rss_kb(pid))
                next_sample = now + 0.1
        time.sleep(1)  # held bodies stay held
        peak_kb = max(peak_kb, rss_kb(pid))
        sel.close()

        answered = [st for st in state.values() if st["got"]]
        refused = 0
        for st in answered:
            c = Conn.__new__(Conn)
            c.buf, c.eof = st["got"], True
            a = c.read_answer()
            self.assertEqual(a.status, 503, a)
            self.assertEqual(a.headers.get("connection", "").lower(), "close", a)
            self.assertEqual(a.headers.get("content-type"), "application/json", a)
            self.assertRegex(a.json()["error"], r"(?i)body.memory")
            self.assertEqual(c.buf, b"", "bytes after the 503")
            self.assertTrue(st["closed"], "the connection stayed open after its 503")
            refused += 1
        # 4 bodies of 16 MiB fill 64 MiB; allow some more partly held.
        self.assertGreaterEqual(refused, n_conns - 8, "only %d of %d clients got a 503"
                                % (refused, n_conns))
        if not SANITIZED:  # sanitizer allocators keep freed memory (quarantine)
            self.assertLess(peak_kb, idle_kb + 160 * 1024, "RSS: idle %d kB, peak %d kB"
                            % (idle_kb, peak_kb))

        for s in self.socks:
            s.close()
        self.socks = []
        deadline = time.monotonic() + 5 * SLOW
        while True:  # the budget is given back as the connections close
            r = self.server.post("/echo", b"small body")
            if r.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual((r.status, r.body), (200, b"small body"))


if __name__ == "__main__":
    unittest.main()


class BodyLargerThanTheBudget(unittest.TestCase):
    """A budget below --max-body: a body the whole budget could never hold
    gets 413 (retrying would not help), by its Content-Length before it is
    read, or as a chunked body grows past it; smaller bodies are served, and
    /metrics shows the budget."""

    def setUp(self):
        state_dir = tempfile.mkdtemp(prefix="serve-test-")
        self.addCleanup(shutil.rmtree, state_dir, ignore_errors=True)
        self.server = Server("--max-body-memory", "1M", state_dir=state_dir)
        self.addCleanup(self.server.close)
        self.server.deploy("echo", "echo", "/echo")

    def test_a_body_over_the_whole_budget_gets_413(self):
        c = Conn(self.server)
        self.addCleanup(c.close)
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (2 * MiB))
        a = c.read_answer()
        self.assertEqual(a.status, 413, a)
        self.assertIn("larger than all of --max-body-memory", a.json()["error"])
        self.assertEqual(a.headers.get("connection"), "close")

        c = Conn(self.server)
        self.addCleanup(c.close)
        chunk = b"x" * (256 * 1024)
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(8):  # 2 MiB in all; the answer comes after 1 MiB
                c.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass
        a = c.read_answer()
        self.assertEqual(a.status, 413, a)
        self.assertIn("larger than all of --max-body-memory", a.json()["error"])

        self.assertEqual(self.server.post("/echo", b"y" * 1000).status, 200)
        metrics = self.server.get("/metrics").body.decode()
        self.assertIn("serve_http_body_memory_limit_bytes %d\n" % MiB, metrics)
