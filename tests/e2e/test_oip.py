"""The Open Inference Protocol (KServe v2 / Triton HTTP) and the SDK's
tensors: the protocol documents' own examples, every datatype both ways,
the binary extension, msgpack and bare rows, and each malformed body."""
import json
import os
import struct
import unittest

import msgpack_lite as mp
from serve_harness import ServeTestCase, test_plugin

HERE = os.path.dirname(__file__)


def example(name):
    # The documents' examples, byte for byte (tests/e2e/oip/README.md says
    # where each comes from).
    with open(os.path.join(HERE, "oip", name), "rb") as f:
        return f.read()


# datatype: (struct code, values) -- the edges of each type's range.
DATATYPES = {
    "BOOL": ("?", [True, False, True, True]),
    "UINT8": ("B", [0, 1, 254, 255]),
    "UINT16": ("H", [0, 1, 65534, 65535]),
    "UINT32": ("I", [0, 7, 4000000000, 4294967295]),
    "UINT64": ("Q", [0, 1, 2**63, 2**64 - 1]),
    "INT8": ("b", [-128, -1, 0, 127]),
    "INT16": ("h", [-32768, -1, 1, 32767]),
    "INT32": ("i", [-2**31, -1, 1, 2**31 - 1]),
    "INT64": ("q", [-2**63, -1, 1, 2**63 - 1]),
    "FP32": ("f", [1.5, -0.25, 3.4028234663852886e38, 1.1754943508222875e-38]),
    "FP64": ("d", [0.1, -2.5, 1.7976931348623157e308, 5e-324]),
}


def pack(datatype, values):
    code = DATATYPES[datatype][0]
    return struct.pack("<%d%s" % (len(values), code), *values)


def bytes_elements(items):
    return b"".join(struct.pack("<I", len(x)) + x for x in items)


def binary_request(header, *blobs, path, server, headers=None):
    h = json.dumps(header).encode()
    hs = {"Inference-Header-Content-Length": str(len(h)),
          "Content-Type": "application/octet-stream"}
    hs.update(headers or {})
    return server.post(path, h + b"".join(blobs), headers=hs)


def split_binary(r):
    n = int(r.headers["inference-header-content-length"])
    return json.loads(r.body[:n]), r.body[n:]


