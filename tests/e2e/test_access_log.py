"""The access log, in both formats: one line per request, and the calls a
composed endpoint makes carry the outer request's id."""
import json
import os
import re
import time
import unittest

from serve_harness import Server

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


class AccessLog(unittest.TestCase):
    def run_composed(self, fmt):
        s = Server()
        s.stop()
        log = os.path.join(s.state_dir, "access.log")
        s.start_args = ("--access-log", log, "--access-log-format", fmt)
        s.start()
        try:
            s.cli("deploy", os.path.join(ROOT, "samples/composition/deploy.yaml"))
            answers = [s.post("/composed", b"x", headers={"X-Request-ID": "req-%s-%d" % (fmt, i)})
                       for i in range(6)]
            self.assertEqual(s.get("/nope", headers={"X-Request-ID": "missing-1"}).status, 404)
            time.sleep(0.5)  # written out at least every 200 ms
            with open(log) as f:
                lines = f.read().splitlines()
            return answers, lines
        finally:
            s.close()

    def test_json(self):
        answers, lines = self.run_composed("json")
        records = [json.loads(l) for l in lines]
        for i, a in enumerate(answers):
            rid = "req-json-%d" % i
            mine = [r for r in records if r["id"] == rid]
            outer = [r for r in mine if r["kind"] == "http"]
            inner = [r for r in mine if r["kind"] == "handle"]
            self.assertEqual(len(outer), 1)
            self.assertEqual(outer[0]["endpoint"], "composed")
            self.assertEqual(outer[0]["path"], "/composed")
            self.assertEqual(outer[0]["status"], 200)
            self.assertEqual(outer[0]["bytes"], len(a.body))
            used = a.json()["model_used"]
            self.assertEqual(sorted(r["endpoint"] for r in inner),
                             ["model_one"] if used == 1 else ["model_one", "model_two"])
            for r in mine:
                for key in ("time", "method", "backend", "total_us", "queue_us", "batch_size", "stages_us"):
                    self.assertIn(key, r)
                self.assertGreaterEqual(r["total_us"], 0)
        missing = [r for r in records if r["id"] == "missing-1"]
        self.assertEqual([r["status"] for r in missing], [404])

    def test_combined(self):
        answers, lines = self.run_composed("combined")
        pattern = re.compile(r'^(\S+) - - \[[^\]]+\] "(\S+) (\S*) (HTTP/1\.1|HANDLE)" (\d{3}) (\d+) '
                             r'"-" "-" id=(\S+)')
        parsed = [pattern.match(l) for l in lines]
        self.assertTrue(all(parsed), [l for l, p in zip(lines, parsed) if not p])
        for i in range(len(answers)):
            rid = "req-combined-%d" % i
            mine = [p for p in parsed if p.group(7) == rid]
            self.assertEqual(sum(p.group(4) == "HTTP/1.1" for p in mine), 1)
            self.assertGreaterEqual(sum(p.group(4) == "HANDLE" for p in mine), 1)
            self.assertTrue(all("endpoint=" in l for l in lines))


if __name__ == "__main__":
    unittest.main()
