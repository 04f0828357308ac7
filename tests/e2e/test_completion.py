"""Bash completion (cli/completion/serve.bash): subcommands and options read
from the binary, option values and files, and backend and endpoint names from
a real running server.

Each completion runs in a fresh non-interactive bash: it sources the script,
sets COMP_WORDS/COMP_CWORD/COMP_LINE/COMP_POINT the way bash would for the
line, calls the function that `complete -p serve` names, and prints COMPREPLY.
`serve` resolves to SERVE_BIN through PATH."""
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

from serve_harness import SERVE_BIN, Server

SCRIPT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                      "../../cli/completion/serve.bash"))
BASH = shutil.which("bash")

COMMANDS = {"start", "stop", "status", "create-backend", "update-backend", "delete-backend",
            "list-backends", "create-endpoint", "delete-endpoint", "list-endpoints",
            "set-traffic", "shadow-traffic", "deploy", "call", "bench", "try"}
SHIPPED_PLUGINS = {"echo", "counter", "sim", "torch", "cuda"}

# Sources the script, then completes the line as bash would: $1 COMP_LINE,
# $2 COMP_POINT, $3 COMP_CWORD, the rest COMP_WORDS.
DRIVER = r'''
source "$SERVE_COMPLETION_SCRIPT" || exit 90
spec=$(complete -p serve) || exit 91
[[ $spec =~ -F\ ([^ ]+) ]] || exit 92
fn=${BASH_REMATCH[1]}
COMP_LINE=$1 COMP_POINT=$2 COMP_CWORD=$3
shift 3
COMP_WORDS=("$@")
COMP_TYPE=9 COMP_KEY=9
COMPREPLY=()
prev=
(( COMP_CWORD > 0 )) && prev=${COMP_WORDS[COMP_CWORD-1]}
"$fn" "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "$prev"
printf '%s\n' "${COMPREPLY[@]}"
'''


def bash_words(line):
    """COMP_WORDS for the line: split at blanks, then at the word-break
    characters the tests use (= : @), as bash does. With the cursor at the
    end of the line after a blank, the last word is empty."""
    words = []
    for token in line.split():
        words += re.findall(r"[=:@]+|[^=:@]+", token)
    if not line or line[-1].isspace():
        words.append("")
    return words


def bash_comp_vars(line):
    """COMP_LINE, COMP_POINT, COMP_CWORD and COMP_WORDS for a line whose
    cursor is at the | in it, or at its end. With the cursor in the blank
    between two words, bash adds no empty word: COMP_CWORD is the next word."""
    if "|" not in line:
        words = bash_words(line)
        return line, len(line), len(words) - 1, words
    before, after = line.split("|", 1)
    full = before + after
    words = bash_words(full)
    cword = len([w for w in bash_words(before) if w])
    if before and not before[-1].isspace():
        cword -= 1  # the cursor is inside (at the end of) a word
    return full, len(before), cword, words


@unittest.skipUnless(BASH, "bash is not installed")
class CompletionCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="serve-completion-")
        # PATH finds serve (SERVE_BIN) first.
        cls.bindir = os.path.join(cls.tmp, "bin")
        os.mkdir(cls.bindir)
        os.symlink(os.path.abspath(SERVE_BIN), os.path.join(cls.bindir, "serve"))
        # A state dir where no server runs: the default for every completion.
        cls.idle_state = os.path.join(cls.tmp, "idle-state")
        os.mkdir(cls.idle_state, 0o700)
        # Files for file, folder and plugin completion.
        cls.files = os.path.join(cls.tmp, "files")
        os.makedirs(os.path.join(cls.files, "sub"))
        for name in ("app.yaml", "alt.yml", "notes.txt", "model.so", "body.json"):
            open(os.path.join(cls.files, name), "w").close()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def complete(self, line, env=None, path=True):
        """Completes at the | in line, or at its end; returns COMPREPLY as a
        list."""
        comp_line, point, cword, words = bash_comp_vars(line)
        run_env = dict(os.environ)
        run_env.update({"SERVE_COMPLETION_SCRIPT": SCRIPT, "SERVE_STATE_DIR": self.idle_state,
                        "PATH": (self.bindir + os.pathsep if path else "") + run_env.get("PATH", "")})
        run_env.pop("SERVE_PLUGIN_PATH", None)
        run_env.update(env or {})
        proc = subprocess.run([BASH, "--norc", "--noprofile", "-c", DRIVER, "driver", comp_line,
                               str(point), str(cword), *words],
                              capture_output=True, text=True, timeout=60, env=run_env,
                              cwd=self.files)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stderr, "", "completion must stay quiet")
        return [w for w in proc.stdout.split("\n") if w]


