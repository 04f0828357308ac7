"""The man pages and --help cannot drift apart: every command that
`serve --help` lists has a page man/serve-COMMAND.1 that serve(1) lists, every
option of `serve COMMAND --help` is in that page's SYNOPSIS and option list,
every option the page names there is one --help knows, and mandoc finds
nothing to warn about in any page of man/."""
import os
import re
import shutil
import subprocess
import unittest

from serve_harness import SERVE_BIN

MAN_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "man"))

# Options every command takes; a page may leave them to serve(1).
GLOBAL_OPTIONS = {"--state-dir", "--control-timeout", "--help", "-h"}

# mdoc macro names (callable macros on a macro line) and the delimiters that
# may follow an argument; anything else after Fl is a flag.
MACRO = re.compile(r"^[A-Z][a-z][a-z]?$")
DELIMITERS = set(",.;:()[]|!?")

LONG_OPTION = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")
SHORT_OPTION = re.compile(r"(?<![\w-])-([A-Za-z])(?![\w-])")


def run_serve(*args):
    proc = subprocess.run([SERVE_BIN, *args], capture_output=True, text=True, timeout=30)
    return proc


def help_commands(text):
    """The command names of `serve --help`, from its Commands: block."""
    commands, inside = [], False
    for line in text.splitlines():
        if line.strip() == "Commands:":
            inside = True
        elif inside and not line.strip():
            break
        elif inside:
            m = re.match(r"^  ([a-z][a-z-]*)\s{2,}\S", line)
            if m:
                commands.append(m.group(1))
    return commands


def help_options(text):
    """Every option `serve CMD --help` names, as "--long" and "-s"."""
    return ({"--" + o for o in LONG_OPTION.findall(text)} |
            {"-" + o for o in SHORT_OPTION.findall(text)})


def help_aliases(text):
    """Each option of a "-s, --long" line of --help with its other name."""
    aliases = {}
    for short, long in re.findall(r"^\s+-([A-Za-z]), --([a-z][a-z0-9-]*)", text, re.M):
        aliases["-" + short] = "--" + long
        aliases["--" + long] = "-" + short
    return aliases


def tokens(line):
    """The words of an mdoc macro line; double quotes group words."""
    return [quoted or word for quoted, word in re.findall(r'"([^"]*)"|(\S+)', line[1:])]


def flags(line):
    """The options an mdoc macro line names with Fl: "Fl -json" is --json,
    "Fl c" is -c."""
    found, words, i = [], tokens(line), 0
    while i < len(words):
        if words[i] != "Fl":
            i += 1
            continue
        i += 1
        while i < len(words) and not MACRO.match(words[i]) and words[i] not in DELIMITERS:
            if words[i] not in ("", "-"):
                found.append("-" + words[i])
            i += 1
    return found


class Page:
    """The option names of one man page: those in its SYNOPSIS and those
    that head an item (.It) of a list, which is where options are described."""

    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            self.lines = f.read().splitlines()
        self.synopsis, self.items, self.all = set(), set(), set()
        section = None
        for line in self.lines:
            if line.startswith(".Sh "):
                section = line[4:].strip()
            if not line.startswith("."):
                continue
            names = flags(line)
            self.all.update(names)
            if section == "SYNOPSIS":
                self.synopsis.update(names)
            if line.startswith(".It "):
                self.items.update(names)


