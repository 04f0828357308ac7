"""SIGKILL at random moments during a stream of control commands: after a
restart the state holds every acknowledged command. The one command in
flight at the kill may or may not have been applied (it was persisted
before its acknowledgement could be sent, or not at all); nothing else may
differ."""
import random
import subprocess
import threading
import time
import unittest

from serve_harness import SERVE_BIN, Server


def commands(k):
    """The k-th step of the stream and the state items it adds or removes."""
    n, step = divmod(k, 4)
    if step == 0:
        return ["create-backend", "b%d" % n, "echo"], ("+", "backend b%d" % n)
    if step == 1:
        return (["create-endpoint", "e%d" % n, "--backend", "b%d" % n, "--route", "/r%d" % n],
                ("+", "endpoint e%d" % n))
    if step == 2:
        return ["update-backend", "b%d" % n, "--config", "v=%d" % n], ("=", "backend b%d" % n)
    return ["delete-endpoint", "e%d" % n], ("-", "endpoint e%d" % n)


def state_items(server):
    s = server.status()
    return ({"backend " + b["spec"]["name"] for b in s["backends"]} |
            {"endpoint " + e["name"] for e in s["endpoints"]})


class CrashDuringControl(unittest.TestCase):
    def test_sigkill_keeps_exactly_the_acknowledged_commands(self):
        rng = random.Random(7)
        for round_ in range(20):
            server = Server()
            acked, in_flight, stop = [], [None], threading.Event()

            def stream():
                k = 0
                while not stop.is_set():
                    args, effect = commands(k)
                    in_flight[0] = effect
                    proc = subprocess.run([SERVE_BIN, "--state-dir", server.state_dir, *args],
                                          capture_output=True)
                    if proc.returncode != 0:
                        return  # the server is gone
                    acked.append(effect)
                    in_flight[0] = None
                    k += 1

            t = threading.Thread(target=stream)
            t.start()
            # The kill falls anywhere in the stream once it has begun: the
            # first command (a replica process to start, a plugin file to
            # copy) may take longer than the shortest wait on a loaded
            # machine.
            deadline = time.monotonic() + 60
            while not acked and t.is_alive() and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.35))
            server.kill()
            stop.set()
            t.join()
            server.start()
            expected = set()
            for op, item in acked:
                if op == "+":
                    expected.add(item)
                elif op == "-":
                    expected.discard(item)
            got = state_items(server)
            allowed = {frozenset(expected)}
            if in_flight[0] and in_flight[0][0] != "=":
                op, item = in_flight[0]
                allowed.add(frozenset(expected | {item}) if op == "+" else
                            frozenset(expected - {item}))
            self.assertIn(frozenset(got), allowed,
                          "round %d: %d acknowledged commands" % (round_, len(acked)))
            self.assertGreater(len(acked), 0)
            for item in got:  # everything restored also serves
                if item.startswith("endpoint "):
                    n = item[len("endpoint e"):]
                    self.assertEqual(server.post("/r%s" % n, b"up").body, b"up")
            server.close()


if __name__ == "__main__":
    unittest.main()
