"""The state dir is trusted only when it is the user's own: `serve start`
refuses a symlink, a folder of another user, or one that group or other can
write; no file in it is ever followed through a symlink; and the CLI does not
talk to a socket in a state dir it would not trust.

The tests run as root, who may write anywhere: "another user" is uid 65534
(chown), "group or other can write" is mode 0777, and each planted symlink
points at a victim file whose content must survive."""
import os
import shutil
import stat
import subprocess
import tempfile
import unittest

from serve_harness import FakeControlServer, Server, run_cli

NOBODY = 65534
VICTIM_TEXT = "the victim's own content\n"


class StateDirCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="serve-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.victim = os.path.join(self.tmp, "victim")
        with open(self.victim, "w") as f:
            f.write(VICTIM_TEXT)

    def private_dir(self, name="state"):
        path = os.path.join(self.tmp, name)
        os.mkdir(path, 0o700)
        return path

    def assert_victim_unchanged(self):
        with open(self.victim) as f:
            self.assertEqual(f.read(), VICTIM_TEXT, "a file was written through a symlink")

    def start(self, state_dir, *args):
        proc = run_cli(state_dir, "start", "--http", "127.0.0.1:0", *args, check=False)
        if proc.returncode == 0:  # a server that should not run: stop it after the test
            self.addCleanup(run_cli, state_dir, "stop", check=False)
        return proc

    def assert_refused(self, proc, message):
        self.assertNotEqual(proc.returncode, 0, proc.stdout)
        self.assertEqual(proc.stderr.count("\n"), 1, proc.stderr)
        self.assertTrue(proc.stderr.startswith("serve: start: "), proc.stderr)
        self.assertIn(message, proc.stderr)


class UntrustedStateDirs(StateDirCase):
    def test_a_dir_of_another_user_is_refused_and_left_alone(self):
        # What the probe did: another user's world-writable folder, with a
        # state file of theirs that names a plugin.
        d = self.private_dir()
        with open(os.path.join(d, "state.msgpack"), "wb") as f:
            f.write(b"\x92\x01\x82\xa8backends\x90\xa9endpoints\x90")
        os.chmod(d, 0o777)
        os.chown(d, NOBODY, NOBODY)
        proc = self.start(d)
        self.assert_refused(proc, "state dir %s is not owned by you (uid %d)" % (d, NOBODY))
        self.assertEqual(sorted(os.listdir(d)), ["state.msgpack"], "the server wrote there")
        self.assertEqual(stat.S_IMODE(os.stat(d).st_mode), 0o777)

    def test_a_private_dir_of_another_user_is_refused_in_the_foreground_too(self):
        d = self.private_dir()
        os.chown(d, NOBODY, NOBODY)
        proc = self.start(d, "--foreground")
        self.assertEqual(proc.returncode, 1)
        # The log (stderr in the foreground) has the line too.
        self.assertTrue(proc.stderr.endswith(
            "serve: start: state dir %s is not owned by you (uid %d); use a dir of your own\n"
            % (d, NOBODY)), proc.stderr)
        self.assertEqual(os.listdir(d), [])

    def test_a_dir_group_or_other_can_write_is_refused(self):
        for mode in (0o777, 0o770, 0o702):
            with self.subTest(mode=oct(mode)):
                d = self.private_dir("state%o" % mode)
                os.chmod(d, mode)
                proc = self.start(d)
                self.assert_refused(
                    proc, "state dir %s is writable by group or other (mode %04o); "
                    "use a private dir (chmod 700)" % (d, mode))
                self.assertEqual(os.listdir(d), [])
                self.assertEqual(stat.S_IMODE(os.stat(d).st_mode), mode)

    def test_a_symlinked_state_dir_is_refused_and_its_target_not_chmodded(self):
        target = self.private_dir("target")
        os.chmod(target, 0o755)
        link = os.path.join(self.tmp, "link")
        os.symlink(target, link)
        self.assert_refused(self.start(link), "state dir %s is a symlink" % link)
        self.assertEqual(stat.S_IMODE(os.stat(target).st_mode), 0o755)
        self.assertEqual(os.listdir(target), [])

    def test_a_symlinked_state_dir_named_with_a_trailing_slash_or_dot_is_refused(self):
        # lstat("link/") and lstat("link/.") follow the link: both once
        # started a server in the link's target.
        target = self.private_dir("target")
        link = os.path.join(self.tmp, "link")
        os.symlink(target, link)
        self.assert_refused(self.start(link + "/"), "state dir %s is a symlink" % link)
        self.assert_refused(self.start(link + "//"), "state dir %s is a symlink" % link)
        self.assert_refused(self.start(link + "/."), "without a trailing /, . or ..")
        self.assertEqual(os.listdir(target), [])

    def test_an_own_readable_dir_is_made_private_and_a_missing_one_created_private(self):
        own = self.private_dir()
        os.chmod(own, 0o755)
        missing = os.path.join(self.tmp, "new", "state")
        for d in (own, missing):
            s = Server(state_dir=d)
            try:
                self.assertEqual(stat.S_IMODE(os.stat(d).st_mode), 0o700)
            finally:
                s.close()
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(missing)).st_mode), 0o700)


