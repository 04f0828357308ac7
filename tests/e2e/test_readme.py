"""The README's tour, typed command for command as a new user would.

Which blocks run. A ```sh block is run when the line right above its opening
fence is `<!-- tested -->` (an HTML comment, so it does not show on GitHub).
`<!-- tested where torch is built -->` marks a block that runs the same way
where the torch plugin was built beside the binary under test, and is left
out where it was not (the TSan build). Every other block is left alone:
installing, the whole test suite, the benchmarks, CUDA, examples that need a
file the reader writes.
Every ```sh block of the tour section must carry the mark.

How they run. One bash process, in the repository root, gets the tested
blocks in README order, one command at a time (a line, plus the lines it
continues with a trailing backslash), with stdin from /dev/null and
`pipefail` on. A command fails the test when it exits non-zero. Exported
variables and the working folder carry from one command to the next, as in
the reader's terminal.

Expected output. `# → TEXT` at the end of a command, or on comment lines
right below it, is what the command prints on stdout. Lines are compared
after trailing blanks are stripped, and `...` stands for any text. Other
comments are prose and are not checked.

What the test changes. It substitutes three things in the tested blocks, and
checks that each occurs: `$PWD/build` becomes the folder of the binary under
test ($SERVE_BIN, so the ASan and TSan builds run the tour too),
the tour's `$(mktemp -d)` becomes a fresh temporary state dir (known to the
test, so that it can stop what the tour leaves running), and port 8000 becomes
a free port. Whatever happens, every server started in that state dir is
stopped at the end (SIGKILL if `serve stop` does not do it).
"""
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from serve_harness import SANITIZER_MARKERS, SERVE_BIN

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
README = os.path.join(ROOT, "README.md")
TESTED_MARK = "<!-- tested -->"
TORCH_MARK = "<!-- tested where torch is built -->"
EXPECT_RE = re.compile(r"(?:^|\s)#\s*→\s?(.*)$")
TOUR_HEADING_RE = re.compile(r"^## .*\btour\b", re.I)
COMMAND_TIMEOUT_S = 120


class Block:
    def __init__(self, line_no, lang, lines, tested, section, needs_torch=False):
        self.line_no = line_no        # README line of the opening fence
        self.lang = lang
        self.lines = lines
        self.tested = tested
        self.section = section        # the "## " heading above it
        self.needs_torch = needs_torch


class Command:
    def __init__(self, line_no, text):
        self.line_no = line_no
        self.text = text
        self.expect = []              # expected stdout lines, if any

    def where(self):
        return "README.md:%d: %s" % (self.line_no, self.text)


def parse_blocks(text):
    blocks, section, lines = [], "", text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line
        if line.startswith("```"):
            start, lang = i, line[3:].strip()
            i += 1
            body = []
            while i < len(lines) and lines[i].rstrip() != "```":
                body.append(lines[i])
                i += 1
            mark = lines[start - 1].strip() if start > 0 else ""
            tested = mark in (TESTED_MARK, TORCH_MARK)
            blocks.append(Block(start + 1, lang, body, tested, section, mark == TORCH_MARK))
        i += 1
    return blocks


def parse_commands(block):
    commands, continued = [], None
    for n, line in enumerate(block.lines, block.line_no + 1):
        if continued is not None:
            continued.text += "\n" + line
            if not line.endswith("\\"):
                take_expectation(continued, line)
                continued = None
            continue
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            m = EXPECT_RE.match(stripped)
            if m:
                if not commands:
                    raise ValueError("README.md:%d: expected output before any command" % n)
                commands[-1].expect.append(m.group(1).rstrip())
            continue
        cmd = Command(n, line)
        commands.append(cmd)
        if line.endswith("\\"):
            continued = cmd
        else:
            take_expectation(cmd, line)
    return commands


def take_expectation(cmd, last_line):
    m = EXPECT_RE.search(last_line)
    if m:
        cmd.expect.append(m.group(1).rstrip())


