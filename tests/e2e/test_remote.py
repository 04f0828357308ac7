"""Remote backends (`--remote URL[,URL...]`, `remote:` in deploy files):
requests forwarded to another serve node (or any HTTP server) with their
method, path, query, headers, body and id; answers and streams passed back;
composition across nodes through handles; splits and shadows with a remote
share; and every way a remote can fail (refuses, resets, stalls, answers
garbage), each with its status and message while the node keeps serving."""
import json
import os
import socket
import struct
import threading
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

from serve_harness import SANITIZED, SERVE_BIN, Server, ServeTestCase, run_cli

PLUGIN_DIR = os.environ.get("SERVE_BUILD_PLUGIN_DIR",
                            os.path.join(os.path.dirname(SERVE_BIN), "plugins"))


def plugin(name):
    return os.path.join(PLUGIN_DIR, name + ".so")


class FakeRemote:
    """A small HTTP/1.1 server on 127.0.0.1 that records what it is sent and
    answers as its mode says: "record" (200 with what it saw, as JSON),
    "garbage", "reset" (after reading the request), "stall"."""

    def __init__(self, mode="record"):
        self.mode = mode
        self.seen = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.closing = False
        self.conns = []
        threading.Thread(target=self.accept, daemon=True).start()

    def url(self, path=""):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def accept(self):
        while not self.closing:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    @staticmethod
    def read_head(conn, buf):
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return None, b""
            buf += data
        head, rest = buf.split(b"\r\n\r\n", 1)
        return head.decode("latin-1"), rest

    @classmethod
    def read_request(cls, conn, buf):
        head, rest = cls.read_head(conn, buf)
        if head is None:
            return None, b""
        lines = head.split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            data = conn.recv(65536)
            if not data:
                return None, b""
            rest += data
        return {"method": method, "target": target, "headers": headers,
                "body": rest[:length].decode("latin-1")}, rest[length:]

    def serve(self, conn):
        buf = b""
        try:
            if self.mode == "early":  # answers from the head alone, body unread
                head, buf = self.read_head(conn, buf)
                with self.lock:
                    self.seen.append({"target": head.split(" ")[1]})
                conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")
                time.sleep(5)
                return
            while True:
                req, buf = self.read_request(conn, buf)
                if req is None:
                    return
                with self.lock:
                    self.seen.append(req)
                if self.mode == "garbage":
                    conn.sendall(b"THIS IS NOT HTTP\r\n\r\n")
                    conn.close()
                    return
                if self.mode == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    conn.close()
                    return
                if self.mode == "stall":
                    time.sleep(30)
                    return
                if self.mode == "draining":  # as a serve node that is stopping
                    body = b'{"error": "server is shutting down"}'
                    conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                                 b"X-Serve-Unprocessed: draining\r\n"
                                 b"Content-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
                    conn.close()
                    return
                if self.mode == "bighead":  # 70 KB of headers, never an end
                    conn.sendall(b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * 1000 + b"\r\n")
                    for _ in range(70):
                        conn.sendall(b"X-Pad: " + b"p" * 1000 + b"\r\n")
                    time.sleep(5)
                    return
                if self.mode == "status799":
                    conn.sendall(b"HTTP/1.1 799 Odd\r\nContent-Length: 0\r\n\r\n")
                    continue
                if self.mode == "bigstream":  # 8 MiB in 64 KiB chunks
                    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                                 b"Content-Type: application/octet-stream\r\n\r\n")
                    piece = b"%x\r\n" % 65536 + b"x" * 65536 + b"\r\n"
                    conn.sendall(piece * 128 + b"0\r\n\r\n")
                    continue
                body = json.dumps(req).encode()
                conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                             b"X-Remote: yes\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        except OSError:
            return

    def count(self):
        with self.lock:
            return len(self.seen)

    def close(self):
        self.closing = True
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