class Static(CompletionCase):
    def test_subcommands(self):
        self.assertEqual(set(self.complete("serve ")), COMMANDS)
        self.assertEqual(sorted(self.complete("serve cre")), ["create-backend", "create-endpoint"])
        self.assertEqual(self.complete("serve sh"), ["shadow-traffic"])
        self.assertEqual(self.complete("serve --state-dir /tmp li"),
                         ["list-backends", "list-endpoints"])

    def test_global_options(self):
        self.assertEqual(set(self.complete("serve --")),
                         {"--state-dir", "--control-timeout", "--help", "--version"})
        # A global option's value is no subcommand.
        self.assertEqual(self.complete("serve --control-timeout 5 li"),
                         ["list-backends", "list-endpoints"])
        self.assertEqual(self.complete("serve --control-timeout "), [])

    def test_the_binary_being_completed_is_used(self):
        # As for `./build/serve <TAB>`: no serve on PATH.
        serve = os.path.abspath(SERVE_BIN)
        self.assertEqual(sorted(self.complete(serve + " create-", path=False)),
                         ["create-backend", "create-endpoint"])

    def test_options_of_commands(self):
        self.assertEqual(set(self.complete("serve create-backend b1 counter --max")),
                         {"--max-batch-size", "--max-concurrent-queries", "--max-queued-requests",
                          "--max-memory"})
        self.assertLessEqual({"--json", "--watch", "--state-dir", "--help"},
                             set(self.complete("serve status --")))
        # No positional argument: the options are offered straight away.
        self.assertLessEqual({"--json", "--watch"}, set(self.complete("serve status ")))
        bench = set(self.complete("serve bench http://127.0.0.1:1/ -"))
        self.assertLessEqual({"-c", "--connections", "-n", "--requests", "--rate", "--sweep"}, bench)
        self.assertEqual(set(self.complete("serve update-backend b1 --p")), {"--plugin"})
        self.assertLessEqual({"--backend", "--route", "--methods"},
                             set(self.complete("serve create-endpoint e1 --")))
        # A new name is free text: nothing to offer.
        self.assertEqual(self.complete("serve create-backend "), [])

    def test_option_values(self):
        self.assertEqual(self.complete("serve start --log-level "), ["error", "warn", "info", "debug"])
        self.assertEqual(self.complete("serve start --access-log-format j"), ["json"])
        self.assertEqual(self.complete("serve start --access-log-format=c"), ["combined"])
        self.assertEqual(self.complete("serve create-endpoint e --methods GET,PO"), ["GET,POST"])
        self.assertEqual(self.complete("serve create-backend b echo --isolation "), ["process", "thread"])
        self.assertEqual(self.complete("serve update-backend b --isolation t"), ["thread"])

    def test_files(self):
        # Deploy files: YAML and folders.
        self.assertEqual(sorted(self.complete("serve deploy ")), ["alt.yml", "app.yaml", "sub"])
        self.assertEqual(self.complete("serve start --deploy ap"), ["app.yaml"])
        # --opt=VALUE: bash replaces only what follows the =.
        self.assertEqual(self.complete("serve start --deploy=%s/ap" % self.files),
                         [self.files + "/app.yaml"])
        self.assertEqual(self.complete("serve start --access-log n"), ["notes.txt"])
        # --data @FILE: bash replaces from the @ on.
        self.assertEqual(self.complete("serve call e1 --data @bo"), ["@body.json"])
        self.assertEqual(self.complete("serve call e1 --data x"), [])
        # Folders for --state-dir, before the command or after it.
        self.assertEqual(self.complete("serve --state-dir s"), ["sub"])
        self.assertEqual(self.complete("serve --state-dir=%s/s" % self.files), [self.files + "/sub"])
        self.assertEqual(self.complete("serve status --state-dir s"), ["sub"])

    def test_plugins(self):
        offered = set(self.complete("serve create-backend b1 "))
        self.assertLessEqual(SHIPPED_PLUGINS | {"model.so", "sub"}, offered)
        self.assertNotIn("notes.txt", offered)
        self.assertIn("counter", self.complete("serve create-backend b1 co"))
        self.assertEqual(sorted(self.complete("serve create-backend b1 ./")), ["./model.so", "./sub"])
        self.assertLessEqual({"sim", "model.so"}, set(self.complete("serve update-backend b1 --plugin ")))
        # Bare names in SERVE_PLUGIN_PATH folders too.
        self.assertIn("model", self.complete("serve create-backend b1 mo",
                                             env={"SERVE_PLUGIN_PATH": self.files}))

    def test_no_server_is_quiet_and_fast(self):
        for state in (self.idle_state, os.path.join(self.tmp, "missing")):
            start = time.monotonic()
            self.assertEqual(self.complete("serve --state-dir %s delete-backend " % state), [])
            self.assertEqual(self.complete("serve --state-dir %s call " % state), [])
            self.assertLess(time.monotonic() - start, 5)