class OIP(ServeTestCase):
    isolation = "process"

    def setUp(self):
        super().setUp()
        iso = ("--isolation", self.isolation)
        self.server.deploy("mymodel", test_plugin("oip_example"), "/mymodel", *iso)
        self.server.deploy("echo_t", test_plugin("tensor_echo"), "/echo_t", *iso)

    def infer(self, model, doc, **kw):
        return self.server.post("/v2/models/%s/infer" % model, json.dumps(doc).encode(), **kw)

    def assert_400(self, r, *words):
        self.assertEqual(r.status, 400, r)
        message = r.json()["error"]
        for w in words:
            self.assertIn(w, message)
        return message

    # -- the documents' examples -------------------------------------------
    def test_kserve_example_request_as_written(self):
        # The document's request gives input1 shape [3] with one element:
        # a strict server says so, naming the input and both counts.
        r = self.server.post("/v2/models/mymodel/infer", example("kserve_request.json"),
                             headers={"Content-Type": "application/json"})
        self.assert_400(r, "input1", "shape [3] holds 3 elements, data has 1")

    def test_kserve_example_answer_field_by_field(self):
        request = example("kserve_request.json").replace(
            b'"data" : [ true ]', b'"data" : [ true, true, true ]')
        r = self.server.post("/v2/models/mymodel/infer", request,
                             headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers["content-type"], "application/json")
        got = r.json()
        # The document's response lacks the comma after "id" : "42".
        want = json.loads(example("kserve_response.json").replace(b'"42"\n', b'"42",\n'))
        self.assertEqual(got["id"], want["id"])
        self.assertEqual(got["model_name"], "mymodel")
        self.assertEqual(len(got["outputs"]), len(want["outputs"]))  # only output0 was asked
        for g, w in zip(got["outputs"], want["outputs"]):
            for field in ("name", "shape", "datatype"):
                self.assertEqual(g[field], w[field], field)
            for a, b in zip(g["data"], w["data"]):
                self.assertAlmostEqual(a, b, places=6)
            self.assertEqual(len(g["data"]), len(w["data"]))

    def test_triton_binary_example_field_by_field(self):
        header = example("triton_binary_request_header.json")
        body = header + struct.pack("<4I", 1, 2, 3, 4) + bytes([1, 0, 1])
        r = self.server.post("/v2/models/mymodel/infer", body,
                             headers={"Content-Type": "application/octet-stream",
                                      "Inference-Header-Content-Length": str(len(header))})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers["content-type"], "application/octet-stream")
        got, data = split_binary(r)
        want = json.loads(example("triton_binary_response_header.json"))
        self.assertEqual(len(got["outputs"]), len(want["outputs"]))
        for g, w in zip(got["outputs"], want["outputs"]):
            for field in ("name", "shape", "datatype", "parameters"):
                self.assertEqual(g[field], w[field], field)
            self.assertNotIn("data", g)
        self.assertEqual(len(data), 24)
        values = struct.unpack("<6f", data)
        for a, b in zip(values, [1.0, 1.1, 2.0, 2.1, 3.0, 3.1]):
            self.assertAlmostEqual(a, b, places=6)

    # -- metadata and health -----------------------------------------------
    def test_server_metadata_and_health(self):
        meta = self.server.get("/v2").json()
        self.assertEqual(meta["name"], "serve")
        self.assertIn("binary_tensor_data", meta["extensions"])
        for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/mymodel/ready",
                     "/v2/models/mymodel/versions/3/ready"):
            r = self.server.get(path)
            self.assertEqual((r.status, r.body), (200, b""), path)
        self.assertEqual(self.server.post("/v2/health/live").status, 405)

    def test_model_metadata_is_what_the_plugin_declared(self):
        meta = self.server.get("/v2/models/mymodel").json()
        self.assertEqual(meta["name"], "mymodel")
        self.assertEqual(meta["inputs"], [
            {"name": "input0", "datatype": "UINT32", "shape": [2, 2]},
            {"name": "input1", "datatype": "BOOL", "shape": [3]}])
        self.assertEqual(meta["outputs"], [
            {"name": "output0", "datatype": "FP32", "shape": [3, 2]},
            {"name": "output1", "datatype": "UINT32", "shape": [2, 2]}])
        self.assertEqual(self.server.get("/v2/models/mymodel/versions/7").json()["versions"], ["7"])
        # A plugin that declares nothing has empty lists.
        meta = self.server.get("/v2/models/echo_t").json()
        self.assertEqual((meta["inputs"], meta["outputs"]), ([], []))

    def test_unknown_models_and_paths(self):
        for path in ("/v2/models/nobody", "/v2/models/nobody/ready"):
            r = self.server.get(path)
            self.assertEqual(r.status, 404)
            self.assertIn("unknown model 'nobody'", r.json()["error"])
        r = self.server.post("/v2/models/nobody/infer", b"{}")
        self.assertEqual(r.status, 404)
        # A handle-only endpoint is not a model over HTTP.
        self.server.cli("create-endpoint", "inner", "--backend", "echo_t")
        self.assertEqual(self.server.get("/v2/models/inner").status, 404)
        self.assertEqual(self.server.get("/v2/models/mymodel/other").status, 404)
        r = self.server.get("/v2/models/mymodel/infer")
        self.assertEqual((r.status, r.headers["allow"]), (405, "POST"))

    def test_versions_are_accepted_and_echoed(self):
        r = self.infer("echo_t/versions/2", {"inputs": [
            {"name": "a", "shape": [1], "datatype": "INT32", "data": [5]}]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.json()["model_name"], r.json()["model_version"]), ("echo_t", "2"))

    # -- tensors both ways ---------------------------------------------------
    def test_every_datatype_round_trips_as_json(self):
        inputs = [{"name": dt.lower(), "datatype": dt, "shape": [2, 2], "data": values}
                  for dt, (_, values) in DATATYPES.items()]
        inputs.append({"name": "bytes", "datatype": "BYTES", "shape": [3],
                       "data": ["", "a\"b\\c", "\u00e9t\u00e9"]})
        r = self.infer("echo_t", {"inputs": inputs})
        self.assertEqual(r.status, 200, r)
        outputs = {o["name"]: o for o in r.json()["outputs"]}
        for i in inputs:
            o = outputs[i["name"]]
            self.assertEqual((o["datatype"], o["shape"]), (i["datatype"], i["shape"]))
            if i["datatype"] == "FP32":
                # The shortest text that reads back as the same float32.
                self.assertEqual(pack("FP32", o["data"]), pack("FP32", i["data"]))
                self.assertLessEqual(max(len(repr(v)) for v in o["data"]), 14)
            else:
                self.assertEqual(o["data"], i["data"], i["name"])

    def test_nested_and_flat_data_are_the_same(self):
        flat = self.infer("echo_t", {"inputs": [
            {"name": "m", "datatype": "INT16", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}]})
        nested = self.infer("echo_t", {"inputs": [
            {"name": "m", "datatype": "INT16", "shape": [2, 3], "data": [[1, 2, 3], [4, 5, 6]]}]})
        self.assertEqual(flat.json(), nested.json())

    def test_every_datatype_round_trips_as_binary(self):
        header, blobs = {"inputs": [], "parameters": {"binary_data_output": True}}, []
        for dt, (_, values) in DATATYPES.items():
            blob = pack(dt, values)
            header["inputs"].append({"name": dt.lower(), "datatype": dt, "shape": [4],
                                     "parameters": {"binary_data_size": len(blob)}})
            blobs.append(blob)
        fp16 = struct.pack("<4e", 1.0, -2.0, 0.5, 65504.0)
        byts = bytes_elements([b"", b"\x00\xff", b"abc", b"x" * 300])
        for name, dt, blob in (("fp16", "FP16", fp16), ("bytes", "BYTES", byts)):
            header["inputs"].append({"name": name, "datatype": dt, "shape": [4],
                                     "parameters": {"binary_data_size": len(blob)}})
            blobs.append(blob)
        r = binary_request(header, *blobs, path="/v2/models/echo_t/infer", server=self.server)
        self.assertEqual(r.status, 200, r)
        got, data = split_binary(r)
        self.assertEqual([o["name"] for o in got["outputs"]], [i["name"] for i in header["inputs"]])
        at = 0
        for o, i, blob in zip(got["outputs"], header["inputs"], blobs):
            size = o["parameters"]["binary_data_size"]
            self.assertEqual((o["datatype"], o["shape"], size), (i["datatype"], [4], len(blob)))
            self.assertEqual(data[at:at + size], blob, i["name"])
            at += size
        self.assertEqual(at, len(data))

    def test_binary_output_choices(self):
        # binary_data_output makes every output binary; an output's own
        # binary_data overrides it; a JSON request may ask for binary too.
        doc = {"parameters": {"binary_data_output": True},
               "inputs": [{"name": "a", "datatype": "INT32", "shape": [2], "data": [1, 2]},
                          {"name": "b", "datatype": "INT32", "shape": [1], "data": [3]}],
               "outputs": [{"name": "b", "parameters": {"binary_data": False}}, {"name": "a"}]}
        r = self.infer("echo_t", doc)
        self.assertEqual(r.status, 200, r)
        got, data = split_binary(r)
        self.assertEqual([o["name"] for o in got["outputs"]], ["b", "a"])  # as asked
        self.assertEqual(got["outputs"][0]["data"], [3])
        self.assertEqual(got["outputs"][1]["parameters"], {"binary_data_size": 8})
        self.assertEqual(data, struct.pack("<2i", 1, 2))

    def test_fp16_goes_binary_only(self):
        r = self.infer("echo_t", {"inputs": [
            {"name": "h", "datatype": "FP16", "shape": [1], "data": [1.0]}]})
        self.assert_400(r, "input 'h'", "FP16", "binary")

    def test_id_and_parameters_reach_the_plugin(self):
        r = self.infer("echo_t", {"id": "req-7", "parameters": {"tag": "blue", "n": 3},
                                  "inputs": [{"name": "a", "datatype": "UINT8", "shape": [1],
                                              "data": [9]}]})
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual(j["id"], "req-7")
        self.assertEqual({o["name"]: o["data"] for o in j["outputs"]}, {"a": [9], "tag": ["blue"]})

    def test_requested_outputs(self):
        doc = {"inputs": [{"name": "a", "datatype": "INT8", "shape": [1], "data": [1]},
                          {"name": "b", "datatype": "INT8", "shape": [1], "data": [2]}],
               "outputs": [{"name": "b"}]}
        self.assertEqual([o["name"] for o in self.infer("echo_t", doc).json()["outputs"]], ["b"])
        doc["outputs"] = [{"name": "zzz"}]
        self.assert_400(self.infer("echo_t", doc), "unknown output 'zzz'", "'a'", "'b'")

    def test_oip_json_on_the_endpoint_route_and_through_handles(self):
        doc = {"inputs": [{"name": "a", "datatype": "INT64", "shape": [1], "data": [42]}]}
        r = self.server.post("/echo_t", json.dumps(doc).encode())
        self.assertEqual(r.json()["outputs"][0]["data"], [42])
        self.server.deploy("relay", test_plugin("relay"), "/relay")
        r = self.server.post("/relay?to=echo_t", json.dumps(doc).encode())
        self.assertEqual(r.json()["outputs"][0]["data"], [42])

    def test_msgpack_documents_and_rows(self):
        blob = struct.pack("<3f", 1.0, 2.5, -3.0)
        doc = {"id": "m1", "parameters": {"tag": "t"}, "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [3], "data": blob}]}
        r = self.server.post("/echo_t", mp.packb(doc), headers={"Content-Type": "application/msgpack"})
        self.assertEqual((r.status, r.headers["content-type"]), (200, "application/msgpack"), r)
        got = mp.unpackb(r.body)
        self.assertEqual(got["id"], "m1")
        self.assertEqual(got["outputs"][0], {"name": "a", "datatype": "FP32", "shape": [3], "data": blob})
        self.assertEqual(got["outputs"][1]["data"], struct.pack("<I", 1) + b"t")
        # A bare msgpack row and a bare JSON row come back in their form.
        r = self.server.post("/echo_t", mp.packb([1.0, 2.0, 0.5]),
                             headers={"Content-Type": "application/msgpack"})
        self.assertEqual(mp.unpackb(r.body), [1.0, 2.0, 0.5])
        r = self.server.post("/echo_t", b"[[1, 2], [3, 4.5]]")
        self.assertEqual(r.json(), [[1, 2], [3, 4.5]])

    # -- malformed bodies ------------------------------------------------------
    def test_malformed_bodies_get_400_saying_what_is_wrong(self):
        a = {"name": "a", "datatype": "INT32", "shape": [2]}
        cases = [
            (b"{\"inputs\": [", ["malformed JSON"]),
            (b"[1, 2] [3]", ["malformed JSON"]),
            (b'{"inputs": [{"name": "f", "datatype": "FP32", "shape": [1], "data": [NaN]}]}',
             ["malformed JSON"]),
            (b'{"inputs": [{"name": "f", "datatype": "FP32", "shape": [1], "data": [1e39]}]}',
             ["input 'f'", "element 0 (1e+39) is not within float32 range"]),
            (b'{"inputs": [{"name": "d", "datatype": "FP64", "shape": [1], "data": [1e999]}]}',
             ["malformed JSON"]),
            (b"\"text\"", ["must be a JSON object"]),
            (b"{}", ["\"inputs\"", "required"]),
            (json.dumps({"inputs": [dict(a, data=[1, 2, 3])]}).encode(),
             ["input 'a'", "shape [2] holds 2 elements, data has 3"]),
            (json.dumps({"inputs": [dict(a, datatype="FP8", data=[1, 2])]}).encode(),
             ["input 'a'", "unknown datatype \"FP8\""]),
            (json.dumps({"inputs": [dict(a, datatype="UINT8", data=[1, 256])]}).encode(),
             ["input 'a'", "element 1 (256)", "UINT8"]),
            (json.dumps({"inputs": [dict(a, data=[1, "x"])]}).encode(), ["element 1"]),
            (json.dumps({"inputs": [dict(a, shape=[-1], data=[1])]}).encode(), ["shape entry 0"]),
            (json.dumps({"inputs": [{"name": "a", "datatype": "INT32", "shape": [1]}]}).encode(),
             ["neither \"data\" nor"]),
            (json.dumps({"inputs": [dict(a, data=[1, 2]), dict(a, data=[1, 2])]}).encode(),
             ["given twice"]),
            (json.dumps({"inputs": [dict(a, parameters={"binary_data_size": 8})]}).encode(),
             ["binary_data_size without binary data"]),
            (json.dumps({"id": 5, "inputs": []}).encode(), ["\"id\" must be a string"]),
        ]
        for body, words in cases:
            r = self.server.post("/v2/models/echo_t/infer", body)
            self.assert_400(r, *words)

    def test_malformed_binary_bodies(self):
        a = {"name": "a", "datatype": "INT32", "shape": [2], "parameters": {"binary_data_size": 8}}
        h = json.dumps({"inputs": [a]}).encode()
        path = "/v2/models/echo_t/infer"
        # The header's length runs past the body.
        r = self.server.post(path, h, headers={"Inference-Header-Content-Length": str(len(h) + 1)})
        self.assert_400(r, "Inference-Header-Content-Length", "not a length within")
        r = self.server.post(path, h, headers={"Inference-Header-Content-Length": "-3"})
        self.assert_400(r, "Inference-Header-Content-Length")
        # The data is shorter than binary_data_size, or longer.
        r = self.server.post(path, h + b"1234", headers={"Inference-Header-Content-Length": str(len(h))})
        self.assert_400(r, "input 'a'", "binary_data_size 8 runs past the body", "4 bytes")
        r = self.server.post(path, h + b"x" * 10, headers={"Inference-Header-Content-Length": str(len(h))})
        self.assert_400(r, "2 bytes of binary data after")
        # binary_data_size that disagrees with the shape.
        b = dict(a, parameters={"binary_data_size": 4})
        r = binary_request({"inputs": [b]}, b"1234", path=path, server=self.server)
        self.assert_400(r, "input 'a'", "shape [2] of INT32 takes 8 bytes, data has 4")
        # BYTES lengths that run past the data; a BOOL that is not 0 or 1.
        c = {"name": "s", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}
        r = binary_request({"inputs": [c]}, struct.pack("<I", 9) + b"ab", path=path, server=self.server)
        self.assert_400(r, "input 's'", "runs past the end")
        d = {"name": "t", "datatype": "BOOL", "shape": [2], "parameters": {"binary_data_size": 2}}
        r = binary_request({"inputs": [d]}, b"\x01\x02", path=path, server=self.server)
        self.assert_400(r, "input 't'", "BOOL element 1 is 2")

    def test_what_a_new_user_tripped_on(self):
        # An endpoint that takes no POST takes no inference through /v2.
        self.server.cli("create-endpoint", "getonly", "--backend", "echo_t", "--route", "/getonly",
                        "--methods", "GET")
        r = self.infer("getonly", {"inputs": []})
        self.assertEqual(r.status, 405)
        self.assertIn("does not take POST", r.json()["error"])
        # Nested data must nest as the shape does, not only add up.
        row = [0.5] * 4
        r = self.infer("echo_t", {"inputs": [{"name": "a", "datatype": "FP32", "shape": [2, 4],
                                              "data": [row, row[:3] + [[0.5]]]}]})
        self.assert_400(r, "input 'a'", "does not nest as shape [2, 4]")
        r = self.infer("echo_t", {"inputs": [{"name": "a", "datatype": "FP32", "shape": [2, 4],
                                              "data": [[0.5, 0.5]] * 4}]})
        self.assert_400(r, "does not nest as shape [2, 4]")
        # Both data and binary_data_size; an output asked for twice.
        r = self.infer("echo_t", {"inputs": [{"name": "a", "datatype": "INT8", "shape": [1],
                                              "data": [1], "parameters": {"binary_data_size": 1}}]})
        self.assert_400(r, "both \"data\" and parameters.binary_data_size")
        r = self.infer("echo_t", {"inputs": [{"name": "a", "datatype": "INT8", "shape": [1], "data": [1]}],
                                  "outputs": [{"name": "a"}, {"name": "a"}]})
        self.assert_400(r, "output 'a' is asked for twice")
        # Integers written as floats (what many clients do) are integers.
        r = self.infer("echo_t", {"inputs": [{"name": "a", "datatype": "INT16", "shape": [2],
                                              "data": [1000.0, -3.0]}]})
        self.assertEqual(r.json()["outputs"][0]["data"], [1000, -3])
        self.assert_400(self.infer("echo_t", {"inputs": [{"name": "a", "datatype": "INT16",
                                                          "shape": [1], "data": [1.5]}]}),
                        "element 0 (1.5) is not an integer")
        # BYTES that are not UTF-8 cannot be a JSON string: that output goes binary.
        blob = bytes_elements([b"\xff\xfe", b"ok"])
        r = binary_request({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2],
                                        "parameters": {"binary_data_size": len(blob)}}]}, blob,
                           path="/v2/models/echo_t/infer", server=self.server)
        self.assertEqual((r.status, r.headers["content-type"]), (200, "application/octet-stream"), r)
        got, data = split_binary(r)
        self.assertEqual(got["outputs"][0]["parameters"], {"binary_data_size": len(blob)})
        self.assertEqual(data, blob)

    def test_what_a_code_review_found(self):
        # A msgpack map naming one output 20 times overflowed the list of
        # outputs to send (the replica, or in thread mode the server, died).
        doc = {"inputs": [{"name": "a", "datatype": "INT8", "shape": [1], "data": b"\x01"}],
               "outputs": ["a"] * 20}
        r = self.server.post("/echo_t", mp.packb(doc), headers={"Content-Type": "application/msgpack"})
        self.assert_400(r, "output 'a' is asked for twice")
        self.assertEqual(self.server.post("/echo_t", b"[1]").status, 200)
        # A version is a plain name: nothing of it is written into JSON raw.
        r = self.server.get("/v2/models/echo_t/versions/a%22%7D%2C%22x%22%3A1")
        self.assertEqual(r.status, 404)
        self.assertIn("malformed model version", r.json()["error"])
        self.assertEqual(self.server.get("/v2/models/echo_t/versions/1.2-b_3").status, 200)

    def test_declared_inputs_are_decoded_by_the_runtime(self):
        # A replica that declares inputs never sees a bad body: the runtime
        # answers it 400, and its batch-mates are served.
        self.server.deploy("strict", test_plugin("tensor_echo"), "/strict", "--config", "declare=1",
                           "--isolation", self.isolation, "--max-batch-size", "8",
                           "--batch-wait-timeout-ms", "50")
        good = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                       "data": [1, 2, 3, 4]}]}).encode()
        answers = self.server.concurrent([good, b"{bad", good, b"[1, [2]]"], "/strict")
        self.assertEqual([a.status for a in answers], [200, 400, 200, 400])
        self.assertIn("malformed JSON", answers[1].json()["error"])
        self.assertIn("rectangular", answers[3].json()["error"])
        # The runtime answered them: the plugin marks its own refusals.
        for a in (answers[1], answers[3]):
            self.assertFalse(a.json()["error"].startswith("tensor_echo:"), a)
        plain = self.server.post("/echo_t", b"{bad")
        self.assertTrue(plain.json()["error"].startswith("tensor_echo: malformed JSON"), plain)
        meta = self.server.get("/v2/models/strict").json()
        self.assertEqual(meta["inputs"], [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}])
        self.server.stop()


class OIPThreads(OIP):
    isolation = "thread"


del ServeTestCase  # not a test of its own

if __name__ == "__main__":
    unittest.main()