class RemoteForwarding(ServeTestCase):
    def remote(self, name, urls, route, *options):
        self.server.cli("create-backend", name, "--remote", urls, *options)
        self.server.cli("create-endpoint", name, "--backend", name, "--route", route,
                        "--methods", "GET,POST,PUT")

    def test_method_path_query_headers_body_and_id_reach_the_remote(self):
        fake = FakeRemote()
        self.addCleanup(fake.close)
        self.remote("fwd", fake.url("/model_two"), "/local")
        a = self.server.request("PUT", "/local/sub/x?k=a%20b&z=1", b"the body",
                                {"X-Request-ID": "trace-77", "X-Custom": "v1",
                                 "Content-Type": "text/plain"})
        self.assertEqual(a.status, 201, a)
        self.assertEqual(a.headers.get("x-remote"), "yes")
        self.assertEqual(a.headers.get("x-request-id"), "trace-77")
        self.assertEqual(a.headers.get("content-type"), "application/json")
        seen = a.json()
        self.assertEqual(seen["method"], "PUT")
        self.assertEqual(seen["target"], "/model_two/sub/x?k=a%20b&z=1")
        self.assertEqual(seen["body"], "the body")
        self.assertEqual(seen["headers"]["x-request-id"], "trace-77")
        self.assertEqual(seen["headers"]["x-custom"], "v1")
        self.assertEqual(seen["headers"]["content-type"], "text/plain")
        self.assertEqual(seen["headers"]["host"], "127.0.0.1:%d" % fake.port)
        # The route alone maps to the URL's path; connections are reused.
        for _ in range(20):
            self.assertEqual(self.server.post("/local", b"x").json()["target"], "/model_two")
        self.assertLessEqual(len(fake.conns), 3)
        metrics = self.server.get("/metrics").body.decode()
        self.assertIn('serve_remote_requests_total{backend="fwd",code="201"} 21', metrics)
        self.assertIn('serve_remote_request_seconds_count{backend="fwd"} 21', metrics)
        self.assertEqual(self.server.backend_status("fwd")["plugin_name"],
                         "remote " + fake.url("/model_two"))

    def test_refused_reset_stalled_and_garbage_remotes(self):
        self.server.deploy("echo", plugin("echo"), "/echo")
        reset, stall, garbage = FakeRemote("reset"), FakeRemote("stall"), FakeRemote("garbage")
        for f in (reset, stall, garbage):
            self.addCleanup(f.close)
        dead = socket.socket()
        dead.bind(("127.0.0.1", 0))
        dead_port = dead.getsockname()[1]
        dead.close()  # nothing listens there now
        self.remote("refused", "http://127.0.0.1:%d/m" % dead_port, "/refused")
        self.remote("reset", reset.url("/m"), "/reset")
        self.remote("stall", stall.url("/m"), "/stall", "--request-timeout-ms", "500")
        self.remote("garbage", garbage.url("/m"), "/garbage")
        cases = {
            "/refused": (502, "remote backend refused unreachable: connect to 127.0.0.1:%d "
                              "failed: Connection refused" % dead_port),
            "/reset": (502, "remote backend reset unreachable: "),
            "/stall": (504, ""),
            "/garbage": (502, "remote backend garbage answered garbage: "),
        }
        for path, (status, message) in cases.items():
            a = self.server.post(path, b"x")
            self.assertEqual(a.status, status, (path, a))
            self.assertTrue(a.json()["error"].startswith(message), (path, a))
            # ... and the node keeps serving everything else.
            self.assertEqual(self.server.post("/echo", b"still here").body, b"still here")
        # A request that reached the remote is never sent again.
        self.assertEqual(reset.count(), 1)
        self.assertEqual(garbage.count(), 1)
        self.assertIn("not retried", self.server.post("/reset", b"y").json()["error"])
        self.assertEqual(reset.count(), 2)
        metrics = self.server.get("/metrics").body.decode()
        self.assertIn('serve_remote_requests_total{backend="refused",code="502"} 1', metrics)

    def test_unsent_requests_go_to_the_next_url(self):
        fake = FakeRemote()
        self.addCleanup(fake.close)
        dead = socket.socket()
        dead.bind(("127.0.0.1", 0))
        dead_port = dead.getsockname()[1]
        dead.close()
        self.remote("two", "http://127.0.0.1:%d/m, %s" % (dead_port, fake.url("/m")), "/two")
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: self.server.post("/two", b"%d" % i), range(200)))
        self.assertEqual([a.status for a in answers], [201] * 200)
        self.assertEqual(fake.count(), 200)

    def test_requests_a_draining_node_refused_go_elsewhere(self):
        draining, fake = FakeRemote("draining"), FakeRemote()
        self.addCleanup(draining.close)
        self.addCleanup(fake.close)
        self.remote("two", "%s,%s" % (draining.url("/m"), fake.url("/m")), "/two")
        answers = [self.server.post("/two", b"%d" % i) for i in range(20)]
        self.assertEqual([a.status for a in answers], [201] * 20)
        self.assertEqual(fake.count(), 20)
        self.assertGreater(draining.count(), 0)
        # Alone, a draining remote is tried twice (a new connection behind a
        # balancer reaches another node), then its 503 is the answer.
        self.remote("alone", draining.url("/m"), "/alone")
        before = draining.count()
        a = self.server.post("/alone", b"x")
        self.assertEqual(a.status, 503)
        self.assertEqual(draining.count() - before, 2)

    def test_a_stopping_node_marks_its_refusals_unprocessed(self):
        self.server.deploy("slow", plugin("sim"), "/slow", "--config", "base_us=1500000")
        # A keep-alive connection busy when the stop begins stays open for
        # its answer; the request after it is refused, marked.
        s = socket.create_connection(("127.0.0.1", self.server.port))
        self.addCleanup(s.close)
        s.settimeout(10)
        one = b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx"
        s.sendall(one)
        time.sleep(0.3)
        stopper = ThreadPoolExecutor(1)
        self.addCleanup(stopper.shutdown)
        stopping = stopper.submit(self.server.stop)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # until the stop has begun
            if self.server.get("/-/healthz").status == 503:
                break
            time.sleep(0.02)
        # A new connection (a balancer's health check) is answered at once,
        # not left unread until the stop ends.
        fresh = socket.create_connection(("127.0.0.1", self.server.port))
        self.addCleanup(fresh.close)
        fresh.settimeout(0.5)
        fresh.sendall(b"GET /-/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        check = fresh.recv(4096)
        self.assertTrue(check.startswith(b"HTTP/1.1 503"), check)
        self.assertIn(b"X-Serve-Unprocessed: draining", check)
        first = s.recv(4096)
        self.assertTrue(first.startswith(b"HTTP/1.1 200"), first)  # what it held, it finished
        s.sendall(one)
        second = s.recv(4096)
        self.assertTrue(second.startswith(b"HTTP/1.1 503"), second)
        self.assertIn(b"X-Serve-Unprocessed: draining", second)
        self.assertIn(b"Connection: close", second)
        stopping.result()

    def test_a_status_out_of_range_is_garbage(self):
        odd = FakeRemote("status799")
        self.addCleanup(odd.close)
        self.remote("odd", odd.url("/m"), "/odd")
        a = self.server.post("/odd", b"x")
        self.assertEqual(a.status, 502)
        self.assertEqual(a.json()["error"], "remote backend odd answered garbage: status 799")
        # The slot it held is free again: more than max-concurrent-queries (8) requests.
        for _ in range(12):
            self.assertEqual(self.server.post("/odd", b"x").status, 502)

    def test_answer_headers_past_64_kib_are_refused(self):
        big = FakeRemote("bighead")
        self.addCleanup(big.close)
        self.remote("bighead", big.url("/m"), "/bighead")
        a = self.server.post("/bighead", b"x")
        self.assertEqual(a.status, 502)
        self.assertEqual(a.json()["error"],
                         "remote backend bighead answered garbage: headers over 65536 bytes")

    def test_paths_are_encoded_again_and_never_climb_out(self):
        fake = FakeRemote()
        self.addCleanup(fake.close)
        self.remote("fwd", fake.url("/m"), "/p")
        a = self.server.get("/p/a%20b/c%3Fd%23e")
        self.assertEqual(a.json()["target"], "/m/a%20b/c%3Fd%23e")
        before = fake.count()
        for path in ("/p/..%2fadmin", "/p/x/%2e%2e/%2e%2e/admin"):
            a = self.server.get(path)
            self.assertEqual(a.status, 400, (path, a))
            self.assertIn("not forwarded to remote backend fwd", a.json()["error"])
        self.assertEqual(fake.count(), before)

    def test_an_early_answer_does_not_leave_half_a_request_on_a_pooled_connection(self):
        early, fake = FakeRemote("early"), FakeRemote()
        self.addCleanup(early.close)
        self.addCleanup(fake.close)
        self.remote("early", early.url("/m"), "/early")
        big = b"b" * (12 << 20)  # more than the socket buffers hold
        self.assertEqual(self.server.post("/early", big).status, 413)
        # The next request goes on a new connection, whole, and is read as
        # a request (not as the rest of the first one's body).
        self.assertEqual(self.server.post("/early", b"small").status, 413)
        self.assertEqual([r["target"] for r in early.seen], ["/m", "/m"])
        self.assertEqual(len(early.conns), 2)

    def test_a_large_stream_to_a_slow_reader(self):
        # A small stream buffer: every read of the remote's answer fills it,
        # and the last one, with the answer's end, waits for room too.
        server = Server("--stream-buffer", "16K")
        self.addCleanup(server.close)
        big = FakeRemote("bigstream")
        self.addCleanup(big.close)
        server.cli("create-backend", "big", "--remote", big.url("/m"))
        server.cli("create-endpoint", "big", "--backend", "big", "--route", "/big")
        s = socket.create_connection(("127.0.0.1", server.port))
        self.addCleanup(s.close)
        s.settimeout(20)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        time.sleep(1)  # the stream's buffer fills while nobody reads
        while not data.endswith(b"\r\n0\r\n\r\n"):
            chunk = s.recv(65536)
            self.assertTrue(chunk, data[-200:])
            data += chunk
        body = data.split(b"\r\n\r\n", 1)[1]
        # De-chunk: every byte the remote sent, in order.
        total, rest = 0, body
        while True:
            size_line, rest = rest.split(b"\r\n", 1)
            size = int(size_line, 16)
            if size == 0:
                break
            self.assertEqual(rest[:size], b"x" * size)
            total += size
            rest = rest[size + 2:]
        self.assertEqual(total, 8 << 20)
        # The connection is kept and reused: a second stream.
        self.assertEqual(len(server.get("/big").body), 8 << 20)
        self.assertEqual(len(big.conns), 1)

    def test_bad_remote_urls_are_refused(self):
        for urls, words in [("https://x/m", "the scheme must be http"),
                            ("http:///m", "no host"),
                            ("http://h/m?q=1", "no user, query or fragment"),
                            ("http://a/m,,http://b/m", "an empty URL"),
                            ("nonsense", "the scheme must be http")]:
            proc = self.server.cli("create-backend", "x", "--remote", urls, check=False)
            self.assertNotEqual(proc.returncode, 0)
            self.assertIn(words, proc.stderr)
        proc = self.server.cli("create-backend", "x", "--remote", "http://h/m", "echo", check=False)
        self.assertIn("no PLUGIN", proc.stderr)
        proc = self.server.cli("create-backend", "x", "--remote",
                               "http://no-such-host.invalid/m", check=False)
        self.assertIn("cannot resolve no-such-host.invalid", proc.stderr)
        self.assertEqual(self.server.status()["backends"], [])

    def test_a_client_that_leaves_closes_the_remote_request(self):
        stall = FakeRemote("stall")
        self.addCleanup(stall.close)
        self.remote("slow", stall.url("/m"), "/slow")
        s = socket.create_connection(("127.0.0.1", self.server.port))
        s.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
        deadline = time.monotonic() + 5
        while stall.count() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(stall.count(), 1)
        s.close()
        # The remote sees its client (serve) close the connection.
        conn = stall.conns[0]
        conn.settimeout(5)
        self.assertEqual(conn.recv(10), b"")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            metrics = self.server.get("/metrics").body.decode()
            if 'serve_remote_requests_total{backend="slow",code="499"} 1' in metrics:
                break
            time.sleep(0.05)
        self.assertIn('serve_remote_requests_total{backend="slow",code="499"} 1', metrics)


class TwoNodes(unittest.TestCase):
    """Node A composes; node B serves model_two (and tokens) for real."""

    def setUp(self):
        self.b = Server()
        self.a = Server()
        self.addCleanup(self.a.close)
        self.addCleanup(self.b.close)
        self.b.deploy("model_two", plugin("model_two"), "/model_two")
        self.b.deploy("tokens", plugin("tokens"), "/tok")
        self.b_url = "http://127.0.0.1:%d" % self.b.port

    def compose(self, isolation):
        a = self.a
        a.cli("create-backend", "model_one", plugin("model_one"), "--isolation", isolation)
        a.cli("create-backend", "model_two", "--remote", self.b_url + "/model_two")
        a.cli("create-backend", "composed", plugin("composed"), "--isolation", isolation,
              "--max-concurrent-queries", "16")
        a.cli("create-endpoint", "model_one", "--backend", "model_one")
        a.cli("create-endpoint", "model_two", "--backend", "model_two")
        a.cli("create-endpoint", "composed", "--backend", "composed", "--route", "/composed")

    def check_composed(self):
        used = set()
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: self.a.post("/composed", b"data %d" % i), range(80)))
        for ans in answers:
            self.assertEqual(ans.status, 200, ans)
            j = ans.json()
            self.assertEqual(j["model_used"], 2 if j["score"] > 0.5 else 1, j)
            used.add(j["model_used"])
        self.assertEqual(used, {1, 2})
        twos = sum(1 for ans in answers if ans.json()["model_used"] == 2)
        self.assertEqual(self.b.backend_status("model_two")["requests"], twos)

    def test_composition_across_nodes_process_replicas(self):
        self.compose("process")
        self.check_composed()

    def test_composition_across_nodes_thread_replicas(self):
        self.compose("thread")
        self.check_composed()

    def test_streams_pass_through_piece_by_piece(self):
        self.a.cli("create-backend", "tok", "--remote", self.b_url + "/tok")
        self.a.cli("create-endpoint", "tok", "--backend", "tok", "--route", "/gen")
        self.b.cli("update-backend", "tokens", "--config", "step_us=300000")
        s = socket.create_connection(("127.0.0.1", self.a.port))
        s.settimeout(10)
        started = time.monotonic()
        s.sendall(b"GET /gen?n=4 HTTP/1.1\r\nHost: x\r\n\r\n")
        first = s.recv(65536)
        first_at = time.monotonic() - started
        self.assertIn(b"Transfer-Encoding: chunked", first)
        self.assertIn(b"text/event-stream", first)
        data = first
        while not data.endswith(b"\r\n0\r\n\r\n"):
            chunk = s.recv(65536)
            self.assertTrue(chunk, data)
            data += chunk
        total = time.monotonic() - started
        s.close()
        for i in range(4):
            self.assertIn(b'"token": "t%d"' % i, data)
        self.assertIn(b"event: done", data)
        # The first token arrives long before the last one (4 x 300 ms).
        self.assertLess(first_at, total - 0.5, (first_at, total))

    def test_a_split_between_a_local_and_a_remote_backend(self):
        a = self.a
        a.cli("create-backend", "here", plugin("echo"))
        a.cli("create-backend", "there", "--remote", self.b_url + "/model_two")
        a.cli("create-endpoint", "split", "--backend", "here", "--route", "/split")
        a.cli("set-traffic", "split", "here=0.9", "there=0.1")
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: a.post("/split", b"r%d" % i), range(2000)))
        self.assertEqual({x.status for x in answers}, {200})
        remote = a.backend_status("there")["requests"]
        self.assertEqual(a.backend_status("here")["requests"] + remote, 2000)
        self.assertEqual(self.b.backend_status("model_two")["requests"], remote)
        self.assertLess(abs(remote / 2000 - 0.1), 0.03, remote)

    def percentile_99(self, path, n=300):
        times = []
        for i in range(n):
            t = time.monotonic()
            self.assertEqual(self.a.post(path, b"p%d" % i).status, 200)
            times.append(time.monotonic() - t)
        times.sort()
        return times[int(0.99 * len(times)) - 1]

    def test_a_remote_shadow_never_slows_the_primary(self):
        a, b = self.a, self.b
        b.deploy("slow", plugin("sim"), "/slow", "--config", "base_us=200000",
                 "--max-concurrent-queries", "64")
        a.cli("create-backend", "primary", plugin("echo"), "--isolation", "thread")
        a.cli("create-backend", "shadow", "--remote", self.b_url + "/slow")
        a.cli("create-endpoint", "p", "--backend", "primary", "--route", "/p")
        without = self.percentile_99("/p")
        a.cli("shadow-traffic", "p", "shadow", "1")
        with_shadow = self.percentile_99("/p")
        self.assertGreater(b.backend_status("slow")["requests"], 0)
        margin = 4 if SANITIZED else 2
        # 2 x, with a floor for a loaded 2-core machine's jitter.
        self.assertLess(with_shadow, max(margin * without, 0.02), (with_shadow, without))