class ManPages(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        proc = run_serve("--help")
        assert proc.returncode == 0, proc.stderr
        cls.commands = help_commands(proc.stdout)
        assert len(cls.commands) >= 10, proc.stdout

    def page_path(self, command):
        return os.path.join(MAN_DIR, "serve-%s.1" % command)

    def test_every_command_has_a_page(self):
        for command in self.commands:
            with self.subTest(command=command):
                path = self.page_path(command)
                self.assertTrue(os.path.isfile(path), "no man page %s" % path)
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                self.assertIn(".Dt SERVE-%s 1\n" % command.upper(), text)
                self.assertIn(".Nm serve-%s\n" % command, text)
                self.assertRegex(text, r"\n\.Cm %s\n" % re.escape(command),
                                 "SYNOPSIS of %s does not name the command" % path)
                for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "EXIT STATUS", "EXAMPLES",
                                "SEE ALSO"):
                    self.assertIn("\n.Sh %s\n" % section, text, "%s lacks %s" % (path, section))

    def test_no_page_for_a_command_that_does_not_exist(self):
        for name in sorted(os.listdir(MAN_DIR)):
            m = re.match(r"^serve-(.+)\.1$", name)
            if m:
                self.assertIn(m.group(1), self.commands,
                              "man/%s describes a command `serve --help` does not list" % name)

    def test_serve_1_lists_every_command(self):
        with open(os.path.join(MAN_DIR, "serve.1"), encoding="utf-8") as f:
            text = f.read()
        listed = set(re.findall(r"^\.It Cm ([a-z-]+)$", text, re.M))
        self.assertEqual(listed, set(self.commands),
                         "the command list of serve.1 differs from `serve --help`")
        for command in self.commands:
            self.assertIn(".Xr serve-%s 1" % command, text,
                          "serve.1 does not point to serve-%s(1)" % command)

    def test_help_options_are_in_the_page(self):
        for command in self.commands:
            with self.subTest(command=command):
                proc = run_serve(command, "--help")
                self.assertEqual(proc.returncode, 0, proc.stderr)
                options = help_options(proc.stdout) - GLOBAL_OPTIONS
                aliases = help_aliases(proc.stdout)
                page = Page(self.page_path(command))
                for option in sorted(options):
                    self.assertIn(option, page.items,
                                  "serve %s --help has %s, but no item of man/serve-%s.1 "
                                  "describes it (.It Fl %s)" % (command, option, command,
                                                                option[1:]))
                    # The SYNOPSIS may give an option by either of its names.
                    self.assertTrue({option, aliases.get(option)} & page.synopsis,
                                    "serve %s --help has %s, but the SYNOPSIS of "
                                    "man/serve-%s.1 lacks it" % (command, option, command))

    def test_page_options_are_in_help(self):
        for command in self.commands:
            with self.subTest(command=command):
                proc = run_serve(command, "--help")
                self.assertEqual(proc.returncode, 0, proc.stderr)
                known = help_options(proc.stdout) | GLOBAL_OPTIONS
                page = Page(self.page_path(command))
                for option in sorted(page.synopsis | page.items):
                    self.assertIn(option, known,
                                  "man/serve-%s.1 names %s, which `serve %s --help` does "
                                  "not know" % (command, option, command))

    def test_option_parsing(self):
        """The helpers themselves, on lines of the shapes the pages use."""
        self.assertEqual(flags(".Op Fl -http Ar host : Ns Ar port"), ["--http"])
        self.assertEqual(flags(".It Fl c Ar n , Fl -connections Ar n"), ["-c", "--connections"])
        self.assertEqual(flags(".Op Fl c Ar n | Fl -rate Ar r"), ["-c", "--rate"])
        self.assertEqual(flags(".It Fl h , Fl -help"), ["-h", "--help"])
        self.assertEqual(help_options("  -H, --header 'K: V'   extra (default 2 x 8)\n"),
                         {"-H", "--header"})
        self.assertEqual(help_aliases("  -c, --connections N  conns\n      --rate R  rate\n"),
                         {"-c": "--connections", "--connections": "-c"})

    def test_mandoc_lint_is_clean(self):
        mandoc = shutil.which("mandoc")
        if not mandoc:
            self.skipTest("mandoc is not installed")
        pages = sorted(os.path.join(MAN_DIR, n) for n in os.listdir(MAN_DIR)
                       if os.path.isfile(os.path.join(MAN_DIR, n)))
        self.assertTrue(pages)
        for path in pages:
            with self.subTest(page=os.path.basename(path)):
                proc = subprocess.run([mandoc, "-T", "lint", "-W", "warning", path],
                                      capture_output=True, text=True, timeout=60)
                self.assertEqual(proc.stdout + proc.stderr, "", path)
                self.assertEqual(proc.returncode, 0, path)


if __name__ == "__main__":
    unittest.main()
