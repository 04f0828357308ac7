"""Weighted splits, shard keys and shadow copies."""
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

from serve_harness import ServeTestCase, test_plugin


class Traffic(ServeTestCase):
    def two_versions(self):
        # Answers tell the versions apart: v1 counts from 1e6, v2 from 2e6.
        self.server.cli("create-backend", "v1", "counter", "--config", "start=1000000")
        self.server.cli("create-backend", "v2", "counter", "--config", "start=2000000")
        self.server.cli("create-endpoint", "model", "--backend", "v1", "--route", "/model")

    @staticmethod
    def version(answer):
        return int(answer.body) // 1000000

    def test_split_lands_within_three_percent(self):
        self.two_versions()
        self.server.cli("set-traffic", "model", "v1=0.7", "v2=0.3")
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda _: self.server.post("/model"), range(2000)))
        self.assertTrue(all(a.status == 200 for a in answers))
        share = sum(self.version(a) == 2 for a in answers) / 2000
        self.assertAlmostEqual(share, 0.3, delta=0.03)
        listed = {e["name"]: e for e in self.server.status()["endpoints"]}
        self.assertEqual(listed["model"]["traffic"], {"v1": 0.7, "v2": 0.3})

    def test_shard_keys_are_stable(self):
        self.two_versions()
        self.server.cli("set-traffic", "model", "v1=0.5", "v2=0.5")
        seen = {}
        for key in range(60):
            versions = {self.version(self.server.post("/model", headers={"X-Serve-Shard-Key": "user-%d" % key}))
                        for _ in range(4)}
            self.assertEqual(len(versions), 1, "key user-%d moved between backends" % key)
            seen[key] = versions.pop()
        self.assertEqual(set(seen.values()), {1, 2})

    def test_handle_calls_take_a_shard_key(self):
        self.two_versions()
        self.server.cli("set-traffic", "model", "v1=0.5", "v2=0.5")
        self.server.deploy("relay", test_plugin("relay"), "/relay")
        spread = set()
        for key in range(30):
            versions = {self.version(self.server.post("/relay?to=model&key=k%d" % key))
                        for _ in range(3)}
            self.assertEqual(len(versions), 1)
            spread |= versions
        self.assertEqual(spread, {1, 2})

    def test_shadow_fractions(self):
        self.server.deploy("primary", "counter", "/p")
        for name, fraction in (("s100", "1.0"), ("s50", "0.5"), ("s10", "0.1")):
            self.server.cli("create-backend", name, "sim", "--max-batch-size", "32",
                            "--max-queued-requests", "10000")
            self.server.cli("shadow-traffic", "primary", name, fraction)
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda _: self.server.post("/p"), range(1000)))
        self.assertEqual(sorted(int(a.body) for a in answers), list(range(1, 1001)))
        counts = {}
        for _ in range(100):  # shadows finish on their own time
            counts = {n: self.server.backend_status(n)["requests"] for n in ("s100", "s50", "s10")}
            if counts["s100"] == 1000:
                break
            time.sleep(0.05)
        self.assertEqual(counts["s100"], 1000)
        self.assertGreater(counts["s100"], counts["s50"])
        self.assertGreater(counts["s50"], counts["s10"])
        self.assertAlmostEqual(counts["s50"] / 1000, 0.5, delta=0.08)
        self.assertAlmostEqual(counts["s10"] / 1000, 0.1, delta=0.05)
        # 0 stops a shadow.
        self.server.cli("shadow-traffic", "primary", "s100", "0")
        before = self.server.backend_status("s100")["requests"]
        for _ in range(50):
            self.server.post("/p")
        time.sleep(0.2)
        self.assertEqual(self.server.backend_status("s100")["requests"], before)

    def test_primary_does_not_wait_for_its_shadow(self):
        self.server.deploy("fast", "echo", "/fast")
        self.server.cli("create-backend", "slow", "sim", "--config", "base_us=500000")
        self.server.cli("shadow-traffic", "fast", "slow", "1")
        t0 = time.monotonic()
        for _ in range(3):
            self.assertEqual(self.server.post("/fast", b"x").body, b"x")
        self.assertLess(time.monotonic() - t0, 0.5)

    def test_bad_traffic_commands_are_refused(self):
        self.two_versions()
        cases = [
            (["set-traffic", "model", "v1=0.7", "v2=0.2"], "weights must sum to 1, these sum to 0.9"),
            (["set-traffic", "model", "v1=0.5", "nope=0.5"], "backend nope does not exist"),
            (["set-traffic", "nope", "v1=1"], "endpoint nope does not exist"),
            (["set-traffic", "model", "v1"], "expected BACKEND=WEIGHT"),
            (["shadow-traffic", "model", "v2", "-0.1"], "expected a number from 0 to 1"),
            (["shadow-traffic", "model", "v2", "1.5"], "expected a number from 0 to 1"),
            (["shadow-traffic", "model", "nope", "0.5"], "shadow backend nope does not exist"),
        ]
        for args, message in cases:
            proc = self.server.cli(*args, check=False)
            self.assertNotEqual(proc.returncode, 0, args)
            self.assertIn(message, proc.stderr, args)
        endpoint = self.server.status()["endpoints"][0]
        self.assertEqual((endpoint["traffic"], endpoint["shadow"]), ({"v1": 1.0}, {}))
        # A backend in a split cannot be deleted.
        self.server.cli("set-traffic", "model", "v1=0.5", "v2=0.5")
        proc = self.server.cli("delete-backend", "v2", check=False)
        self.assertIn("used by endpoint model", proc.stderr)


if __name__ == "__main__":
    unittest.main()
