"""samples/kubernetes, checked offline: there is no cluster and no container
runtime here, so the manifests are parsed and checked against each other
and against the Containerfile (names, ports, probes, drain, volumes,
Prometheus annotations, the autoscaler's metric), and each deploy file they
carry is run by a real serve: node B with model_two's file, node A with the
composed file whose remote URL (the serve-model-two Service) is pointed at
node B, and POST /composed must come back through both."""
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import unittest
from urllib.parse import urlsplit, urlunsplit

import yaml

from serve_harness import SANITIZED, SERVE_BIN, Server, run_cli

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HERE = os.path.join(ROOT, "samples", "kubernetes")
CONTAINERFILE = os.path.join(HERE, "Containerfile")
HEALTH = "/-/healthz"
PROM = "prometheus.io/"


def yaml_files():
    return sorted(glob.glob(os.path.join(HERE, "*.yaml")) + glob.glob(os.path.join(HERE, "*.yml")))


def is_deploy_file(path):
    """serve deploy files (deploy-*.yaml) sit beside the manifests."""
    return os.path.basename(path).startswith("deploy-")


def load_manifests():
    docs = []
    for path in yaml_files():
        if is_deploy_file(path):
            continue
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc is not None:
                    docs.append((os.path.basename(path), doc))
    return docs


def read(path):
    with open(path) as f:
        return f.read()


# -- the Containerfile -----------------------------------------------------
def containerfile_stages():
    """[(FROM line, [(INSTRUCTION, argument)])], continuation lines joined,
    comments dropped."""
    lines, current = [], ""
    for raw in read(CONTAINERFILE).splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        lines.append(current + raw)
        current = ""
    stages = []
    for line in lines:
        word, _, rest = line.strip().partition(" ")
        word = word.upper()
        if word == "FROM":
            stages.append((rest.strip(), []))
        else:
            assert stages, "an instruction before FROM: " + line
            stages[-1][1].append((word, rest.strip()))
    return stages


def exec_form(text):
    """The JSON array of ENTRYPOINT/CMD; the shell form is not accepted."""
    argv = json.loads(text)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), text
    return argv


def image_command():
    """(ENTRYPOINT, CMD) of the final stage, as lists."""
    entry, cmd = [], []
    for word, arg in containerfile_stages()[-1][1]:
        if word == "ENTRYPOINT":
            entry, cmd = exec_form(arg), []  # a new ENTRYPOINT resets CMD
        elif word == "CMD":
            cmd = exec_form(arg)
    return entry, cmd


def apt_packages(instructions):
    """Every package an `apt-get install` of these RUN lines names."""
    packages = set()
    for word, arg in instructions:
        if word != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", arg):
            argv = shlex.split(command)
            if "apt-get" in argv and "install" in argv:
                packages.update(a for a in argv[argv.index("install") + 1:] if not a.startswith("-"))
    return packages


def option(argv, name):
    """The value of --name in argv (the last one wins, as in serve)."""
    value = None
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith(name + "="):
            value = a.split("=", 1)[1]
    return value


def port_of(hostport):
    return int(hostport.rsplit(":", 1)[1])


