"""serve bench against the real server and against a tiny in-test HTTP
server that counts exactly what it receives."""
import http.server
import json
import os
import subprocess
import tempfile
import threading
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

from serve_harness import SERVE_BIN, ServeTestCase, test_plugin


class CountingHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    count = 0
    lock = threading.Lock()

    def do_GET(self):
        if self.path == "/x":  # not the /metrics probe bench makes
            with CountingHandler.lock:
                CountingHandler.count += 1
        body = b"counted"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


class TinyServer:
    def __enter__(self):
        CountingHandler.count = 0
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CountingHandler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return "http://127.0.0.1:%d/x" % self.httpd.server_address[1]

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def bench(*args, state_dir=None, check=True):
    cmd = [SERVE_BIN] + (["--state-dir", state_dir] if state_dir else []) + ["bench", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError("serve bench failed (%d): %s" % (proc.returncode, proc.stderr))
    return proc


class BenchTiny(unittest.TestCase):
    def test_closed_loop_count_is_exact(self):
        with TinyServer() as url:
            proc = bench(url, "-n", "500", "-c", "4", "-t", "2", "--json")
            j = json.loads(proc.stdout)
            self.assertEqual(j["requests"], 500)
            self.assertEqual(CountingHandler.count, 500)
            self.assertEqual(j["errors"]["total"], 0)
            self.assertNotIn("server", j)  # not a serve server
            for key in ("requests", "duration_s", "throughput_rps", "errors", "latency_us", "bytes"):
                self.assertIn(key, j)
            for q in ("p50", "p90", "p99", "p99.9", "max", "mean"):
                self.assertIn(q, j["latency_us"])
            self.assertEqual(j["bytes"] > 0, True)

    def test_bad_arguments(self):
        cases = [
            (["http://127.0.0.1:1/", "-c", "0"], "-c 0: not a valid value"),
            (["http://127.0.0.1:1/", "-d", "5x"], "-d 5x: not a valid value"),
            (["http://127.0.0.1:1/", "-d", "1s", "-n", "5"], "give -d or -n, not both"),
            (["ftp://x/"], "expected http://HOST[:PORT][/PATH]"),
            (["http://127.0.0.1:1/", "--sweep", "q=1"], "--sweep"),
            (["http://127.0.0.1:1/", "--bogus"], "unknown option --bogus"),
            ([], "usage: serve bench TARGET"),
        ]
        for args, message in cases:
            proc = bench(*args, check=False)
            self.assertNotEqual(proc.returncode, 0, args)
            self.assertIn(message, proc.stderr, args)
            self.assertEqual(proc.stderr.count("\n"), 1, proc.stderr)

    def test_connection_errors_are_counted(self):
        proc = bench("http://127.0.0.1:1/", "-d", "300ms", "-c", "2", "--json",
                     "--max-error-rate", "0.5", check=False)
        self.assertEqual(proc.returncode, 3)
        j = json.loads(proc.stdout)
        self.assertGreater(j["errors"]["connect"], 0)

    def test_a_count_against_a_refused_port_ends(self):
        # Connections that cannot be made use up -n; the run used to last
        # for ever.
        proc = bench("http://127.0.0.1:1/", "-n", "5", "-c", "2", "--json", check=False)
        j = json.loads(proc.stdout)
        self.assertEqual(j["errors"]["connect"], 5)


class BenchServe(ServeTestCase):
    def test_open_loop_sends_on_schedule(self):
        self.server.deploy("echo", "echo", "/echo")
        j = json.loads(bench("echo", "--rate", "2000", "-d", "4s", "--json",
                             state_dir=self.server.state_dir).stdout)
        self.assertEqual(j["mode"], "open")
        self.assertAlmostEqual(j["requests"], 8000, delta=160)
        self.assertEqual(j["errors"]["total"], 0)

    def test_a_stall_is_not_hidden(self):
        # One replica; in the middle of the run one request holds it for
        # 600 ms. Requests scheduled meanwhile wait, and their latency counts
        # from when they should have been sent: the worst waited >= 500 ms.
        self.server.deploy("f", test_plugin("faulty"), "/f")
        url = self.server.url + "/f"

        def stall():
            time.sleep(1.0)
            self.server.post("/f", b"sleep:600")

        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(stall)
            j = json.loads(bench(url, "--rate", "200", "-d", "3s", "-c", "4", "--data", "ok",
                                 "--json").stdout)
        self.assertGreaterEqual(j["latency_us"]["p99.9"], 500000)
        self.assertGreaterEqual(j["latency_us"]["max"], 500000)

    def test_server_batches_match_the_plugins_counts(self):
        self.server.deploy("sim", "sim", "/sim", "--max-batch-size", "8",
                           "--batch-wait-timeout-ms", "5", "--config", "base_us=1000")
        j = json.loads(bench("sim", "-n", "400", "-c", "16", "--json",
                             state_dir=self.server.state_dir).stdout)
        server = j["server"]["backends"]["sim"]
        status = self.server.backend_status("sim")
        self.assertEqual(j["requests"], 400)
        self.assertEqual(server["requests"], status["requests"])
        self.assertEqual(server["batches"], status["batches"])
        self.assertEqual(sum(server["batch_sizes"].values()), status["batches"])
        self.assertAlmostEqual(server["mean_batch_size"], 400 / status["batches"], places=2)
        self.assertGreater(server["mean_batch_size"], 1)

    def test_an_oip_binary_body_from_a_file(self):
        # --data @FILE sends the file's bytes as they are (NULs included)
        # and -H the header that says where its JSON part ends: every
        # answer is the tensors echoed, none a 400.
        self.server.deploy("t", test_plugin("tensor_echo"), "/t")
        header = json.dumps({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [4],
                                         "parameters": {"binary_data_size": 4}}]}).encode()
        with tempfile.NamedTemporaryFile(suffix=".bin") as f:
            f.write(header + b"\x00\x01\x00\xff")
            f.flush()
            url = "http://%s:%d/v2/models/t/infer" % (self.server.host, self.server.port)
            for length, errors in ((len(header), 0), (len(header) + 1, 50)):
                j = json.loads(bench(url, "-n", "50", "-c", "2", "--data", "@" + f.name, "--json",
                                     "-H", "Inference-Header-Content-Length: %d" % length).stdout)
                self.assertEqual((j["requests"], j["errors"]["total"]), (50, errors))

    def test_sweep_table_plot_and_slo(self):
        self.server.deploy("sim", "sim", "/sim", "--max-batch-size", "16",
                           "--batch-wait-timeout-ms", "1", "--config", "base_us=1000")
        svg = os.path.join(self.server.state_dir, "sweep.svg")
        proc = bench("sim", "--sweep", "c=1,4,16", "-d", "500ms", "--plot", svg, "--slo-ms", "1000",
                     state_dir=self.server.state_dir)
        self.assertNotIn("100.00%", proc.stdout)
        lines = proc.stdout.splitlines()
        self.assertTrue(lines[0].startswith("point"))
        self.assertEqual([l.split()[0] for l in lines[1:4]], ["c=1", "c=4", "c=16"])
        self.assertIn("highest throughput with p99 <= 1000 ms", proc.stdout)
        with open(svg) as f:
            text = f.read()
        self.assertTrue(text.startswith("<svg") and text.rstrip().endswith("</svg>"))
        self.assertIn("c=16", text)
        proc = bench("sim", "--sweep", "c=1,2", "-d", "500ms", "--slo-ms", "0.001",
                     state_dir=self.server.state_dir, check=False)
        self.assertEqual(proc.returncode, 3, proc.stdout + proc.stderr)
        self.assertIn("no point kept p99", proc.stdout)


if __name__ == "__main__":
    unittest.main()
