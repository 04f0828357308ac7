"""Typed config getters and config paths.

Each getter's refusal reaches the CLI user in one line naming the key, with
no code of the plugin's own (tests/plugins/typed.c only returns -1); a path
value is relative to the deploy file's folder, or to the working directory
of the command that set it; the torch sample's deploy file works from any
directory."""
import json
import os
import subprocess
import tempfile
import unittest

from serve_harness import SERVE_BIN, Server, ServeTestCase, test_plugin

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SERVE = os.path.abspath(SERVE_BIN)


class Refusals(ServeTestCase):
    def refused(self, key, value, reason, isolation="process"):
        proc = self.server.cli("create-backend", "t", test_plugin("typed"), "--isolation",
                               isolation, "--config", "%s=%s" % (key, value), check=False)
        self.assertNotEqual(proc.returncode, 0)
        lines = proc.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, proc.stderr)
        self.assertIn("init failed: config %s=%s: %s" % (key, value, reason), lines[0])

    def test_int(self):
        self.refused("int", "abc", "not an integer")
        self.refused("int", "99999999999999999999", "out of range", "thread")

    def test_number(self):
        self.refused("number", "fast", "not a number")

    def test_bool(self):
        self.refused("bool", "maybe", "not a boolean")

    def test_size(self):
        self.refused("size", "12X", "not a size")

    def test_path(self):
        proc = self.server.cli("create-backend", "t", test_plugin("typed"), "--config",
                               "path=" + "x" * 2000, check=False)
        self.assertIn("init failed: config path=%s...: path too long" % ("x" * 61), proc.stderr)

    def test_a_refused_reconfigure_says_why(self):
        for isolation in ("process", "thread"):
            with self.subTest(isolation=isolation):
                name = "c_" + isolation
                self.server.deploy(name, "counter", "/" + name, "--isolation", isolation)
                proc = self.server.cli("update-backend", name, "--config", "step=two",
                                       check=False)
                self.assertEqual(proc.returncode, 1)
                self.assertIn("reconfigure failed on replica 0 of backend %s: config step=two: "
                              "not an integer" % name, proc.stderr)
                self.assertIn("backend=%s: new config refused" % name, self.server.log())
                self.assertEqual(self.server.post("/" + name, b"").body, b"1")

    def test_good_values_and_defaults(self):
        self.server.deploy("t", test_plugin("typed"), "/t", "--config", "int=-7",
                           "--config", "number=1e-3", "--config", "bool=Off",
                           "--config", "size=512M", "--config", "path=/abs/file")
        self.assertEqual(self.server.get("/t").json(),
                         {"int": -7, "number": 0.001, "bool": False, "size": 512 << 20,
                          "path": "/abs/file"})
        self.server.cli("update-backend", "t", "--unset-config", "int", "--unset-config", "path")
        got = self.server.get("/t").json()
        self.assertEqual((got["int"], got["path"]), (-1, "default.txt"))


class Paths(unittest.TestCase):
    def setUp(self):
        self.server = Server()
        self.work = tempfile.mkdtemp(prefix="serve-paths-")

    def tearDown(self):
        self.server.close()

    def cli_in(self, cwd, *args):
        return subprocess.run([SERVE, "--state-dir", self.server.state_dir, *args], cwd=cwd,
                              capture_output=True, text=True, check=True)

    def test_relative_to_the_working_directory_of_the_command(self):
        self.cli_in(self.work, "create-backend", "t", os.path.abspath(test_plugin("typed")),
                    "--config", "path=data/model.bin")
        self.cli_in("/", "create-endpoint", "t", "--backend", "t", "--route", "/t")
        self.assertEqual(self.server.get("/t").json()["path"],
                         os.path.join(self.work, "data/model.bin"))
        # Another key set from elsewhere leaves this one's folder alone.
        self.cli_in("/", "update-backend", "t", "--config", "int=3")
        self.assertEqual(self.server.get("/t").json()["path"],
                         os.path.join(self.work, "data/model.bin"))
        # A restart keeps it.
        self.server.stop()
        self.server.start()
        self.assertEqual(self.server.get("/t").json()["path"],
                         os.path.join(self.work, "data/model.bin"))

    def test_relative_to_the_deploy_file(self):
        os.makedirs(os.path.join(self.work, "conf"))
        path = os.path.join(self.work, "conf", "serve.yaml")
        with open(path, "w") as f:
            f.write("backends:\n  - name: t\n    plugin: %s\n    config:\n"
                    "      path: ../weights/w.bin\n"
                    "endpoints:\n  - name: t\n    route: /t\n    backend: t\n"
                    % os.path.abspath(test_plugin("typed")))
        self.cli_in("/", "deploy", path)
        self.assertEqual(self.server.get("/t").json()["path"],
                         os.path.join(self.work, "conf", "../weights/w.bin"))


def torch_built():
    return os.path.exists(os.path.join(os.path.dirname(SERVE), "plugins", "torch.so"))


@unittest.skipUnless(torch_built(), "the torch plugin is not built")
class TorchSampleFromAnyDirectory(unittest.TestCase):
    def test_deploy_from_the_root_and_from_slash(self):
        for cwd in (ROOT, "/"):
            with self.subTest(cwd=cwd):
                s = Server()
                try:
                    subprocess.run([SERVE, "--state-dir", s.state_dir, "deploy",
                                    os.path.join(ROOT, "samples/torch/deploy.yaml")
                                    if cwd == "/" else "samples/torch/deploy.yaml"],
                                   cwd=cwd, capture_output=True, text=True, check=True)
                    r = s.post("/mlp", json.dumps([0.1] * 64).encode(),
                               headers={"Content-Type": "application/json"})
                    self.assertEqual(r.status, 200, r)
                    self.assertEqual(len(r.json()), 10)
                finally:
                    s.close()


if __name__ == "__main__":
    unittest.main()
