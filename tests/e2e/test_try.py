"""serve try: one plugin, one batch, no server, and a verdict.

Each answer is printed (status, headers, body); the exit code is 0 only
when every request got its one answer, and a problem is named in one line
on stderr: a request left unanswered, answered twice, a failed batch, a
crash. Nothing is left running and no state dir is touched."""
import os
import subprocess
import tempfile
import unittest

from serve_harness import SERVE_BIN, test_plugin

SERVE = os.path.abspath(SERVE_BIN)
# A deliberate crash must die of its signal, not be reported by a sanitizer.
ENV = dict(os.environ, ASAN_OPTIONS=":".join(filter(None, [
    os.environ.get("ASAN_OPTIONS", ""), "handle_segv=0:handle_abort=0:detect_leaks=0"])),
    TSAN_OPTIONS=":".join(filter(None, [os.environ.get("TSAN_OPTIONS", ""),
                                         "handle_segv=0:handle_abort=0"])))


def try_(*args):
    with tempfile.TemporaryDirectory() as home:
        env = dict(ENV, SERVE_STATE_DIR=os.path.join(home, "never-made"))
        proc = subprocess.run([SERVE, "try", *args], capture_output=True, text=True, env=env,
                              timeout=120)
        assert not os.path.exists(os.path.join(home, "never-made")), "a state dir was made"
        return proc


def verdicts(proc):
    return [l for l in proc.stderr.splitlines() if l.startswith("serve: try: ")]


class Try(unittest.TestCase):
    def test_echo(self):
        p = try_("echo", "--data", "hello", "--data", "world", "--content-type", "text/plain")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, "--- request 1: 200\nContent-Type: text/plain\n\nhello\n"
                                   "--- request 2: 200\nContent-Type: text/plain\n\nworld\n")
        self.assertEqual(verdicts(p), [])

    def test_counter_sees_one_batch_and_its_config(self):
        p = try_("counter", "--config", "start=10", "--data", "a", "--data", "b", "--data", "c")
        self.assertEqual(p.returncode, 0, p.stderr)
        bodies = [b for b in p.stdout.split("\n\n")[1:]]
        self.assertEqual([b.split("\n")[0] for b in bodies], ["11", "12", "13"])

    def test_a_file_body_and_a_config_refusal(self):
        with tempfile.NamedTemporaryFile("wb", suffix=".bin") as f:
            f.write(b"\x00\x01bytes")
            f.flush()
            p = try_("echo", "--data", "@" + f.name)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("\x00\x01bytes", p.stdout)
        p = try_("counter", "--config", "step=two", "--data", "x")
        self.assertEqual(p.returncode, 1)
        self.assertIn("init failed: config step=two: not an integer", p.stderr)

    def test_a_plugin_that_answers_twice(self):
        p = try_(test_plugin("faulty"), "--data", "ok", "--data", "twice")
        self.assertEqual(p.returncode, 1)
        self.assertIn("--- request 2: 200", p.stdout)
        self.assertEqual(verdicts(p), ["serve: try: the plugin answered a request twice "
                                       "(request 2)"])

    def test_a_plugin_that_forgets_a_request(self):
        p = try_(test_plugin("faulty"), "--data", "skip", "--data", "ok")
        self.assertEqual(p.returncode, 1)
        self.assertIn("--- request 1: 500", p.stdout)
        self.assertIn("plugin returned without answering", p.stdout)
        self.assertEqual(verdicts(p), ["serve: try: the plugin left a request unanswered "
                                       "(request 1)"])

    def test_a_plugin_that_fails_its_batch(self):
        p = try_(test_plugin("faulty"), "--data", "crashbatch")
        self.assertEqual(p.returncode, 1)
        self.assertEqual(verdicts(p), ["serve: try: the plugin failed a batch: handle_batch "
                                       "returned -1 for a batch of 1"])

    def test_a_plugin_that_crashes(self):
        p = try_(test_plugin("faulty"), "--data", "ok", "--data", "segv")
        self.assertEqual(p.returncode, 1)
        self.assertIn("--- request 2: 502", p.stdout)
        self.assertIn("died (SIGSEGV)", p.stdout)
        self.assertEqual(verdicts(p), ["serve: try: the plugin crashed: its replica died "
                                       "(SIGSEGV)"])
        self.assertIn("backtrace of the crashing thread", p.stderr)

    def test_a_plugin_that_does_not_answer_in_time(self):
        p = try_(test_plugin("faulty"), "--data", "never", "--timeout", "1")
        self.assertEqual(p.returncode, 1)
        self.assertIn("did not answer every request within 1 s", p.stderr)

    def test_usage(self):
        p = try_("echo")
        self.assertEqual(p.returncode, 1)
        self.assertIn("usage: serve try PLUGIN", p.stderr)


if __name__ == "__main__":
    unittest.main()
