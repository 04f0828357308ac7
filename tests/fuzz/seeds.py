#!/usr/bin/env python3
"""Writes the fuzzers' seed corpus (tests/fuzz/corpus/TARGET/): good and bad
inputs of each kind, from the HTTP corpus, the sample deploy files and a few
control frames and rows written here. Run it again after changing a format;
the files it writes are committed."""
import glob
import hashlib
import os
import re
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def pack(o):
    """The msgpack subset serve's control frames use (no library needed)."""
    if o is None:
        return b"\xc0"
    if o is True or o is False:
        return b"\xc3" if o else b"\xc2"
    if isinstance(o, int):
        if 0 <= o < 128:
            return bytes([o])
        return b"\xd3" + struct.pack(">q", o)
    if isinstance(o, float):
        return b"\xcb" + struct.pack(">d", o)
    if isinstance(o, str):
        b = o.encode()
        return (bytes([0xa0 | len(b)]) if len(b) < 32 else b"\xd9" + bytes([len(b)])) + b
    if isinstance(o, bytes):
        return b"\xc4" + bytes([len(o)]) + o
    if isinstance(o, list):
        return bytes([0x90 | len(o)]) + b"".join(pack(x) for x in o)
    if isinstance(o, dict):
        return bytes([0x80 | len(o)]) + b"".join(pack(k) + pack(v) for k, v in o.items())
    raise TypeError(o)