# -- the manifests ---------------------------------------------------------
class Cluster:
    """The manifests, indexed."""

    def __init__(self):
        self.docs = load_manifests()
        self.by_kind = {}
        for _, doc in self.docs:
            self.by_kind.setdefault(doc["kind"], []).append(doc)

    def kind(self, kind):
        return self.by_kind.get(kind, [])

    def named(self, kind, name):
        found = [d for d in self.kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, "%d %s named %s" % (len(found), kind, name)
        return found[0]

    def container(self, deployment):
        containers = deployment["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1, deployment["metadata"]["name"]
        return containers[0]

    def argv(self, deployment):
        """What the container runs: the image's ENTRYPOINT and CMD, or the
        command and args that replace them."""
        entry, cmd = image_command()
        c = self.container(deployment)
        return list(c.get("command", entry)) + list(c.get("args", cmd))

    def service_for(self, deployment):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        found = [s for s in self.kind("Service")
                 if s["spec"].get("selector") and
                 all(labels.get(k) == v for k, v in s["spec"]["selector"].items())]
        assert len(found) == 1, "%d Services select %s" % (len(found), deployment["metadata"]["name"])
        return found[0]

    def deploy_configmap(self, deployment):
        """The ConfigMap mounted where --deploy reads, and the key read."""
        path = option(self.argv(deployment), "--deploy")
        assert path, "no --deploy in " + str(self.argv(deployment))
        folder, key = os.path.split(path)
        c = self.container(deployment)
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"].get("volumes", [])}
        mounts = [m for m in c.get("volumeMounts", []) if m["mountPath"].rstrip("/") == folder]
        assert len(mounts) == 1, "nothing (or several) mounted at %s" % folder
        # A subPath mount is never updated: --watch would see no edit.
        assert "subPath" not in mounts[0] and "subPathExpr" not in mounts[0], mounts[0]
        volume = volumes[mounts[0]["name"]]
        assert "configMap" in volume, volume
        return self.named("ConfigMap", volume["configMap"]["name"]), key

    def adapter_metrics(self):
        """{metric name the adapter serves: the series it reads}."""
        names = {}
        for cm in self.kind("ConfigMap"):
            for text in cm.get("data", {}).values():
                try:
                    conf = yaml.safe_load(text)
                except yaml.YAMLError:
                    continue
                if not isinstance(conf, dict) or "rules" not in conf:
                    continue
                for rule in conf["rules"]:
                    series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"]).group(0)
                    name = series
                    if "name" in rule:
                        # The adapter's "as" is a Go replacement: $1 or ${1}.
                        # Without "as": $1 with one group, else $0.
                        matches = rule["name"].get("matches", "^(.*)$")
                        default = "$1" if re.compile(matches).groups == 1 else "$0"
                        as_ = re.sub(r"\$\{?(\d+)\}?", r"\\g<\1>", rule["name"].get("as", default))
                        name = re.sub(matches, as_, series)
                    names[name] = series
        return names


def deploy_file_for(deployment_name):
    """serve-model-two -> deploy-model-two.yaml"""
    assert deployment_name.startswith("serve-"), deployment_name
    return os.path.join(HERE, "deploy-%s.yaml" % deployment_name[len("serve-"):])


def prestop(container):
    """(seconds slept, serve stop's argv) of the preStop exec hook."""
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    if len(command) >= 3 and command[1] == "-c" and command[0].endswith("sh"):
        steps = [shlex.split(s) for s in re.split(r";|&&", command[2]) if s.strip()]
    else:
        steps = [command]
    slept, stop = 0.0, None
    for argv in steps:
        if argv and argv[0] == "exec":
            argv = argv[1:]
        if argv and argv[0] == "sleep":
            slept += float(argv[1])
        elif len(argv) >= 2 and os.path.basename(argv[0]) == "serve" and "stop" in argv:
            stop = argv
    return slept, stop


class Files(unittest.TestCase):
    def test_every_yaml_file_parses_and_every_manifest_is_named(self):
        files = yaml_files()
        self.assertTrue(any(is_deploy_file(f) for f in files))
        self.assertTrue(any(not is_deploy_file(f) for f in files))
        for path in files:
            with open(path) as f:
                docs = [d for d in yaml.safe_load_all(f) if d is not None]
            self.assertTrue(docs, path)
            for doc in docs:
                if is_deploy_file(path):
                    self.assertEqual(len(docs), 1, path)
                    self.assertLessEqual(set(doc), {"backends", "endpoints"}, path)
                    continue
                for key in ("apiVersion", "kind"):
                    self.assertIsInstance(doc.get(key), str, "%s: %s" % (path, key))
                self.assertIsInstance(doc.get("metadata", {}).get("name"), str, path)

    def test_the_readme_names_every_file(self):
        readme = read(os.path.join(HERE, "README.md"))
        for name in os.listdir(HERE):
            if name != "README.md":
                self.assertIn(name, readme)


class Containerfile(unittest.TestCase):
    def setUp(self):
        self.stages = containerfile_stages()
        self.final = self.stages[-1][1]

    def test_debian_12_multi_stage(self):
        self.assertGreaterEqual(len(self.stages), 2)
        for base, _ in self.stages:
            self.assertRegex(base, r"^debian:12(-slim)?(\s+AS\s+\w+)?$")
        self.assertRegex(self.stages[-1][0], r"^debian:12-slim$")
        copies = [arg for word, arg in self.final if word == "COPY"]
        self.assertTrue(any(a.startswith("--from=") for a in copies), copies)

    def test_runs_as_a_user_that_is_not_root(self):
        users = [arg for word, arg in self.final if word == "USER"]
        self.assertTrue(users, "no USER in the final stage")
        user = users[-1].split(":")[0]
        self.assertNotIn(user, ("root", "0"))
        # By number, so that runAsNonRoot can check it.
        self.assertRegex(user, r"^\d+$")

    def test_entrypoint_starts_serve_with_deploy_watch_and_the_exposed_port(self):
        entry, cmd = image_command()
        argv = entry + cmd
        self.assertEqual(os.path.basename(argv[0]), "serve")
        self.assertEqual(argv[1], "start")
        for flag in ("--foreground", "--watch"):
            self.assertIn(flag, argv)
        self.assertTrue(option(argv, "--deploy").startswith("/"))
        self.assertTrue(option(argv, "--state-dir").startswith("/"))
        http = option(argv, "--http")
        self.assertTrue(http.startswith("0.0.0.0:"), http)
        exposed = [arg for word, arg in self.final if word == "EXPOSE"]
        self.assertEqual([int(p.split("/")[0]) for e in exposed for p in e.split()], [port_of(http)])
        # The state dir is made for the user, private.
        state = option(argv, "--state-dir")
        runs = " ".join(arg for word, arg in self.final if word == "RUN")
        self.assertRegex(runs, r"install -d [^&]*-m 0?700 [^&]*" + re.escape(state))

    def test_the_build_stage_has_the_build_dependencies(self):
        build = [i for _, instructions in self.stages[:-1] for i in instructions]
        wanted = {"build-essential", "cmake", "pkg-config", "node-llhttp"}
        deps = read(os.path.join(ROOT, ".ci", "install-deps.sh"))
        listed = set(re.search(r"PACKAGES=\(([^)]*)\)", deps).group(1).split())
        # Every library's -dev package, except those of the torch plugin and
        # the fuzz targets, which the image leaves out.
        wanted |= {p for p in listed if p.endswith("-dev")} - {"libtorch-dev", "libclang-rt-dev"}
        self.assertLessEqual(wanted, apt_packages(build))
        text = " ".join(arg for _, arg in build)
        for flag in ("-DSERVE_WITH_TORCH=OFF", "-DBUILD_TESTING=OFF"):
            self.assertIn(flag, text)
        self.assertIn("cmake --install", text)

    def test_the_build_stage_copies_every_folder_the_build_reads(self):
        cmake = read(os.path.join(ROOT, "CMakeLists.txt"))
        top = {d for d in os.listdir(ROOT) if os.path.isdir(os.path.join(ROOT, d))}
        needed = set(re.findall(r"([A-Za-z][\w.-]*)/", cmake)) & top
        needed -= {"tests"}  # only with BUILD_TESTING, which the image turns off
        needed = {d for d in needed if not d.startswith("build")}
        copied = set()
        for _, instructions in self.stages[:-1]:
            for word, arg in instructions:
                if word == "COPY" and not arg.startswith("--from"):
                    copied.update(p.rstrip("/") for p in shlex.split(arg)[:-1])
        self.assertIn("CMakeLists.txt", copied)
        self.assertLessEqual(needed, copied)

    def test_the_runtime_stage_has_the_libraries_serve_links(self):
        if SANITIZED or not shutil.which("dpkg") or not shutil.which("ldd"):
            self.skipTest("needs a plain build on Debian (ldd, dpkg)")
        runtime = apt_packages(self.final)
        in_base = {"libc6", "libgcc-s1", "libstdc++6"}  # debian:12-slim has them
        ldd = subprocess.run(["ldd", SERVE_BIN], capture_output=True, text=True, check=True).stdout
        for lib in re.findall(r"=> (/\S+)", ldd):
            owner = None
            for path in (lib, os.path.realpath(lib)):
                p = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
                if p.returncode == 0:
                    owner = p.stdout.split(":")[0]
                    break
            self.assertIsNotNone(owner, "no Debian package holds " + lib)
            if owner not in in_base:
                self.assertIn(owner, runtime, "serve links %s (%s)" % (lib, owner))
        # And nothing to build with.
        self.assertFalse({p for p in runtime if p.endswith("-dev")} | ({"cmake", "build-essential"} & runtime))


class Manifests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.k = Cluster()
        cls.deployments = cls.k.kind("Deployment")

    def test_one_deployment_per_group(self):
        names = sorted(d["metadata"]["name"] for d in self.deployments)
        self.assertEqual(names, ["serve-composed", "serve-model-two"])

    def test_deployments(self):
        entry, _ = image_command()
        images = set()
        for d in self.deployments:
            name = d["metadata"]["name"]
            with self.subTest(deployment=name):
                self.assertEqual(d["apiVersion"], "apps/v1")
                spec, pod = d["spec"], d["spec"]["template"]
                labels = pod["metadata"]["labels"]
                for k, v in spec["selector"]["matchLabels"].items():
                    self.assertEqual(labels.get(k), v)
                c = self.k.container(d)
                images.add(c["image"])
                argv = self.k.argv(d)
                self.assertEqual(argv[:2], entry[:2])  # serve start
                port = port_of(option(argv, "--http"))
                self.assertEqual([p["containerPort"] for p in c["ports"]], [port])
                port_names = {p.get("name"): p["containerPort"] for p in c["ports"]}

                def resolve(p):
                    return port_names.get(p) if isinstance(p, str) else p

                for probe in ("readinessProbe", "livenessProbe"):
                    get = c[probe]["httpGet"]
                    self.assertEqual(get["path"], HEALTH)
                    self.assertEqual(resolve(get["port"]), port)
                # A drain answers 503 on /-/healthz: liveness must outlast it.
                live = c["livenessProbe"]
                self.assertGreaterEqual(live.get("periodSeconds", 10) * live.get("failureThreshold", 3),
                                        pod["spec"]["terminationGracePeriodSeconds"])
                # preStop drains; the grace period outlasts it.
                slept, stop = prestop(c)
                self.assertIsNotNone(stop, "the preStop hook runs no serve stop")
                timeout = float(option(stop, "--timeout"))
                self.assertGreater(pod["spec"]["terminationGracePeriodSeconds"], slept + timeout)
                self.assertEqual(option(stop, "--state-dir"), option(argv, "--state-dir"))
                # Prometheus.
                notes = pod["metadata"].get("annotations", {})
                self.assertEqual(notes.get(PROM + "scrape"), "true")
                self.assertEqual(notes.get(PROM + "port"), str(port))
                self.assertEqual(notes.get(PROM + "path"), "/metrics")
                # Resources and security.
                for kind in ("requests", "limits"):
                    self.assertLessEqual({"cpu", "memory"}, set(c["resources"][kind]))
                self.assertTrue(pod["spec"]["securityContext"]["runAsNonRoot"])
                self.assertNotEqual(pod["spec"]["securityContext"].get("runAsUser"), 0)
                # The state dir is writable where the root filesystem is not.
                if c.get("securityContext", {}).get("readOnlyRootFilesystem"):
                    state = option(argv, "--state-dir")
                    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
                    writable = [m for m in c["volumeMounts"] if not m.get("readOnly") and
                                (state + "/").startswith(m["mountPath"].rstrip("/") + "/") and
                                "emptyDir" in volumes[m["name"]]]
                    self.assertTrue(writable, "the state dir %s is on a read-only filesystem" % state)
                # The deploy file comes from a ConfigMap, mounted whole.
                self.k.deploy_configmap(d)
        self.assertEqual(len(images), 1, images)
        # The README builds the image under the same name.
        readme = read(os.path.join(HERE, "README.md"))
        built = set(re.findall(r"build -f samples/kubernetes/Containerfile -t (\S+)", readme))
        self.assertEqual(built, images)

    def test_services(self):
        for d in self.deployments:
            with self.subTest(deployment=d["metadata"]["name"]):
                s = self.k.service_for(d)
                self.assertEqual(s["metadata"]["name"], d["metadata"]["name"])
                c = self.k.container(d)
                port = port_of(option(self.k.argv(d), "--http"))
                names = {p.get("name"): p["containerPort"] for p in c["ports"]}
                self.assertEqual(len(s["spec"]["ports"]), 1)
                target = s["spec"]["ports"][0].get("targetPort", s["spec"]["ports"][0]["port"])
                self.assertEqual(names.get(target) if isinstance(target, str) else target, port)
                self.assertNotEqual(s["spec"].get("clusterIP"), "None")

    def test_configmaps_hold_the_deploy_files(self):
        for d in self.deployments:
            with self.subTest(deployment=d["metadata"]["name"]):
                cm, key = self.k.deploy_configmap(d)
                self.assertEqual(cm["data"][key], read(deploy_file_for(d["metadata"]["name"])))

    def test_the_remote_url_is_the_model_two_service(self):
        composed = yaml.safe_load(read(deploy_file_for("serve-composed")))
        two = yaml.safe_load(read(deploy_file_for("serve-model-two")))
        service = self.k.service_for(self.k.named("Deployment", "serve-model-two"))
        routes = {e["name"]: e.get("route") for e in two["endpoints"]}
        remotes = [b for b in composed["backends"] if "remote" in b]
        self.assertEqual([b["name"] for b in remotes], ["model_two"])
        urls = remotes[0]["remote"]
        for url in [urls] if isinstance(urls, str) else urls:
            u = urlsplit(url)
            self.assertEqual(u.scheme, "http")
            self.assertEqual(u.hostname, service["metadata"]["name"])
            self.assertEqual(u.port, service["spec"]["ports"][0]["port"])
            self.assertEqual(u.path, routes["model_two"])
        # The composed pods call it through the model_two endpoint, as in
        # samples/composition: handle only, no route.
        ep = [e for e in composed["endpoints"] if e["name"] == "model_two"]
        self.assertEqual(ep[0].get("backend"), "model_two")

    def test_the_autoscaler(self):
        hpas = self.k.kind("HorizontalPodAutoscaler")
        self.assertEqual(len(hpas), 1)
        hpa = hpas[0]
        self.assertEqual(hpa["apiVersion"], "autoscaling/v2")
        ref = hpa["spec"]["scaleTargetRef"]
        self.assertEqual((ref["apiVersion"], ref["kind"], ref["name"]),
                         ("apps/v1", "Deployment", "serve-model-two"))
        target = self.k.named("Deployment", ref["name"])
        # A replicas: in the Deployment would undo the HPA on each apply.
        self.assertNotIn("replicas", target["spec"])
        self.assertLessEqual(hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"])
        adapter = self.k.adapter_metrics()
        backends = {b["name"] for b in yaml.safe_load(read(deploy_file_for(ref["name"])))["backends"]}
        pods = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
        self.assertTrue(pods)
        for p in pods:
            self.assertIn(p["metric"]["name"], adapter)
            selector = p["metric"].get("selector", {}).get("matchLabels", {})
            if "backend" in selector:
                self.assertIn(selector["backend"], backends)
            self.assertEqual(p["target"]["type"], "AverageValue")


class RealServe(unittest.TestCase):
    """The deploy files run: node B as serve-model-two, node A as
    serve-composed with the Service name pointed at node B."""

    @classmethod
    def setUpClass(cls):
        cls.k = Cluster()
        plugins = os.environ.get("SERVE_BUILD_PLUGIN_DIR",
                                 os.path.join(os.path.dirname(SERVE_BIN), "plugins"))
        for name in ("model_one", "model_two", "composed"):
            if not os.path.isfile(os.path.join(plugins, name + ".so")):
                raise AssertionError("%s.so not in %s (set SERVE_BUILD_PLUGIN_DIR)" % (name, plugins))
        cls.old_path = os.environ.get("SERVE_PLUGIN_PATH")
        os.environ["SERVE_PLUGIN_PATH"] = plugins + (":" + cls.old_path if cls.old_path else "")
        cls.dir = tempfile.mkdtemp(prefix="serve-k8s-")

    @classmethod
    def tearDownClass(cls):
        if cls.old_path is None:
            os.environ.pop("SERVE_PLUGIN_PATH", None)
        else:
            os.environ["SERVE_PLUGIN_PATH"] = cls.old_path
        shutil.rmtree(cls.dir, ignore_errors=True)

    def node(self, deployment_name, rewrite=lambda text: text):
        """A server started as the pod would start: the ConfigMap's file at
        the name --deploy reads, --watch, and the container's other
        arguments (the address and the state dir are the test's)."""
        d = self.k.named("Deployment", deployment_name)
        argv = self.k.argv(d)
        cm, key = self.k.deploy_configmap(d)
        folder = os.path.join(self.dir, deployment_name)
        os.makedirs(folder)
        path = os.path.join(folder, key)
        with open(path, "w") as f:
            f.write(rewrite(cm["data"][key]))
        extra, skip = [], {"start", "--foreground", "--http", "--state-dir", "--deploy", "--watch"}
        i = 1
        while i < len(argv):
            if argv[i] in ("--http", "--state-dir", "--deploy"):
                i += 2
                continue
            if argv[i] not in skip:
                extra.append(argv[i])
            i += 1
        self.assertIn("--watch", argv)
        server = Server("--deploy", path, "--watch", *extra)
        self.addCleanup(server.close)
        # serve deploy of the same file: accepted, and nothing to change.
        out = server.cli("deploy", path).stdout
        self.assertIn("no changes", out)
        for probe in ("readinessProbe", "livenessProbe"):
            r = server.get(self.k.container(d)[probe]["httpGet"]["path"])
            self.assertEqual((r.status, r.body.strip()), (200, b"ok"))
        return d, server

    def drain(self, deployment, server):
        """The preStop hook's serve stop, on this server's state dir."""
        _, stop = prestop(self.k.container(deployment))
        argv = list(stop)
        argv[0] = SERVE_BIN
        i = argv.index("--state-dir")
        argv[i + 1] = server.state_dir
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("stopped", p.stdout)
        server.pid = None
        server.assert_log_clean()

    def test_the_two_groups_compose_across_nodes(self):
        two_dep, two = self.node("serve-model-two")
        routes = {e["name"]: e.get("route") for e in
                  yaml.safe_load(read(deploy_file_for("serve-model-two")))["endpoints"]}
        r = two.post(routes["model_two"], b"hello")
        self.assertEqual((r.status, r.body), (200, b"hello"))

        composed = yaml.safe_load(read(deploy_file_for("serve-composed")))
        urls = [b["remote"] for b in composed["backends"] if "remote" in b][0]
        urls = [urls] if isinstance(urls, str) else urls

        def to_node_b(text):
            for url in urls:
                u = urlsplit(url)
                local = urlunsplit((u.scheme, "127.0.0.1:%d" % two.port, u.path, "", ""))
                self.assertIn(url, text)
                text = text.replace(url, local)
            return text

        one_dep, one = self.node("serve-composed", to_node_b)
        route = [e["route"] for e in composed["endpoints"] if e["name"] == "composed"][0]
        used = []
        for i in range(60):
            r = one.post(route, b"data %d" % i)
            self.assertEqual(r.status, 200, r.body)
            answer = r.json()
            self.assertIn(answer["model_used"], (1, 2))
            used.append(answer["model_used"])
            if 1 in used and 2 in used:
                break
        self.assertEqual(set(used), {1, 2}, "composed never (or always) called model_two")
        # model_used 2 went to node B, through the remote backend.
        metrics_one = one.get("/metrics").body.decode()
        forwarded = re.search(r'^serve_remote_requests_total\{backend="model_two",code="200"\} (\d+)$',
                              metrics_one, re.M)
        self.assertIsNotNone(forwarded, metrics_one[-2000:])
        self.assertEqual(int(forwarded.group(1)), used.count(2))
        metrics_two = two.get("/metrics").body.decode()
        took = re.search(r'^serve_backend_requests_total\{backend="model_two"\} (\d+)$', metrics_two, re.M)
        self.assertEqual(int(took.group(1)), used.count(2) + 1)  # + the direct POST
        # The series the autoscaler's metric reads is there, with the
        # backend label the HPA selects.
        hpa = self.k.kind("HorizontalPodAutoscaler")[0]
        adapter = self.k.adapter_metrics()
        for m in hpa["spec"]["metrics"]:
            series = adapter[m["pods"]["metric"]["name"]]
            labels = m["pods"]["metric"].get("selector", {}).get("matchLabels", {})
            pattern = r"^%s\{%s\} \S+$" % (re.escape(series), ",".join(
                '%s="%s"' % (k, re.escape(v)) for k, v in sorted(labels.items())))
            self.assertRegex(metrics_two, re.compile(pattern, re.M))
        # The drain of each pod's preStop hook.
        self.drain(one_dep, one)
        self.drain(two_dep, two)


if __name__ == "__main__":
    unittest.main()
