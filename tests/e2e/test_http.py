"""The HTTP front end: built-in paths, request ids, keep-alive, pipelining
and malformed input. After every bad request the server must still serve a
good one on a new connection."""
import unittest

from serve_harness import ServeTestCase, parse_statuses


class Http(ServeTestCase):
    start_args = ("--max-body", "1024", "--max-header", "2048")

    def setUp(self):
        super().setUp()
        self.server.deploy("echo", "echo", "/echo")

    def assert_still_serving(self):
        self.assertEqual(self.server.post("/echo", b"alive").body, b"alive")

    def test_builtin_paths(self):
        r = self.server.get("/-/healthz")
        self.assertEqual((r.status, r.body), (200, b"ok\n"))
        self.assertEqual(self.server.get("/-/routes").json(), {"/echo": "echo"})
        r = self.server.get("/nothing/here")
        self.assertEqual(r.status, 404)
        self.assertIn("/-/routes", r.json()["error"])
        self.assertEqual(r.headers["content-type"], "application/json")

    def test_request_id_is_echoed_or_made(self):
        r = self.server.post("/echo", b"x", headers={"X-Request-ID": "abc-123"})
        self.assertEqual(r.headers["x-request-id"], "abc-123")
        a = self.server.post("/echo", b"x").headers["x-request-id"]
        b = self.server.get("/missing").headers["x-request-id"]
        self.assertTrue(a and b and a != b)

    def test_keep_alive_and_pipelining(self):
        req = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\n"
        raw = self.server.raw(req + b"one" + req + b"two" + req + b"six"
                              + b"GET /-/healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        self.assertEqual(parse_statuses(raw), [200, 200, 200, 200])
        bodies = [p for p in (b"one", b"two", b"six") if p in raw]
        self.assertEqual(bodies, [b"one", b"two", b"six"])
        self.assertLess(raw.index(b"one"), raw.index(b"two"))
        self.assertLess(raw.index(b"two"), raw.index(b"six"))

    def test_malformed_requests(self):
        cases = [
            b"GARBAGE\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /echo HTTP/9.9\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"GET /echo HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 4096 + b"\r\n\r\n",
            b"GET /echo HTTP/1.1\r\nHost: t\r\n" + b"X-Many: 1\r\n" * 400 + b"\r\n",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n" + b"x" * 2000,
            b"\x00\x01\x02\x03\r\n\r\n",
            b"GET /%zz HTTP/1.1\r\nHost: t\r\n\r\n",
        ]
        for data in cases:
            raw = self.server.raw(data, timeout=3)
            statuses = parse_statuses(raw)
            # Either answered with a 4xx (505 for a version other than 1.0
            # and 1.1) or closed without an answer.
            for status in statuses:
                self.assertTrue(400 <= status < 500 or status == 505, (data[:60], raw[:200]))
            self.assert_still_serving()

    def test_body_too_large_gets_413(self):
        raw = self.server.raw(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n"
                              + b"x" * 2000)
        self.assertEqual(parse_statuses(raw), [413])
        r = self.server.post("/echo", b"y" * 1024)  # exactly the limit is fine
        self.assertEqual(r.status, 200)

    def test_client_gone_before_answer(self):
        self.server.cli("create-backend", "slow", "sim", "--config", "base_us=300000")
        self.server.cli("create-endpoint", "slow", "--backend", "slow", "--route", "/slow")
        for _ in range(5):
            self.server.raw(b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
                            timeout=0.05)
        self.assertEqual(self.server.post("/slow").status, 200)
        self.assert_still_serving()


if __name__ == "__main__":
    unittest.main()