def write(target, data):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def http_seeds():
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "http", "*.txt"))):
        text = open(path, encoding="utf-8").read()
        sent = text.split("\n---\n", 1)[1].replace("\n", "")
        raw = sent.encode("latin-1").decode("unicode_escape").encode("latin-1")
        write("fuzz_http", b"\x00" + raw)
    for request in (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
                    b"GET /echo?a=1&b=%20 HTTP/1.1\r\nHost: x\r\nX-Request-ID: r1\r\n\r\n",
                    b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5\r\nhello\r\n0\r\n\r\n",
                    b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /-/healthz HTTP/1.0\r\n\r\n",
                    b"GET /-/routes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    # Streamed (chunked) answers, pipelined with others,
                    # for HTTP/1.0 and HEAD (whole answers), cut short.
                    b"GET /stream?n=3 HTTP/1.1\r\nHost: x\r\n\r\nGET /echo HTTP/1.1\r\n"
                    b"Host: x\r\n\r\nGET /stream?n=2 HTTP/1.0\r\n\r\n",
                    b"HEAD /stream?n=4 HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"GET /stream?n=1000 HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"POST /stream?n=5 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                    b"GET /stream?stats=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"):
        write("fuzz_http", b"\x00" + request)
        write("fuzz_http", b"\x11" + request)


def control_seeds():
    backend = {"name": "b", "plugin": "/usr/lib/serve/plugins/echo.so", "num_replicas": 2,
               "max_batch_size": 8, "max_concurrent_queries": 16, "max_queued_requests": 100,
               "batch_wait_timeout_ms": 1.5, "request_timeout_ms": 0.0,
               "config": {"start": "100", "step": "2"}}
    endpoint = {"name": "e", "route": "/e", "methods": "GET,POST", "traffic": {"b": 0.75, "c": 0.25},
                "shadow": {"d": 0.5}}
    deployment = {"backends": [backend, dict(backend, name="c"), dict(backend, name="d")],
                  "endpoints": [endpoint, {"name": "h", "backend": "b"}]}
    frames = [
        {"cmd": "create-backend", "backend": backend},
        {"cmd": "create-endpoint", "endpoint": {"name": "e", "route": "/e", "backend": "b"}},
        {"cmd": "update-backend", "name": "b", "changes": {"num_replicas": 4, "config": {"k": "v"}},
         "unset_config": ["step"]},
        {"cmd": "set-traffic", "endpoint": "e", "traffic": {"b": 0.5, "c": 0.5}},
        {"cmd": "shadow-traffic", "endpoint": "e", "backend": "d", "fraction": 0.1},
        {"cmd": "deploy", "deployment": deployment},
        {"cmd": "stop", "timeout_s": 5.0},
        {"cmd": "status", "json": True},
        {"cmd": "call", "endpoint": "e", "body": "x", "timeout": 1000},
    ]
    for f in frames:
        write("fuzz_control", pack(f))
    write("fuzz_control", pack([1, deployment]))  # a state file
    write("fuzz_control", pack([1, {"backends": [], "endpoints": []}]))


def deploy_seeds():
    for path in sorted(glob.glob(os.path.join(ROOT, "samples", "**", "*.yaml"), recursive=True)):
        write("fuzz_deploy", open(path, "rb").read())
    write("fuzz_deploy", b"backends:\n  - name: a\n    plugin: echo\n    config: {x: 1}\n"
                         b"endpoints:\n  - name: a\n    route: /a\n    methods: [GET]\n"
                         b"    traffic: {a: 1.0}\n    shadow: {a: 0.5}\n")
    write("fuzz_deploy", b"backends: [{name: a, plugin: echo, max_batch_size: 0}]\n")
    write("fuzz_deploy", b"&x [*x]\n")


def tensors_seeds():
    # Bare rows (JSON and msgpack).
    for text in (b"[1, 2, 3]", b"[[1.5, -2e3], [3, 4]]", b"[[[0.1]]]", b"[]", b"[[1], [2, 3]]",
                 b" [ 1e-38 , 3.4e38 ] "):
        write("fuzz_tensors", text)
    write("fuzz_tensors", pack([1.0, 2.5, -3.0]))
    write("fuzz_tensors", b"\x93\xca" + struct.pack(">f", 1.0) + b"\x01\xd0\xff")
    # OIP JSON documents: every datatype, nested data, outputs, parameters.
    doc = (b'{"id": "42", "parameters": {"binary_data_output": false, "tag": "x"}, "inputs": ['
           b'{"name": "a", "shape": [2, 2], "datatype": "UINT32", "data": [[1, 2], [3, 4]]},'
           b'{"name": "b", "shape": [3], "datatype": "BOOL", "data": [true, false, true]},'
           b'{"name": "c", "shape": [1], "datatype": "BYTES", "data": ["h\\u00e9"]},'
           b'{"name": "d", "shape": [2], "datatype": "FP64", "data": [0.1, -2]},'
           b'{"name": "e", "shape": [2], "datatype": "INT8", "data": [-128, 127]}],'
           b'"outputs": [{"name": "a", "parameters": {"binary_data": true}}]}')
    write("fuzz_tensors", doc)
    # With binary data: two bytes of JSON length, the JSON, the data.
    header = (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32",'
              b' "parameters": {"binary_data_size": 8}}, {"name": "s", "shape": [1],'
              b' "datatype": "BYTES", "parameters": {"binary_data_size": 7}},'
              b' {"name": "h", "shape": [1], "datatype": "FP16", "parameters": {"binary_data_size": 2}}]}')
    write("fuzz_tensors", struct.pack("<H", len(header)) + header + struct.pack("<2f", 1.5, -2)
          + struct.pack("<I", 3) + b"abc" + struct.pack("<e", 0.5))
    # A msgpack document.
    write("fuzz_tensors", pack({"id": "m", "inputs": [{"name": "x", "datatype": "INT16",
                                                          "shape": [2], "data": b"\x01\x00\xff\xff"}],
                               "outputs": ["x"]}))


def remote_seeds():
    # A mode byte (bit 0: the client asks HEAD; bit 1: the answer comes in
    # two writes, cut at mode % length), then what the remote answers.
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: b\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\nuntil the close",
        b"HTTP/1.1 503 Service Unavailable\r\nX-Serve-Unprocessed: draining\r\n"
        b"Connection: close\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 799 Odd\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        b"NOT HTTP AT ALL\r\n\r\n",
    ]
    for i, a in enumerate(answers):
        write("fuzz_remote", bytes([0]) + a)
        write("fuzz_remote", bytes([2 + 4 * i]) + a)
    write("fuzz_remote", bytes([1]) + answers[0])


if __name__ == "__main__":
    http_seeds()
    control_seeds()
    deploy_seeds()
    tensors_seeds()
    remote_seeds()
