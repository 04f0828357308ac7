"""serve_harness - starts real serve servers on 127.0.0.1 for the tests.

Every server gets its own temporary state dir and an ephemeral port, runs as
the real daemon (`serve start`), and is driven through the real CLI and real
HTTP. When a server stops, its log is checked for sanitizer reports, so the
same tests catch memory errors when the binary is built with ASan/UBSan.
"""
import fcntl
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

SERVE_BIN = os.environ.get("SERVE_BIN", os.path.join(os.path.dirname(__file__), "../../build/serve"))
TEST_PLUGIN_DIR = os.environ.get(
    "SERVE_TEST_PLUGIN_DIR", os.path.join(os.path.dirname(SERVE_BIN), "tests/plugins"))
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: ThreadSanitizer")


def _sanitized():
    try:
        with open(SERVE_BIN, "rb") as f:
            binary = f.read()
    except OSError:
        return False
    return b"__asan_init" in binary or b"__tsan_init" in binary


# Built with ASan or TSan: slower, and with allocators of their own, so that
# figures of time and memory only hold for the plain build.
SANITIZED = _sanitized()


def rss_kb(pid):
    """Resident memory of a process, in kB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_plugin(name):
    return os.path.join(TEST_PLUGIN_DIR, name + ".so")


def run_cli(state_dir, *args, check=True, timeout=60):
    proc = subprocess.run([SERVE_BIN, "--state-dir", state_dir, *args], capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError("serve %s failed (%d): %s%s" % (" ".join(args), proc.returncode,
                                                             proc.stdout, proc.stderr))
    return proc


def state_dir_locked(state_dir):
    """True while a server (its supervisor) holds the state dir's lock."""
    try:
        fd = os.open(os.path.join(state_dir, "serve.pid"), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "Response(%d, %r)" % (self.status, self.body[:200])


class Server:
    def __init__(self, *start_args, state_dir=None):
        self.own_dir = state_dir is None
        self.state_dir = state_dir or tempfile.mkdtemp(prefix="serve-test-")
        self.start_args = start_args
        self.url = None
        self.start()

    # -- lifecycle -------------------------------------------------------
    def start(self):
        proc = run_cli(self.state_dir, "start", "--http", "127.0.0.1:0", *self.start_args)
        m = re.search(r"listening on (http://[^ ]+) \(pid (\d+)", proc.stdout)
        assert m, proc.stdout
        self.url = m.group(1)
        self.pid = int(m.group(2))
        hostport = self.url[len("http://"):]
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)
        return proc

    def stop(self, timeout=30):
        try:
            proc = run_cli(self.state_dir, "stop", "--timeout", str(timeout))
        except AssertionError as e:
            # A server that died (or is being restarted by its supervisor)
            # says why in its log: show it, or the failure cannot be read.
            raise AssertionError("%s\n-- the end of serve.log:\n%s" % (e, self.log()[-8000:]))
        self.pid = None
        self.assert_log_clean()
        return proc

    def kill(self):
        os.kill(self.pid, signal.SIGKILL)
        # The process is gone when its lock on serve.pid is free: its
        # leader shows as a zombie while other threads are still exiting
        # and holding the files (often seen with TSan builds).
        deadline = time.monotonic() + 60
        while self.alive() or self.state_dir_locked():
            if time.monotonic() > deadline:
                raise AssertionError("server %d still runs 60 s after SIGKILL" % self.pid)
            time.sleep(0.01)
        self.pid = None

    def server_pid(self):
        """The pid of the server process, under the supervisor whose pid
        `serve start` printed (self.pid): the one that holds the
        connections, threads and plugins."""
        return self.status()["server_pid"]

    def state_dir_locked(self):
        return state_dir_locked(self.state_dir)

    def alive(self):
        """True while the server process runs (a zombie left for a
        container's init to reap counts as gone)."""
        if self.pid is None:
            return False
        try:
            with open("/proc/%d/stat" % self.pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return False

    def close(self):
        """Stops the server if it still runs; removes its state dir."""
        if self.alive():
            try:
                self.stop()
            except Exception:
                self.kill()
                raise
        if self.own_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def log(self):
        try:
            with open(os.path.join(self.state_dir, "serve.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def assert_log_clean(self):
        log = self.log()
        for marker in SANITIZER_MARKERS:
            if marker in log:
                raise AssertionError("sanitizer report in the server log:\n" + log[-6000:])

    # -- control plane ---------------------------------------------------
    def cli(self, *args, check=True):
        return run_cli(self.state_dir, *args, check=check)

    def status(self):
        return json.loads(self.cli("status", "--json").stdout)

    def backend_status(self, name):
        for b in self.status()["backends"]:
            if b["spec"]["name"] == name:
                return b
        raise KeyError(name)

    def deploy(self, backend, plugin, route=None, *options, endpoint=None):
        """create-backend + create-endpoint in one call."""
        self.cli("create-backend", backend, plugin, *options)
        ep = ["create-endpoint", endpoint or backend, "--backend", backend]
        if route:
            ep += ["--route", route]
        self.cli(*ep)

    # -- data plane ------------------------------------------------------
    def request(self, method, path, body=None, headers=None, timeout=30):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def post(self, path, body=b"", **kw):
        return self.request("POST", path, body, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def concurrent(self, bodies, path, workers=None):
        """POSTs every body at once from its own connection; answers in order."""
        bodies = list(bodies)
        with ThreadPoolExecutor(max_workers=workers or max(1, len(bodies))) as pool:
            return list(pool.map(lambda b: self.post(path, b), bodies))

    def raw(self, data, timeout=5, read_all=True):
        """Sends raw bytes on a fresh connection; returns what came back
        until the server closed or went quiet."""
        s = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            s.sendall(data)
            chunks = []
            while True:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    break
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
                if not read_all:
                    break
            return b"".join(chunks)
        finally:
            s.close()


class ServeTestCase(unittest.TestCase):
    """Gives each test method a fresh server (self.server), stopped after."""
    start_args = ()

    def setUp(self):
        self.server = Server(*self.start_args)

    def tearDown(self):
        self.server.close()


# -- the control socket, byte for byte ------------------------------------
# Enough msgpack to write the frames the tests send by hand: a map of short
# string keys whose values are short strings or binary bodies.
def mp_str(text):
    data = text.encode()
    assert len(data) < 32
    return bytes([0xa0 | len(data)]) + data


def mp_bin(data):
    return b"\xc6" + struct.pack(">I", len(data)) + data


def mp_map(*pairs):
    assert len(pairs) < 16
    return bytes([0x80 | len(pairs)]) + b"".join(mp_str(k) + v for k, v in pairs)


def control_frame(payload):
    return struct.pack(">I", len(payload)) + payload


def connect_control(state_dir, timeout=30):
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(timeout)
    sock.connect(os.path.join(state_dir, "control.sock"))
    return sock


def _read_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(min(n - len(data), 1 << 20))
        if not chunk:
            return None
        data += chunk
    return data


def read_frame(sock):
    """One whole control frame's payload (and not a byte of the next); None
    when the server closed first."""
    head = _read_exactly(sock, 4)
    return head and _read_exactly(sock, struct.unpack(">I", head)[0])


class FakeControlServer:
    """Listens on STATE_DIR/control.sock as a server would, and never
    answers: connections wait in the listen queue. `connections()` says how
    many clients got that far."""

    def __init__(self, state_dir):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(os.path.join(state_dir, "control.sock"))
        self.sock.listen(16)
        self.sock.setblocking(False)

    def connections(self):
        n = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return n
            conn.close()
            n += 1

    def close(self):
        self.sock.close()


def parse_statuses(raw):
    return [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3})", raw)]
