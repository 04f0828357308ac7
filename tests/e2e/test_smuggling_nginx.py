"""Request smuggling through a real nginx in front of serve (SPEC 4: every
request body is framed whatever the method).

nginx forbids /c (`return 403`) and proxies everything else to serve over
kept-alive upstream connections. An attacker sends HEAD /-/healthz whose
52-byte body is a whole `GET /c` request: nginx forwards it as HEAD's body;
a server that does not read HEAD bodies takes it for a second request on a
connection nginx shares with other clients, so the attacker reaches /c and
other clients get answers meant for someone else. Meanwhile two clients
POST unique bodies and ids; serve's access log lists what serve saw."""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import uuid
import http.client

from serve_harness import SANITIZED, Server

SMUGGLED = b"GET /c HTTP/1.1\r\nHost: x\r\nX-Request-ID: SMUGGLED\r\n\r\n"
HEAD_ROUNDS = 400
NORMAL_CLIENTS, NORMAL_ROUNDS = 2, 300  # 400 + 600 = 1000 requests


def find_nginx():
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/sbin")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream serve {{
        server 127.0.0.1:{upstream};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location /c {{ return 403; }}
        location / {{
            proxy_pass http://serve;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # No retry on another connection: each request reaches serve
            # once, so serve's access log can be compared with what was sent.
            proxy_next_upstream off;
        }}
    }}
}}
"""


class SmugglingThroughNginx(unittest.TestCase):
    def setUp(self):
        nginx = find_nginx()
        if not nginx:
            self.skipTest("nginx not found (Debian package nginx): the smuggling test needs a "
                          "real proxy in front of serve")
        self.dir = tempfile.mkdtemp(prefix="serve-nginx-")
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)
        self.access_log = os.path.join(self.dir, "serve-access.log")
        self.nginx = None
        self.server = Server("--access-log", self.access_log, "--access-log-format", "json")
        self.addCleanup(self.server.close)
        self.addCleanup(self.stop_nginx)
        self.server.deploy("echo", "echo", "/echo")
        self.server.deploy("c", "echo", "/c")
        for attempt in range(3):  # the free port may be taken in between
            self.port = free_port()
            with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
                f.write(NGINX_CONF.format(dir=self.dir, port=self.port, upstream=self.server.port))
            self.nginx = subprocess.Popen(
                [nginx, "-p", self.dir + "/", "-c", os.path.join(self.dir, "nginx.conf"),
                 "-e", os.path.join(self.dir, "error.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self.wait_for_nginx():
                return
            self.nginx.kill()
            self.nginx.wait()
            self.nginx = None
        self.fail("nginx did not start: " + self.nginx_errors())

    def wait_for_nginx(self):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.nginx.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def nginx_errors(self):
        try:
            with open(os.path.join(self.dir, "error.log")) as f:
                return f.read()[-3000:]
        except OSError:
            return "(no error log)"

    def stop_nginx(self):
        if self.nginx:
            self.nginx.terminate()
            try:
                self.nginx.wait(10)
            except subprocess.TimeoutExpired:
                self.nginx.kill()
                self.nginx.wait()
            self.nginx = None

    # -- clients -------------------------------------------------------------
    def smuggler(self, results):
        """HEAD /-/healthz with the 52-byte GET /c as its body, again and
        again on a kept-alive connection to nginx."""
        sock, buf = None, b""
        for i in range(HEAD_ROUNDS):
            rid = "head-%d" % i
            results["ids"].append(rid)
            try:
                if sock is None:
                    sock, buf = socket.create_connection(("127.0.0.1", self.port), timeout=10), b""
                sock.sendall(b"HEAD /-/healthz HTTP/1.1\r\nHost: x\r\nX-Request-ID: %s\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (rid.encode(), len(SMUGGLED), SMUGGLED))
                while b"\r\n\r\n" not in buf:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("nginx closed the connection")
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)  # an answer to HEAD has no body
                status = int(head[9:12])
                results["statuses"].append(status)
                if status != 200:
                    results["errors"].append("HEAD %s: %r" % (rid, head[:200]))
                if b"\nconnection: close" in head.lower():
                    sock.close()
                    sock = None
            except (OSError, ValueError) as e:
                results["errors"].append("HEAD %s: %s" % (rid, e))
                if sock:
                    sock.close()
                sock = None
        if sock:
            sock.close()

    def normal(self, n, results):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        for i in range(NORMAL_ROUNDS):
            rid = "n%d-%d-%s" % (n, i, uuid.uuid4().hex[:8])
            body = ("body of %s " % rid).encode() * (1 + i % 7)
            results["ids"].append(rid)
            try:
                conn.request("POST", "/echo", body=body, headers={"X-Request-ID": rid})
                r = conn.getresponse()
                got = r.read()
                results["statuses"].append(r.status)
                if r.status != 200:
                    results["errors"].append("%s: status %d %r" % (rid, r.status, got[:100]))
                elif got != body or r.getheader("X-Request-ID") != rid:
                    results["cross"].append("%s got id %s, body %r" % (rid, r.getheader("X-Request-ID"),
                                                                      got[:60]))
            except (OSError, http.client.HTTPException) as e:
                results["errors"].append("%s: %r" % (rid, e))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.close()

    def read_access_log(self, want_ids):
        """serve's access log once it lists every id in want_ids (written out
        at least every 200 ms) or after 5 s."""
        deadline = time.monotonic() + 5 * (4 if SANITIZED else 1)
        while True:
            records = []
            try:
                with open(self.access_log) as f:
                    records = [json.loads(line) for line in f if line.strip()]
            except FileNotFoundError:
                pass
            if want_ids <= {r.get("id") for r in records} or time.monotonic() > deadline:
                return records
            time.sleep(0.2)

    # -- the test --------------------------------------------------------------
    def test_head_body_smuggling_through_nginx(self):
        # nginx's own rule: a direct /c never reaches serve.
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", "/c", headers={"X-Request-ID": "direct-c"})
        r = conn.getresponse()
        r.read()
        conn.close()
        self.assertEqual(r.status, 403)

        smuggler = {"ids": [], "statuses": [], "errors": []}
        normals = [{"ids": [], "statuses": [], "errors": [], "cross": []}
                   for _ in range(NORMAL_CLIENTS)]
        threads = [threading.Thread(target=self.smuggler, args=(smuggler,))]
        threads += [threading.Thread(target=self.normal, args=(n, normals[n]))
                    for n in range(NORMAL_CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
        self.assertFalse(any(t.is_alive() for t in threads), "clients still running after 240 s")

        normal_ids = {rid for n in normals for rid in n["ids"]}
        sent_ids = normal_ids | set(smuggler["ids"])
        records = self.read_access_log(normal_ids)
        seen = [r.get("id") for r in records]
        brief = lambda r: "%s %s id=%s" % (r.get("method"), r.get("path"), r.get("id"))
        unsent = [brief(r) for r in records if r.get("id") not in sent_ids]
        on_c = [brief(r) for r in records if r.get("path", "").startswith("/c")]
        twice = sorted(rid for rid in normal_ids if seen.count(rid) > 1)
        missing = sorted(normal_ids - set(seen))
        cross = [c for n in normals for c in n["cross"]]
        errors = smuggler["errors"] + [e for n in normals for e in n["errors"]]

        problems = []
        if any(r.get("id") == "SMUGGLED" for r in records):
            problems.append("serve saw the SMUGGLED request %d time(s)"
                            % sum(r.get("id") == "SMUGGLED" for r in records))
        if unsent:
            problems.append("%d request(s) seen by serve that nginx did not send, e.g. %r"
                            % (len(unsent), unsent[:3]))
        if on_c:
            problems.append("%d request(s) reached /c, e.g. %r" % (len(on_c), on_c[:3]))
        if cross:
            problems.append("%d cross-client answer(s), e.g. %r" % (len(cross), cross[:3]))
        if errors:
            problems.append("%d failed request(s), e.g. %r" % (len(errors), errors[:3]))
        if twice or missing:
            problems.append("access log: %d id(s) twice %r, %d missing %r"
                            % (len(twice), twice[:3], len(missing), missing[:3]))
        if problems:
            self.fail("; ".join(problems) + "\nnginx errors:\n" + self.nginx_errors()[-1500:])
        self.assertEqual(len(smuggler["statuses"]) + sum(len(n["statuses"]) for n in normals),
                         HEAD_ROUNDS + NORMAL_CLIENTS * NORMAL_ROUNDS)


if __name__ == "__main__":
    unittest.main()