class PlantedSymlinks(StateDirCase):
    def plant(self, state_dir, name):
        os.symlink(self.victim, os.path.join(state_dir, name))

    def test_planted_pid_file_log_and_state_file_are_refused(self):
        for name in ("serve.pid", "serve.log", "state.msgpack"):
            with self.subTest(file=name):
                d = self.private_dir("state-" + name)
                self.plant(d, name)
                self.assert_refused(self.start(d), "%s/%s: it is a symlink" % (d, name))
                self.assert_victim_unchanged()
                self.assertTrue(os.path.islink(os.path.join(d, name)))

    def test_a_planted_control_socket_path_is_refused(self):
        d = self.private_dir()
        self.plant(d, "control.sock")
        proc = self.start(d)
        self.assert_refused(proc, "control socket %s/control.sock" % d)
        self.assertIn("is not a socket of yours", proc.stderr)
        self.assertTrue(os.path.islink(os.path.join(d, "control.sock")))
        self.assert_victim_unchanged()

    def test_a_stale_socket_of_our_own_is_replaced(self):
        s = Server()
        try:
            s.kill()  # control.sock stays behind
            self.assertTrue(os.path.exists(os.path.join(s.state_dir, "control.sock")))
            s.start()
            self.assertEqual(s.status()["backends"], [])
        finally:
            s.close()

    def test_a_planted_temporary_state_file_fails_the_change_and_the_server_keeps_serving(self):
        s = Server()
        try:
            s.deploy("e", "echo", "/e")
            tmp = os.path.join(s.state_dir, "state.msgpack.tmp")
            os.symlink(self.victim, tmp)
            proc = s.cli("create-backend", "c", "counter", check=False)
            self.assertEqual(proc.returncode, 1)
            self.assertEqual(proc.stderr.count("\n"), 1, proc.stderr)
            self.assertIn("cannot write state file %s/state.msgpack: %s: it is a symlink"
                          % (s.state_dir, tmp), proc.stderr)
            self.assert_victim_unchanged()
            self.assertTrue(os.path.islink(tmp))
            self.assertFalse(os.path.islink(os.path.join(s.state_dir, "state.msgpack")))
            self.assertEqual([b["spec"]["name"] for b in s.status()["backends"]], ["e"])
            self.assertEqual(s.post("/e", b"still").body, b"still")
            os.unlink(tmp)
            s.cli("create-backend", "c", "counter")
            s.kill()
            s.start()
            self.assertEqual(sorted(b["spec"]["name"] for b in s.status()["backends"]),
                             ["c", "e"])
        finally:
            s.close()


class CliTrustsOnlyPrivateDirs(StateDirCase):
    """Another user who can write the state dir could put a server of their
    own there, and read every command (and `serve call` body) sent to it."""

    def assert_cli_refuses(self, state_dir, message):
        fake = FakeControlServer(state_dir)
        self.addCleanup(fake.close)
        for args in (["status"], ["stop"], ["call", "x", "--data", "secret"]):
            with self.subTest(args=args):
                try:
                    proc = run_cli(state_dir, *args, check=False, timeout=20)
                except subprocess.TimeoutExpired:
                    self.fail("serve %s talked to the socket of an untrusted state dir" % args[0])
                self.assertEqual(proc.returncode, 1)
                self.assertEqual(proc.stderr, "serve: %s: %s\n" % (args[0], message))
        self.assertEqual(fake.connections(), 0)

    def test_group_or_other_writable(self):
        d = self.private_dir()
        os.chmod(d, 0o777)
        self.assert_cli_refuses(d, "state dir %s is writable by group or other (mode 0777); "
                                "use a private dir (chmod 700)" % d)

    def test_owned_by_another_user(self):
        d = self.private_dir()
        os.chown(d, NOBODY, NOBODY)
        self.assert_cli_refuses(d, "state dir %s is not owned by you (uid %d); use a dir of "
                                "your own" % (d, NOBODY))

    def test_symlink(self):
        target = self.private_dir("target")
        link = os.path.join(self.tmp, "link")
        os.symlink(target, link)
        self.assert_cli_refuses(link, "state dir %s is a symlink; use the folder it points to, "
                                "if it is yours" % link)

    def test_a_missing_state_dir_still_says_no_server(self):
        proc = run_cli(os.path.join(self.tmp, "none"), "status", check=False)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("no server is running on state dir", proc.stderr)


if __name__ == "__main__":
    unittest.main()