class DeployFile(unittest.TestCase):
    def test_remote_in_deploy_files(self):
        b = Server()
        self.addCleanup(b.close)
        b.deploy("echo", plugin("echo"), "/m")
        a = Server()
        self.addCleanup(a.close)
        path = os.path.join(a.state_dir, "..", "remote-deploy-%d.yaml" % os.getpid())
        path = os.path.abspath(path)
        self.addCleanup(lambda: os.path.exists(path) and os.unlink(path))
        with open(path, "w") as f:
            f.write("backends:\n  - name: r\n    remote:\n      - http://127.0.0.1:%d/m\n"
                    "      - http://127.0.0.1:%d/m\n    request_timeout_ms: 2000\n"
                    "endpoints:\n  - name: r\n    route: /r\n    backend: r\n"
                    % (b.port, b.port))
        a.cli("deploy", path)
        self.assertEqual(a.post("/r", b"over the wire").body, b"over the wire")
        # Applying it again keeps the backend's replicas; the state survives a restart.
        before = a.backend_status("r")
        a.cli("deploy", path)
        self.assertEqual(a.backend_status("r")["spec"], before["spec"])
        a.stop()
        a.start()
        self.assertEqual(a.post("/r", b"after restart").body, b"after restart")
        with open(path, "w") as f:
            f.write("backends:\n  - name: r\n    remote: ftp://x/m\n"
                    "endpoints:\n  - name: r\n    route: /r\n    backend: r\n")
        proc = a.cli("deploy", path, check=False)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn(path + ":2:", proc.stderr)
        self.assertIn("the scheme must be http", proc.stderr)
        with open(path, "w") as f:
            f.write("backends:\n  - name: r\n    remote: http://x/m\n    plugin: echo\n"
                    "endpoints:\n  - name: r\n    route: /r\n    backend: r\n")
        proc = a.cli("deploy", path, check=False)
        self.assertIn("plugin and remote exclude each other", proc.stderr)
        self.assertEqual(a.post("/r", b"kept").body, b"kept")


if __name__ == "__main__":
    unittest.main()