class FromServer(CompletionCase):
    """Names come from a real server, started by the harness."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server = Server()
        try:
            cls.server.cli("create-backend", "alpha", "counter")
            cls.server.cli("create-backend", "beta", "echo")
            cls.server.cli("create-endpoint", "ep-one", "--backend", "alpha", "--route", "/one")
            cls.server.cli("create-endpoint", "ep-two", "--backend", "beta")
        except Exception:
            cls.server.close()
            super().tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.server.close()
        super().tearDownClass()

    def on(self, line):
        """Completes `serve --state-dir DIR line`."""
        return self.complete("serve --state-dir %s %s" % (self.server.state_dir, line))

    def test_backend_names(self):
        self.assertEqual(sorted(self.on("delete-backend ")), ["alpha", "beta"])
        self.assertEqual(sorted(self.on("update-backend ")), ["alpha", "beta"])
        self.assertEqual(self.on("update-backend b"), ["beta"])
        self.assertEqual(sorted(self.on("create-endpoint e3 --backend ")), ["alpha", "beta"])
        self.assertEqual(self.on("create-endpoint e3 --backend=a"), ["alpha"])
        self.assertEqual(sorted(self.on("shadow-traffic ep-one ")), ["alpha", "beta"])

    def test_endpoint_names(self):
        for command in ("delete-endpoint", "set-traffic", "shadow-traffic", "call", "bench"):
            self.assertEqual(sorted(self.on(command + " ")), ["ep-one", "ep-two"], command)
        self.assertEqual(self.on("call ep-t"), ["ep-two"])

    def test_traffic_weights(self):
        self.assertEqual(sorted(self.on("set-traffic ep-one ")), ["alpha=", "beta="])
        # A backend already given is not offered again.
        self.assertEqual(self.on("set-traffic ep-one alpha=0.5 "), ["beta="])

    def test_state_dir_anywhere_on_the_line(self):
        state = self.server.state_dir
        self.assertEqual(sorted(self.complete("serve delete-backend --state-dir %s " % state)),
                         ["alpha", "beta"])
        self.assertEqual(sorted(self.complete("serve call --state-dir=%s " % state)),
                         ["ep-one", "ep-two"])
        # Without --state-dir, serve's own default: SERVE_STATE_DIR.
        self.assertEqual(sorted(self.complete("serve call ", env={"SERVE_STATE_DIR": state})),
                         ["ep-one", "ep-two"])
        # The default state dir has no server.
        self.assertEqual(self.complete("serve call "), [])

    def test_cursor_inside_the_line(self):
        state = self.server.state_dir
        self.assertEqual(sorted(self.complete("serve call | --state-dir %s" % state)),
                         ["ep-one", "ep-two"])
        self.assertEqual(self.complete("serve delete-backend al| --state-dir %s" % state),
                         ["alpha"])
        self.assertEqual(self.complete("serve delete-backend al|pha --state-dir %s" % state),
                         ["alpha"])
        self.assertEqual(self.complete("serve cr|eate-backend --state-dir %s" % state),
                         ["create-backend", "create-endpoint"])


if __name__ == "__main__":
    unittest.main()
