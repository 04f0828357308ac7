"""`cmake --install` into a temporary prefix, then only what was installed is
used: the layout is checked, samples/plugin-template is copied out of the
tree and built twice (one cc line with pkg-config, and CMake with
find_package(serve)), and the installed serve serves both builds over HTTP.

The build dir comes from SERVE_BUILD_DIR (set by ctest), and the cmake and C
compiler are the ones its CMakeCache.txt names."""
import fnmatch
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import serve_harness
from serve_harness import Server

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.normpath(os.path.join(HERE, "..", ".."))
TEMPLATE_DIR = os.path.join(SOURCE_DIR, "samples", "plugin-template")
BUILD_DIR = os.environ.get("SERVE_BUILD_DIR") or os.path.dirname(
    os.path.abspath(serve_harness.SERVE_BIN))


def cmake_cache(key, default):
    try:
        with open(os.path.join(BUILD_DIR, "CMakeCache.txt")) as f:
            for line in f:
                m = re.match(r"([^:#/]+):[A-Z]+=(.*)$", line.rstrip("\n"))
                if m and m.group(1) == key:
                    return m.group(2)
    except FileNotFoundError:
        pass
    return default


CMAKE = cmake_cache("CMAKE_COMMAND", "") or shutil.which("cmake") or "cmake"
CC = cmake_cache("CMAKE_C_COMPILER", "") or "cc"
LIBDIR = cmake_cache("CMAKE_INSTALL_LIBDIR", "lib")
SHIPPED = ("echo", "counter", "sim", "model_one", "model_two", "composed", "ensemble")

# Everything an install may put under the prefix: nothing else is allowed.
LAYOUT = (
    "bin/serve",
    LIBDIR + "/serve/plugins/*.so",
    "include/serve/*.h",
    LIBDIR + "/pkgconfig/serve.pc",
    LIBDIR + "/cmake/serve/*.cmake",
    "share/man/man1/*.1",
    "share/man/man3/*.3",
    "share/man/man5/*.5",
    "share/bash-completion/completions/serve",
)


def run(cmd, cwd=None, env=None, shell=False, timeout=300):
    proc = subprocess.run(cmd, cwd=cwd, env=env, shell=shell, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s%s" % (cmd if shell else " ".join(cmd),
                                                        proc.returncode, proc.stdout,
                                                        proc.stderr))
    return proc


