"""The torch plugin on the CPU: served outputs equal libtorch's own forward,
one forward per batch, bad rows refused alone, both input formats, clear
load errors. Skipped where the plugin was not built (no libtorch)."""
import json
import os
import random
import struct
import subprocess
import tempfile
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

from serve_harness import ServeTestCase

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.path.join(ROOT, "samples", "torch", "mlp.pt")
PLUGIN_DIR = os.environ.get("SERVE_BUILD_PLUGIN_DIR", os.path.join(ROOT, "build", "plugins"))
PLUGIN = os.path.join(PLUGIN_DIR, "torch.so")
REFERENCE = r"""
import json, sys, torch
model = torch.jit.load(sys.argv[1])
rows = json.load(sys.stdin)
with torch.no_grad():
    print(json.dumps(model(torch.tensor(rows, dtype=torch.float32)).tolist()))
"""


PICKY = r"""
import sys, torch
class Picky(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(64))
        self.fc = torch.nn.Linear(64, 10)
    def forward(self, x):
        if bool((x[:, 0] < -100).any()):
            raise RuntimeError("row with a sentinel")
        return self.fc(x * self.scale)
torch.jit.script(Picky()).save(sys.argv[1])
"""


def reference(rows):
    proc = subprocess.run(["/usr/bin/python3", "-c", REFERENCE, MODEL], input=json.dumps(rows),
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(proc.stdout)


def msgpack_floats(values):
    out = bytearray(b"\xdc" + struct.pack(">H", len(values)))
    for v in values:
        out += b"\xca" + struct.pack(">f", v)
    return bytes(out)


def msgpack_decode_floats(data):
    assert data[0] in (0xdc, 0x9a), data[:4]
    n, i = (struct.unpack(">H", data[1:3])[0], 3) if data[0] == 0xdc else (data[0] & 0x0f, 1)
    values = []
    for _ in range(n):
        assert data[i] == 0xca
        values.append(struct.unpack(">f", data[i + 1:i + 5])[0])
        i += 5
    return values


@unittest.skipUnless(os.path.exists(PLUGIN), "torch plugin not built (libtorch-dev missing)")
class Torch(ServeTestCase):
    def deploy_mlp(self, *options):
        self.server.deploy("mlp", PLUGIN, "/mlp", "--config", "model=" + MODEL,
                           "--config", "input_shape=64", "--config", "threads=1", *options)

    def test_outputs_equal_libtorch_forward(self):
        self.deploy_mlp("--max-batch-size", "8", "--batch-wait-timeout-ms", "50")
        rng = random.Random(1)
        rows = [[rng.uniform(-1, 1) for _ in range(64)] for _ in range(8)]
        answers = self.server.concurrent([json.dumps(r).encode() for r in rows], "/mlp")
        expected = reference(rows)
        for a, want in zip(answers, expected):
            self.assertEqual(a.status, 200, a)
            got = a.json()
            self.assertEqual(len(got), 10)
            for g, w in zip(got, want):
                self.assertAlmostEqual(g, w, delta=1e-5)

    def test_a_batch_of_32_is_one_forward(self):
        self.deploy_mlp("--max-batch-size", "32", "--batch-wait-timeout-ms", "2000")
        answers = self.server.concurrent([json.dumps([0.5] * 64).encode()] * 32, "/mlp")
        self.assertEqual([a.status for a in answers], [200] * 32)
        self.assertEqual({a.headers["x-forward-rows"] for a in answers}, {"32"})
        self.assertEqual(self.server.backend_status("mlp")["batches"], 1)

    def test_a_bad_row_does_not_spoil_its_batch(self):
        self.deploy_mlp("--max-batch-size", "4", "--batch-wait-timeout-ms", "2000")
        bodies = [json.dumps([0.1] * 64), json.dumps([0.1] * 63), json.dumps([0.2] * 64),
                  "not json"]
        answers = self.server.concurrent([b.encode() for b in bodies], "/mlp")
        self.assertEqual([a.status for a in answers], [200, 400, 200, 400])
        self.assertEqual(answers[1].json()["error"],
                         "expected an input row of shape [64] (or rows [N, ...]), got [63]")
        self.assertEqual(answers[0].headers["x-forward-rows"], "2")

    def test_without_input_shape_the_model_says_it(self):
        # No input_shape: the rows' shape is read from the model (its first
        # layer), so a burst of good rows with one short row among them gets
        # 15 answers and one 400 naming both shapes.
        self.server.deploy("mlp", PLUGIN, "/mlp", "--config", "model=" + MODEL,
                           "--config", "threads=1", "--max-batch-size", "32",
                           "--batch-wait-timeout-ms", "1000")
        rng = random.Random(7)
        rows = [[rng.uniform(-1, 1) for _ in range(64)] for _ in range(15)]
        bodies = [json.dumps(r) for r in rows]
        bodies.insert(5, json.dumps([0.1] * 63))
        answers = self.server.concurrent([b.encode() for b in bodies], "/mlp")
        self.assertEqual([a.status for a in answers], [200] * 5 + [400] + [200] * 10)
        self.assertEqual(answers[5].json()["error"],
                         "expected an input row of shape [64] (or rows [N, ...]), got [63]")
        expected = reference(rows)
        for a, want in zip(answers[:5] + answers[6:], expected):
            for g, w in zip(a.json(), want):
                self.assertAlmostEqual(g, w, delta=1e-5)

    def test_a_failed_forward_is_split_so_only_the_bad_rows_fail(self):
        # A model whose input shape cannot be read (its first parameter is
        # not a Linear weight) and that refuses a row with a sentinel: the
        # batch's stacked forward fails, is split down to the rows that
        # fail, and those get 400 with libtorch's own reason.
        path = os.path.join(self.server.state_dir, "picky.pt")
        script = os.path.join(self.server.state_dir, "picky.py")  # script needs a source file
        with open(script, "w") as f:
            f.write(PICKY)
        subprocess.run(["/usr/bin/python3", script, path], check=True, timeout=120)
        self.server.deploy("picky", PLUGIN, "/picky", "--config", "model=" + path,
                           "--config", "threads=1", "--max-batch-size", "32",
                           "--batch-wait-timeout-ms", "1000")
        bodies = [json.dumps([0.25] * 64)] * 14
        bodies.insert(3, json.dumps([-1000.0] + [0.25] * 63))
        bodies.insert(9, json.dumps([0.25] * 63))
        answers = self.server.concurrent([b.encode() for b in bodies], "/picky")
        statuses = [a.status for a in answers]
        self.assertEqual(statuses, [200] * 3 + [400] + [200] * 5 + [400] + [200] * 6, answers)
        self.assertIn("row with a sentinel", answers[3].json()["error"])
        self.assertNotIn("TorchScript interpreter", answers[3].json()["error"])
        self.assertIn("must match the size of tensor", answers[9].json()["error"])
        self.assertTrue(self.server.alive())

    def test_msgpack_and_json_give_the_same_numbers(self):
        self.deploy_mlp()
        row = [((i * 37) % 17) / 17.0 - 0.5 for i in range(64)]
        js = self.server.post("/mlp", json.dumps(row).encode()).json()
        r = self.server.post("/mlp", msgpack_floats(row),
                             headers={"Content-Type": "application/msgpack"})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers["content-type"], "application/msgpack")
        mp = msgpack_decode_floats(r.body)
        self.assertEqual(len(mp), 10)
        for a, b in zip(js, mp):
            self.assertAlmostEqual(a, b, delta=1e-6)

    def test_every_wire_form_gives_the_same_numbers(self):
        # One row as a JSON row, a msgpack row, OIP JSON and OIP binary.
        self.deploy_mlp()
        rng = random.Random(7)
        row = [rng.uniform(-1, 1) for _ in range(64)]
        want = reference([row])[0]
        answers = {}
        answers["json"] = self.server.post("/mlp", json.dumps(row).encode()).json()
        r = self.server.post("/mlp", msgpack_floats(row), headers={"Content-Type": "application/msgpack"})
        answers["msgpack"] = msgpack_decode_floats(r.body)
        doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": row}]}
        r = self.server.post("/v2/models/mlp/infer", json.dumps(doc).encode())
        out = r.json()["outputs"][0]
        self.assertEqual((out["name"], out["shape"], out["datatype"]), ("output", [1, 10], "FP32"))
        answers["oip json"] = out["data"]
        header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                                         "parameters": {"binary_data_size": 256}}],
                             "parameters": {"binary_data_output": True}}).encode()
        r = self.server.post("/v2/models/mlp/infer", header + struct.pack("<64f", *row),
                             headers={"Inference-Header-Content-Length": str(len(header))})
        n = int(r.headers["inference-header-content-length"])
        self.assertEqual(json.loads(r.body[:n])["outputs"][0]["parameters"], {"binary_data_size": 40})
        answers["oip binary"] = list(struct.unpack("<10f", r.body[n:]))
        for form, got in answers.items():
            self.assertEqual(len(got), 10, form)
            for g, w in zip(got, want):
                self.assertAlmostEqual(g, w, delta=1e-5, msg=form)

    def test_32_rows_in_one_request_equal_32_single_rows(self):
        self.deploy_mlp("--max-batch-size", "32", "--batch-wait-timeout-ms", "2000")
        rng = random.Random(3)
        rows = [[rng.uniform(-1, 1) for _ in range(64)] for _ in range(32)]
        header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [32, 64],
                                         "parameters": {"binary_data_size": 32 * 256}}],
                             "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}).encode()
        blob = b"".join(struct.pack("<64f", *row) for row in rows)
        r = self.server.post("/v2/models/mlp/infer", header + blob,
                             headers={"Inference-Header-Content-Length": str(len(header))})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers["x-forward-rows"], "32")
        n = int(r.headers["inference-header-content-length"])
        self.assertEqual(json.loads(r.body[:n])["outputs"][0]["shape"], [32, 10])
        together = struct.unpack("<320f", r.body[n:])
        singles = self.server.concurrent([json.dumps(row).encode() for row in rows], "/mlp")
        for i, a in enumerate(singles):
            for g, w in zip(together[10 * i:10 * i + 10], a.json()):
                self.assertAlmostEqual(g, w, delta=1e-5)

    def test_rows_of_several_requests_share_one_forward(self):
        self.deploy_mlp("--max-batch-size", "8", "--batch-wait-timeout-ms", "2000")
        docs = [json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [k, 64],
                                        "data": [0.25] * (64 * k)}]}).encode() for k in (1, 2, 5)]
        answers = self.server.concurrent(docs, "/v2/models/mlp/infer")
        self.assertEqual([a.json()["outputs"][0]["shape"] for a in answers], [[1, 10], [2, 10], [5, 10]])
        self.assertEqual({a.headers["x-forward-rows"] for a in answers}, {"8"})
        self.assertEqual(self.server.backend_status("mlp")["batches"], 1)

    def test_metadata_comes_from_the_model(self):
        self.deploy_mlp()
        meta = self.server.get("/v2/models/mlp").json()
        self.assertEqual(meta["inputs"], [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}])
        self.assertEqual(meta["outputs"], [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}])

    def test_hostile_bodies_get_400(self):
        """Found by fuzz_rows (now fuzz_tensors): numbers past float32 became inf and answers
        were not JSON; five bytes claiming 2^32 msgpack elements made
        msgpack-c ask for about 100 GB."""
        self.deploy_mlp()
        mp = {"Content-Type": "application/msgpack"}
        cases = [(b"[" + b"1e39, " * 63 + b"1]", {}, "(1e+39) is not within float32 range"),
                 (b"\xdd\xff\xff\xff\xff\xca", mp, "malformed msgpack body"),
                 (b"\x91\xcb\x7f\xf0\x00\x00\x00\x00\x00\x00", mp, "not a finite float32")]
        for body, headers, reason in cases:
            r = self.server.post("/mlp", body, headers=headers)
            self.assertEqual(r.status, 400, body[:20])
            self.assertIn(reason, r.json()["error"])
        self.assertEqual(self.server.post("/mlp", json.dumps([0.1] * 64).encode()).status, 200)

    def test_bad_model_files_fail_create_backend(self):
        missing = "/nonexistent/model.pt"
        proc = self.server.cli("create-backend", "m", PLUGIN, "--config", "model=" + missing,
                               check=False)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("init failed: %s: cannot load TorchScript model:" % missing, proc.stderr)
        self.assertEqual(proc.stderr.count("\n"), 1)
        with tempfile.NamedTemporaryFile(suffix=".pt", delete=False) as f:
            f.write(b"this is not a TorchScript archive")
        try:
            proc = self.server.cli("create-backend", "m", PLUGIN, "--config", "model=" + f.name,
                                   check=False)
            self.assertNotEqual(proc.returncode, 0)
            self.assertIn("cannot load TorchScript model:", proc.stderr)
        finally:
            os.unlink(f.name)
        proc = self.server.cli("create-backend", "m", PLUGIN, check=False)
        self.assertIn("config model=PATH (a TorchScript file) is required", proc.stderr)
        proc = self.server.cli("create-backend", "m", PLUGIN, "--config", "model=" + MODEL,
                               "--config", "input_shape=63", check=False)
        self.assertIn("warm-up forward with input_shape [63] failed", proc.stderr)


CUDA_PLUGIN = os.path.join(PLUGIN_DIR, "cuda.so")


@unittest.skipUnless(os.path.exists(CUDA_PLUGIN), "cuda plugin not built (no nvcc)")
@unittest.skipIf(os.path.exists("/dev/nvidia0"), "a GPU is present: tests/gpu/run.sh covers it")
class CudaWithoutGpu(ServeTestCase):
    def test_init_says_why(self):
        proc = self.server.cli("create-backend", "g", CUDA_PLUGIN, check=False)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("init failed: no CUDA device", proc.stderr)
        self.assertEqual(proc.stderr.count("\n"), 1)


if __name__ == "__main__":
    unittest.main()
