"""samples/cluster: the seed's composition over three serve nodes behind
HAProxy (SPEC 5a). Node A serves /composed with model_two a remote backend
pointing at HAProxy, which balances nodes B1 and B2 (model_two at
/model_two). Each test starts the sample with its own start.sh on free
ports, and checks that no client request fails while a B node is killed,
while the B nodes are updated one by one, and that a node added to HAProxy
takes traffic. Skipped when haproxy is not installed."""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from serve_harness import SANITIZER_MARKERS, SERVE_BIN, state_dir_locked

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SAMPLE = os.path.join(ROOT, "samples", "cluster")
HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin:/sbin")
CLIENTS = 16


def free_ports(n):
    """n distinct ports free on 127.0.0.1 (all held until all are chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(predicate, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    if not predicate():
        raise AssertionError("gave up after %d s waiting for %s" % (seconds, what))


def process_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def start_time(pid):
    """When pid started (clock ticks since boot): with the pid, names one
    process, not another that got its pid later."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def descendants(pid):
    """pid and every process under it."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def get(port, path, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        conn.close()


def metric(port, name, labels):
    """The value of one sample of a node's /metrics (0 when absent)."""
    status, text = get(port, "/metrics")
    assert status == 200, (status, text[:200])
    want = "%s{%s}" % (name, ",".join('%s="%s"' % kv for kv in labels.items()))
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


def check_answer(status, body):
    """None when an answer of /composed is right, else what is wrong."""
    if status != 200:
        return "status %d: %r" % (status, body[:300])
    try:
        j = json.loads(body)
    except ValueError:
        return "not JSON: %r" % body[:300]
    if j.get("model_used") not in (1, 2) or not isinstance(j.get("score"), (int, float)):
        return "unexpected answer %r" % j
    if j["model_used"] != (2 if j["score"] > 0.5 else 1):
        return "model_used does not match the score: %r" % j
    return None


class Load:
    """CLIENTS threads POSTing to node A's /composed over keep-alive
    connections until stopped; every answer must be a right one."""

    def __init__(self, port):
        self.port = port
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.used_two = 0
        self.failures = []
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True)
                        for i in range(CLIENTS)]
        for t in self.threads:
            t.start()

    def client(self, index):
        conn = None
        n = 0
        while not self.stopping.is_set():
            n += 1
            body = b"client %d request %d" % (index, n)
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                conn.request("POST", "/composed", body=body)
                r = conn.getresponse()
                status, answer = r.status, r.read()
                if r.will_close:
                    conn.close()
                    conn = None
                problem = check_answer(status, answer)
            except (OSError, http.client.HTTPException) as e:
                problem = "%s: %s" % (type(e).__name__, e)
                if conn:
                    conn.close()
                conn = None
            with self.lock:
                if problem:
                    self.failures.append("%.3f %s" % (time.monotonic(), problem))
                else:
                    self.ok += 1
                    self.used_two += b'"model_used": 2' in answer
        if conn:
            conn.close()

    def count(self):
        with self.lock:
            return self.ok

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(90)
        assert not any(t.is_alive() for t in self.threads), "a client is stuck"