def output_matches(expect, stdout):
    pattern = "\n".join(".*?".join(re.escape(part) for part in line.split("..."))
                        for line in expect)
    got = "\n".join(line.rstrip() for line in stdout.splitlines()).strip("\n")
    return re.fullmatch(pattern, got, re.S) is not None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_serve(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return os.path.basename(f.read().split(b"\0")[0]) == b"serve"
    except OSError:
        return False


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class Shell:
    """One bash process that runs commands one at a time, like a terminal.
    Each command's stdout, stderr and status go to files of their own, so a
    daemon that keeps a descriptor open cannot hang the test."""

    def __init__(self, cwd, env, scratch):
        self.scratch = scratch
        self.count = 0
        self.proc = subprocess.Popen(["bash", "--noprofile", "--norc"], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     cwd=cwd, env=env, text=True, start_new_session=True)
        self._send("set -o pipefail")

    def _send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def run(self, text, timeout=COMMAND_TIMEOUT_S):
        """Returns (status, stdout, stderr); status None when the shell died
        or the command ran past the timeout."""
        self.count += 1
        base = os.path.join(self.scratch, "cmd%03d" % self.count)
        with open(base + ".sh", "w") as f:
            f.write(text + "\n")
        q = {k: shlex.quote(base + k) for k in (".sh", ".out", ".err", ".rc", ".rc.tmp")}
        self._send("source %s </dev/null >%s 2>%s; echo $? >%s; mv %s %s" % (
            q[".sh"], q[".out"], q[".err"], q[".rc.tmp"], q[".rc.tmp"], q[".rc"]))
        deadline = time.monotonic() + timeout
        status = None
        while True:
            if os.path.exists(base + ".rc"):
                with open(base + ".rc") as f:
                    status = int(f.read())
                break
            if self.proc.poll() is not None:
                break
            if time.monotonic() > deadline:
                self.kill()
                break
            time.sleep(0.02)
        return status, self._read(base + ".out"), self._read(base + ".err")

    @staticmethod
    def _read(path):
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()


class Readme(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(README, encoding="utf-8") as f:
            cls.blocks = parse_blocks(f.read())

    def test_marks_are_on_sh_blocks(self):
        for b in self.blocks:
            if b.tested:
                self.assertEqual(b.lang, "sh", "README.md:%d: %s only goes above a ```sh block"
                                 % (b.line_no, TESTED_MARK))

    def test_every_tour_block_is_tested(self):
        tour = [b for b in self.blocks if TOUR_HEADING_RE.match(b.section)]
        self.assertTrue(tour, "the README has no tour section (a '## ... tour' heading)")
        for b in tour:
            if b.lang == "sh":
                self.assertTrue(b.tested, "README.md:%d: a tour block without %s above it"
                                % (b.line_no, TESTED_MARK))

    def test_tour_runs_command_for_command(self):
        tmp = tempfile.mkdtemp(prefix="serve-readme-")
        self.addCleanup(shutil.rmtree, tmp, True)
        state_dir = os.path.join(tmp, "state")
        scratch = os.path.join(tmp, "shell")
        os.mkdir(scratch)
        bin_dir = os.path.dirname(os.path.abspath(SERVE_BIN))
        self.assertNotRegex(bin_dir + state_dir, r"\s", "paths with blanks cannot be substituted")
        port = free_port()

        substitutions = [(re.escape("$PWD/build"), bin_dir.replace("\\", r"\\")),
                         (re.escape("$(mktemp -d)"), state_dir),
                         (r"(?<=:)8000\b", str(port))]
        used = set()
        commands = []
        have_torch = os.path.exists(os.path.join(bin_dir, "plugins", "torch.so"))
        for b in self.blocks:
            if not b.tested or (b.needs_torch and not have_torch):
                continue
            lines = []
            for line in b.lines:
                for i, (pattern, repl) in enumerate(substitutions):
                    line, n = re.subn(pattern, repl, line)
                    if n:
                        used.add(i)
                lines.append(line)
            b = Block(b.line_no, b.lang, lines, True, b.section)
            commands.append(parse_commands(b))
        self.assertGreaterEqual(sum(map(len, commands)), 4, "too few tested commands")
        for i, (pattern, _) in enumerate(substitutions):
            # Without these the tour would run another serve, or touch the
            # reader's own state dir or port.
            self.assertIn(i, used, "the tested blocks never mention %s" % pattern)

        env = dict(os.environ)
        env["SERVE_STATE_DIR"] = state_dir            # in case a block forgets it
        env["XDG_STATE_HOME"] = os.path.join(tmp, "xdg")
        env.pop("SERVE_PLUGIN_PATH", None)
        pids = set()
        self.addCleanup(self.stop_servers, state_dir, pids)
        shell = Shell(ROOT, env, scratch)
        self.addCleanup(shell.close)

        transcript = []
        for block_no, block_commands in enumerate(commands):
            for cmd in block_commands:
                status, out, err = shell.run(cmd.text)
                pids.update(int(p) for p in re.findall(r"\(pid (\d+)", out))
                transcript.append("$ %s\n%s%s" % (cmd.text, out, err))
                context = "\n--- transcript ---\n" + "\n".join(transcript[-6:])
                if status is None:
                    self.fail("%s: no answer within %d s (or the shell exited)%s"
                              % (cmd.where(), COMMAND_TIMEOUT_S, context))
                self.assertEqual(status, 0, "%s: exit status %d%s" % (cmd.where(), status, context))
                if cmd.expect and not output_matches(cmd.expect, out):
                    self.fail("%s: printed\n%s\nbut the README says\n%s%s"
                              % (cmd.where(), out, "\n".join(cmd.expect), context))
            if block_no == 0:
                # The README's PATH line must make `serve` the binary under test.
                status, out, _ = shell.run("type -P serve")
                self.assertEqual(os.path.realpath(out.strip()), os.path.realpath(SERVE_BIN),
                                 "after the first tour block, `serve` is not the built binary")

        log_path = os.path.join(state_dir, "serve.log")
        if os.path.exists(log_path):
            with open(log_path, errors="replace") as f:
                log = f.read()
            for marker in SANITIZER_MARKERS:
                self.assertNotIn(marker, log, "sanitizer report in the server log:\n" + log[-6000:])

    @staticmethod
    def stop_servers(state_dir, pids):
        """Stops whatever the tour left running: `serve stop`, then SIGKILL
        for any server of ours still alive."""
        try:
            with open(os.path.join(state_dir, "serve.pid")) as f:
                pids.add(int(f.read().strip() or 0))
        except (OSError, ValueError):
            pass
        pids.discard(0)
        if any(pid_alive(p) for p in pids) or os.path.exists(os.path.join(state_dir, "control.sock")):
            try:
                subprocess.run([SERVE_BIN, "--state-dir", state_dir, "stop", "--timeout", "5"],
                               capture_output=True, timeout=30)
            except subprocess.TimeoutExpired:
                pass
        for pid in pids:
            for _ in range(200):
                if not pid_alive(pid):
                    break
                time.sleep(0.05)
            if pid_alive(pid) and is_serve(pid):
                os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    unittest.main()
