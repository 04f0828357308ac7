"""Writes the Open Inference Protocol request bodies the README sends to the
sample MLP: two rows of 64 numbers (row r, column c: (c - 32) / 64 + r / 10).
  oip_request.json   JSON tensors
  oip_request.bin    the same as binary tensor data: the JSON header (its
                     length goes in Inference-Header-Content-Length, printed
                     here), then the 2 x 64 float32 values, little-endian
  bench_32rows.bin   32 rows in one binary request, for `serve bench`
Run: python3 samples/torch/make_requests.py (from anywhere)."""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def rows(n):
    return [[(c - 32) / 64 + r / 10 for c in range(64)] for r in range(n)]


def binary(n, name):
    header = json.dumps({"inputs": [{"name": "input", "shape": [n, 64], "datatype": "FP32",
                                     "parameters": {"binary_data_size": n * 64 * 4}}],
                         "parameters": {"binary_data_output": True}},
                        separators=(",", ":")).encode()
    data = b"".join(struct.pack("<64f", *row) for row in rows(n))
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(header + data)
    print("%s: Inference-Header-Content-Length: %d" % (name, len(header)))


with open(os.path.join(HERE, "oip_request.json"), "w") as f:
    json.dump({"id": "readme-1",
               "inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": rows(2)}]},
              f)
    f.write("\n")
binary(2, "oip_request.bin")
binary(32, "bench_32rows.bin")