def clean_env(**extra):
    """The environment for tools: nothing that could point them at another
    serve (DESTDIR, SERVE_PLUGIN_PATH, pkg-config and CMake search paths)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DESTDIR", "SERVE_PLUGIN_PATH", "PKG_CONFIG_PATH", "CMAKE_PREFIX_PATH",
                        "serve_DIR", "serve_ROOT", "SERVE_ROOT")}
    env.update(extra)
    return env


def dynamic_symbols(so, which):
    out = run(["nm", "-D", which, so]).stdout
    return sorted(line.split()[-1] for line in out.splitlines() if line.strip())


class Install(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="serve-install-")
        try:
            cls.prefix = os.path.join(cls.tmp, "prefix")
            run([CMAKE, "--install", BUILD_DIR, "--prefix", cls.prefix], env=clean_env())
            cls.serve_bin = os.path.join(cls.prefix, "bin", "serve")
            cls.plugin_dir = os.path.join(cls.prefix, LIBDIR, "serve", "plugins")
            cls.pc_env = clean_env(PKG_CONFIG_PATH=os.path.join(cls.prefix, LIBDIR, "pkgconfig"))
            cls.build_with_pkg_config()
            cls.build_with_cmake()
        except BaseException:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise
        # The servers below run the installed binary, not the build's.
        cls.saved_bin = serve_harness.SERVE_BIN
        serve_harness.SERVE_BIN = cls.serve_bin
        cls.saved_plugin_path = os.environ.pop("SERVE_PLUGIN_PATH", None)

    @classmethod
    def tearDownClass(cls):
        serve_harness.SERVE_BIN = cls.saved_bin
        if cls.saved_plugin_path is not None:
            os.environ["SERVE_PLUGIN_PATH"] = cls.saved_plugin_path
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def build_with_pkg_config(cls):
        """The README's one-line build, in an untouched copy of the template."""
        src = os.path.join(cls.tmp, "myplugin")
        shutil.copytree(TEMPLATE_DIR, src)
        run("%s -shared -fPIC -fvisibility=hidden -Wall -Wextra -Werror -O2 -o myplugin.so myplugin.c "
            "$(pkg-config --cflags --libs serve)" % CC, cwd=src, env=cls.pc_env, shell=True)
        cls.pc_plugin = os.path.join(src, "myplugin.so")

    @classmethod
    def build_with_cmake(cls):
        """The README's copy-and-rename, then CMake with find_package(serve)."""
        src = os.path.join(cls.tmp, "shout")
        shutil.copytree(TEMPLATE_DIR, src)
        os.rename(os.path.join(src, "myplugin.c"), os.path.join(src, "shout.c"))
        for name in ("shout.c", "CMakeLists.txt"):
            path = os.path.join(src, name)
            with open(path) as f:
                text = f.read()
            with open(path, "w") as f:
                f.write(text.replace("myplugin", "shout"))
        build = os.path.join(src, "build")
        run([CMAKE, "-S", src, "-B", build, "-DCMAKE_PREFIX_PATH=" + cls.prefix,
             "-DCMAKE_C_COMPILER=" + CC, "-DCMAKE_C_FLAGS=-Werror"], env=clean_env())
        run([CMAKE, "--build", build], env=clean_env())
        cls.cmake_build = build
        cls.cmake_plugin = os.path.join(build, "shout.so")

    # -- the installed tree ---------------------------------------------
    def test_layout(self):
        p = lambda *parts: os.path.join(self.prefix, *parts)
        self.assertTrue(os.access(p("bin", "serve"), os.X_OK))
        for name in SHIPPED:
            self.assertTrue(os.path.isfile(p(LIBDIR, "serve", "plugins", name + ".so")), name)
        # Every installed plugin is one the build made.
        for so in os.listdir(p(LIBDIR, "serve", "plugins")):
            self.assertTrue(os.path.isfile(os.path.join(BUILD_DIR, "plugins", so)), so)
        self.assertTrue(os.path.isfile(p("include", "serve", "plugin.h")))
        self.assertTrue(os.path.isfile(p(LIBDIR, "pkgconfig", "serve.pc")))
        for name in ("serveConfig.cmake", "serveConfigVersion.cmake"):
            self.assertTrue(os.path.isfile(p(LIBDIR, "cmake", "serve", name)), name)

        # Every man page of the source tree, in its section; and all three
        # sections (serve(1) and serve-<cmd>(1), serve-plugin(3),
        # serve-deploy(5)) are there.
        man_src = os.path.join(SOURCE_DIR, "man")
        for page in sorted(os.listdir(man_src)):
            section = page.rsplit(".", 1)[-1]
            if section in ("1", "3", "5"):
                installed = p("share", "man", "man" + section, page)
                self.assertTrue(os.path.isfile(installed), installed)
        for section in ("1", "3", "5"):
            with self.subTest(section=section):
                mandir = p("share", "man", "man" + section)
                self.assertTrue(os.path.isdir(mandir) and os.listdir(mandir),
                                "no man%s pages installed (man/*.%s)" % (section, section))
        self.assertTrue(os.path.isfile(p("share", "man", "man1", "serve.1")))
        self.assertTrue(os.path.isfile(p("share", "man", "man5", "serve-deploy.5")))

        completion_src = os.path.join(SOURCE_DIR, "cli", "completion", "serve.bash")
        completion = p("share", "bash-completion", "completions", "serve")
        if os.path.exists(completion_src):
            with open(completion_src, "rb") as a, open(completion, "rb") as b:
                self.assertEqual(a.read(), b.read())

        # Nothing outside the layout.
        for root, _, files in os.walk(self.prefix):
            for name in files:
                rel = os.path.relpath(os.path.join(root, name), self.prefix)
                self.assertTrue(any(fnmatch.fnmatchcase(rel, pat) for pat in LAYOUT),
                                "installed outside the layout: " + rel)

    def test_pkg_config_file_points_into_the_prefix(self):
        def var(name):
            return run(["pkg-config", "--variable=" + name, "serve"], env=self.pc_env).stdout.strip()
        real = os.path.realpath
        self.assertEqual(real(var("includedir")), real(os.path.join(self.prefix, "include")))
        self.assertEqual(real(var("plugindir")), real(self.plugin_dir))
        self.assertEqual(real(os.path.join(var("bindir"), "serve")), real(self.serve_bin))
        cflags = run(["pkg-config", "--cflags", "serve"], env=self.pc_env).stdout.split()
        self.assertEqual([real(f[2:]) for f in cflags if f.startswith("-I")],
                         [real(os.path.join(self.prefix, "include"))])
        self.assertEqual(run(["pkg-config", "--libs", "serve"], env=self.pc_env).stdout.strip(),
                         "")
        version = run(["pkg-config", "--modversion", "serve"], env=self.pc_env).stdout.strip()
        self.assertRegex(version, r"^\d+\.\d+\.\d+$")

    def test_cmake_package_found_in_the_prefix(self):
        # find_package(serve) took the installed package, not another one.
        serve_dir = None
        with open(os.path.join(self.cmake_build, "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith("serve_DIR:"):
                    serve_dir = line.split("=", 1)[1].strip()
        self.assertEqual(os.path.realpath(serve_dir),
                         os.path.realpath(os.path.join(self.prefix, LIBDIR, "cmake", "serve")))

    @unittest.skipUnless(shutil.which("nm"), "nm not found")
    def test_template_builds_are_plugins(self):
        # NAME.so without a "lib" prefix; two exported symbols, the entry
        # point and the descriptor's size; the SDK's functions left for the
        # serve process to provide.
        self.assertEqual(sorted(f for f in os.listdir(self.cmake_build) if f.endswith(".so")),
                         ["shout.so"])
        for so in (self.pc_plugin, self.cmake_plugin):
            with self.subTest(plugin=so):
                self.assertEqual(dynamic_symbols(so, "--defined-only"),
                                 ["serve_plugin_descriptor_size", "serve_plugin_entry"])
                undefined = dynamic_symbols(so, "--undefined-only")
                self.assertIn("serve_respond_take", undefined)
                self.assertIn("serve_config_get", undefined)

    # -- the installed serve --------------------------------------------
    def test_installed_serve_serves_both_builds(self):
        server = Server()
        try:
            self.assertEqual(os.path.realpath("/proc/%d/exe" % server.pid),
                             os.path.realpath(self.serve_bin))
            server.cli("create-backend", "up", self.pc_plugin, "--config", "suffix=!",
                       "--max-batch-size", "4", "--batch-wait-timeout-ms", "20")
            server.cli("create-endpoint", "up", "--backend", "up", "--route", "/upper")
            server.deploy("shout", self.cmake_plugin, "/shout")

            r = server.post("/upper", b"hello, world")
            self.assertEqual((r.status, r.body), (200, b"HELLO, WORLD!"))
            self.assertEqual(r.headers["content-type"], "text/plain")
            r = server.post("/shout", b"quiet please")
            self.assertEqual((r.status, r.body), (200, b"QUIET PLEASE"))

            # handle_batch over a batch: every request gets its own answer.
            bodies = [("msg %d" % i).encode() for i in range(8)]
            answers = server.concurrent(bodies, "/upper")
            self.assertEqual([(a.status, a.body) for a in answers],
                             [(200, b.upper() + b"!") for b in bodies])

            real = os.path.realpath
            self.assertEqual(real(server.backend_status("up")["spec"]["plugin"]),
                             real(self.pc_plugin))
            self.assertEqual(real(server.backend_status("shout")["spec"]["plugin"]),
                             real(self.cmake_plugin))

            # init refusing its config reaches the user.
            proc = server.cli("create-backend", "bad", self.pc_plugin, "--config",
                              "suffix=" + "x" * 65, check=False)
            self.assertNotEqual(proc.returncode, 0)
            self.assertIn("suffix is longer than 64 bytes", proc.stderr)
            self.assertIn('myplugin ready, suffix "!"', server.log())
        finally:
            server.close()

    def test_shipped_plugin_by_name_through_serve_plugin_path(self):
        server = Server()
        try:
            os.environ["SERVE_PLUGIN_PATH"] = self.plugin_dir
            try:
                server.deploy("e", "echo", "/echo")
            finally:
                del os.environ["SERVE_PLUGIN_PATH"]
            self.assertEqual(server.backend_status("e")["spec"]["plugin"],
                             os.path.join(self.plugin_dir, "echo.so"))
            r = server.post("/echo", b"ping", headers={"Content-Type": "text/plain"})
            self.assertEqual((r.status, r.body), (200, b"ping"))
        finally:
            server.close()

    def test_shipped_plugin_by_name_relative_to_the_install(self):
        """A bare name resolves in the installed serve's own plugin folder,
        wherever the tree was installed. Skipped (with the reason) while the
        runtime only knows <exe dir>/plugins and the configured prefix."""
        server = Server()
        try:
            proc = server.cli("create-backend", "e", "echo", check=False)
            if proc.returncode != 0:
                self.assertIn("not found", proc.stderr)
                self.skipTest("the installed serve does not look in %s for bare plugin names "
                              "(runtime/plugin_path.c): %s" % (self.plugin_dir,
                                                              proc.stderr.strip()))
            plugin = server.backend_status("e")["spec"]["plugin"]
            if not plugin.startswith(self.prefix + os.sep):
                self.skipTest("echo resolved to %s, the configured prefix's plugin folder, "
                              "not the one of this install" % plugin)
            self.assertEqual(plugin, os.path.join(self.plugin_dir, "echo.so"))
        finally:
            server.close()


if __name__ == "__main__":
    unittest.main()