class Cluster(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not HAPROXY:
            raise unittest.SkipTest("haproxy is not installed")

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="serve-cluster-")
        names = ("NODE_A_PORT", "NODE_B1_PORT", "NODE_B2_PORT", "HAPROXY_PORT",
                 "HAPROXY_STATS_PORT", "NODE_B3_PORT")
        self.ports = dict(zip(names, free_ports(len(names))))
        self.env = dict(os.environ, SERVE=SERVE_BIN, HAPROXY=HAPROXY,
                        **{k: str(v) for k, v in self.ports.items()})
        self.env.pop("CLUSTER_DIR", None)
        plugins = os.environ.get("SERVE_BUILD_PLUGIN_DIR")
        if plugins:  # model_one, model_two and composed, by bare name
            self.env["SERVE_PLUGIN_PATH"] = plugins
        self.loads = []
        self.addCleanup(self.clean_up)
        self.sh("start.sh", self.dir)
        self.a = self.ports["NODE_A_PORT"]
        self.b = {"b1": self.ports["NODE_B1_PORT"], "b2": self.ports["NODE_B2_PORT"]}

    # -- the sample's scripts, and cleaning up after them ------------------
    def sh(self, script, *args, env=None, timeout=120):
        proc = subprocess.run(["bash", os.path.join(SAMPLE, script), *args], env=env or self.env,
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError("%s %s failed (%d):\n%s%s\n%s" % (
                script, " ".join(args), proc.returncode, proc.stdout, proc.stderr,
                self.diagnostics()))
        return proc

    def clean_up(self):
        for load in self.loads:
            load.stopping.set()
        # What stop.sh should stop, found first (the processes of this
        # cluster only): whatever it leaves is killed.
        pids = []
        for node in self.nodes():
            pid = self.supervisor_pid(node)
            if pid and state_dir_locked(self.state_dir(node)):
                pids += descendants(pid)
        try:
            with open(os.path.join(self.dir, "haproxy.pid")) as f:
                pid = int(f.read())
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if os.path.join(self.dir, "haproxy.cfg").encode() in f.read():
                    pids += descendants(pid)
        except (OSError, ValueError):
            pass
        started = {pid: start_time(pid) for pid in pids}
        try:
            subprocess.run(["bash", os.path.join(SAMPLE, "stop.sh"), self.dir],
                           env=dict(self.env, STOP_TIMEOUT="10"), capture_output=True,
                           timeout=120)
        finally:
            for pid, when in started.items():
                if when is not None and start_time(pid) == when and process_alive(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            for load in self.loads:
                load.stop()
            logs = "".join(self.log(n) for n in self.nodes())
            shutil.rmtree(self.dir, ignore_errors=True)
        for marker in SANITIZER_MARKERS:
            if marker in logs:
                raise AssertionError("sanitizer report in a node's log:\n" + logs[-6000:])

    def nodes(self):
        try:
            return sorted(e[len("node-"):] for e in os.listdir(self.dir)
                          if e.startswith("node-") and os.path.isdir(os.path.join(self.dir, e)))
        except OSError:
            return []

    def state_dir(self, node):
        return os.path.join(self.dir, "node-" + node)

    def supervisor_pid(self, node):
        try:
            with open(os.path.join(self.state_dir(node), "serve.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def serve(self, node, *args):
        proc = subprocess.run([SERVE_BIN, "--state-dir", self.state_dir(node), *args],
                              capture_output=True, text=True, timeout=60, env=self.env)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        return proc.stdout

    def log(self, node):
        try:
            with open(os.path.join(self.state_dir(node), "serve.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def diagnostics(self):
        parts = []
        try:
            with open(os.path.join(self.dir, "haproxy.log"), errors="replace") as f:
                parts.append("-- haproxy.log:\n" + f.read()[-4000:])
        except OSError:
            pass
        for node in self.nodes():
            parts.append("-- node %s serve.log:\n%s" % (node, self.log(node)[-2500:]))
        return "\n".join(parts)

    # -- helpers -----------------------------------------------------------
    def start_load(self):
        load = Load(self.a)
        self.loads.append(load)
        wait_for(lambda: load.count() >= 50 or load.failures, 30, "the load to start")
        return load

    def finish(self, load, what):
        load.stop()
        if load.failures:
            self.fail("%d of %d requests failed %s; the first:\n%s\n%s" % (
                len(load.failures), len(load.failures) + load.ok, what,
                "\n".join(load.failures[:10]), self.diagnostics()))
        # model_two (the remote backend) was part of it.
        self.assertGreater(load.used_two, 0)
        return load.ok

    def stats_up(self):
        try:
            return self.haproxy_status() == {"b1": "UP", "b2": "UP", "BACKEND": "UP"}
        except (OSError, AssertionError):
            return False

    def taken(self, name):
        """Requests model_two took on B node NAME."""
        return metric(self.b[name], "serve_backend_requests_total", {"backend": "model_two"})

    def haproxy_status(self):
        status, text = get(self.ports["HAPROXY_STATS_PORT"], "/stats;csv")
        self.assertEqual(status, 200)
        rows = [line.split(",") for line in text.splitlines() if not line.startswith("#")]
        return {r[1]: r[17] for r in rows if len(r) > 17 and r[0] == "model_two"}

    # -- the tests -----------------------------------------------------------
    def test_composed_answers_through_three_nodes(self):
        answers = []
        for i in range(60):
            conn = http.client.HTTPConnection("127.0.0.1", self.a, timeout=30)
            conn.request("POST", "/composed", body=b"data %d" % i)
            r = conn.getresponse()
            answers.append((r.status, r.read()))
            conn.close()
        for status, body in answers:
            self.assertIsNone(check_answer(status, body))
        used = [json.loads(body)["model_used"] for _, body in answers]
        self.assertEqual(set(used), {1, 2}, "60 scores, none on one side of 0.5?")
        twos = used.count(2)
        # Every call of model_two left node A for HAProxy, and came back 200...
        self.assertEqual(metric(self.a, "serve_remote_requests_total",
                                {"backend": "model_two", "code": "200"}), twos)
        self.assertEqual(json.loads(get(self.a, "/-/routes")[1]), {"/composed": "composed"})
        # ... and ran on B1 or B2, both taking a share (round robin).
        b1, b2 = self.taken("b1"), self.taken("b2")
        self.assertEqual(b1 + b2, twos)
        self.assertGreater(b1, 0)
        self.assertGreater(b2, 0)
        self.assertEqual(self.haproxy_status(), {"b1": "UP", "b2": "UP", "BACKEND": "UP"})
        # The B nodes serve model_two at /model_two to anyone; A only /composed.
        self.assertEqual(json.loads(get(self.b["b1"], "/-/routes")[1]), {"/model_two": "model_two"})

    def test_sigkill_of_a_b_node_under_load_fails_no_request(self):
        load = self.start_load()
        t0 = time.monotonic()
        wait_for(lambda: self.taken("b1") > 0 and self.taken("b2") > 0, 20,
                 "both B nodes to take requests")
        time.sleep(1.5)
        # The whole node: its supervisor (which would restart the server
        # process) and the server process, at once.
        supervisor = self.supervisor_pid("b1")
        server = json.loads(self.serve("b1", "status", "--json"))["server_pid"]
        victims = descendants(supervisor)
        self.assertIn(server, victims)
        for pid in (supervisor, server):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not any(map(process_alive, victims))
                 and not state_dir_locked(self.state_dir("b1")), 30, "node B1 to be gone")
        killed_at = load.count()
        b2_at_kill = self.taken("b2")
        wait_for(lambda: self.haproxy_status().get("b1") == "DOWN", 10, "HAProxy to mark B1 DOWN")
        remaining = 10 - (time.monotonic() - t0)
        time.sleep(max(remaining, 3))
        total = self.finish(load, "while node B1 was killed")
        self.assertGreater(total, killed_at)
        self.assertGreater(self.taken("b2"), b2_at_kill)
        with self.assertRaises(OSError):
            get(self.b["b1"], "/-/healthz", timeout=2)

    def test_rolling_update_under_load_fails_no_request(self):
        load = self.start_load()
        wait_for(lambda: self.taken("b1") > 0 and self.taken("b2") > 0, 20,
                 "both B nodes to take requests")
        time.sleep(1)
        old = {name: self.supervisor_pid(name) for name in self.b}
        out = self.sh("rolling-update.sh", self.dir, os.path.join(SAMPLE, "node-b-v2.yaml")).stdout
        self.assertRegex(out, r"(?s)b1: stopping.*b1: UP.*b2: stopping.*b2: UP")
        # Both run the new file (two replicas each), and both take traffic again.
        for name in self.b:
            self.assertNotEqual(self.supervisor_pid(name), old[name])
            status = json.loads(self.serve(name, "status", "--json"))
            spec = [b["spec"] for b in status["backends"] if b["spec"]["name"] == "model_two"][0]
            self.assertEqual(spec["num_replicas"], 2, spec)
            self.assertIn("info stopped", self.log(name))
        after = {name: self.taken(name) for name in self.b}
        wait_for(lambda: all(self.taken(n) > after[n] for n in self.b), 20,
                 "both updated B nodes to take requests")
        time.sleep(1)
        self.finish(load, "during the rolling update")

    def test_rolling_update_with_only_the_retries_safe_for_any_model(self):
        # HAProxy retrying only refused connections and 503s (never a request
        # a node may have run): a stopping serve node refuses unrouted, with
        # 503, on open connections and new ones, so nothing fails.
        cfg = os.path.join(self.dir, "haproxy.cfg")
        with open(cfg) as f:
            text = f.read()
        self.assertIn("retry-on conn-failure empty-response response-timeout 503", text)
        with open(cfg, "w") as f:
            f.write(text.replace("retry-on conn-failure empty-response response-timeout 503",
                                 "retry-on conn-failure 503"))
        # HAProxy started again with it (not reloaded: a reload's old worker
        # closes idle client connections, which races node A's reuse of them).
        with open(os.path.join(self.dir, "haproxy.pid")) as f:
            master = int(f.read().split()[0])
        os.kill(master, signal.SIGTERM)
        wait_for(lambda: not process_alive(master), 20, "HAProxy to exit")
        log = open(os.path.join(self.dir, "haproxy.log"), "ab")
        self.addCleanup(log.close)
        subprocess.Popen([HAPROXY, "-W", "-f", cfg, "-p", os.path.join(self.dir, "haproxy.pid")],
                         env=dict(self.env, CLUSTER_DIR=self.dir),
                         stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: self.stats_up(), 20, "HAProxy to have both B nodes UP again")
        time.sleep(0.5)  # node A has seen its old connections close
        load = self.start_load()
        wait_for(lambda: self.taken("b1") > 0 and self.taken("b2") > 0, 20,
                 "both B nodes to take requests")
        self.sh("rolling-update.sh", self.dir, os.path.join(SAMPLE, "node-b-v2.yaml"))
        time.sleep(1)
        self.finish(load, "during a rolling update with retry-on conn-failure 503")

    def test_a_node_added_to_haproxy_takes_traffic(self):
        load = self.start_load()
        port = self.ports["NODE_B3_PORT"]
        self.b["b3"] = port
        out = self.sh("add-node.sh", self.dir, "b3", str(port)).stdout
        self.assertIn("b3: UP in HAProxy", out)
        self.assertEqual(self.haproxy_status(),
                         {"b1": "UP", "b2": "UP", "b3": "UP", "BACKEND": "UP"})
        start = {name: self.taken(name) for name in self.b}
        wait_for(lambda: all(self.taken(n) > start[n] + 20 for n in self.b), 30,
                 "every B node, B3 too, to take requests")
        self.finish(load, "while B3 was added and HAProxy reloaded")
        # The added node is stopped with the rest by stop.sh.
        self.sh("stop.sh", self.dir)
        self.assertFalse(state_dir_locked(self.state_dir("b3")))


if __name__ == "__main__":
    unittest.main()
