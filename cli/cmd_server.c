/* cmd_server.c - serve start, serve stop, serve status. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../runtime/access_log.h"
#include "../runtime/log.h"
#include "../runtime/mp.h"
#include "../runtime/server.h"
#include "../runtime/spec.h"
#include "../runtime/state_dir.h"
#include "../runtime/supervisor.h"
#include "cli.h"

/* HOST:PORT, [V6]:PORT or :PORT into host (static storage) and port. */
static bool parse_listen(const char *arg, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(arg, ':');
    if (!colon) return false;
    size_t n = (size_t)(colon - arg);
    const char *h = arg;
    if (n >= 2 && arg[0] == '[' && arg[n - 1] == ']') {
        h++;
        n -= 2;
    }
    if (n >= hostlen) return false;
    memcpy(host, h, n);
    host[n] = '\0';
    if (!*host) snprintf(host, hostlen, "127.0.0.1");
    uint32_t p;
    if (!cli_parse_u32(colon + 1, 0, 65535, &p)) return false;
    *port = (int)p;
    return true;
}

struct start_report {
    int fd;       /* daemon: pipe to the waiting parent; foreground: -1 */
};

static void report_started(const char *url, const char *message, void *arg)
{
    struct start_report *r = arg;
    if (r->fd < 0) {
        if (url) {
            printf("serve: listening on %s\n", url);
            fflush(stdout);
        } else {
            fprintf(stderr, "serve: start: %s\n", message);
        }
        return;
    }
    char line[4200];
    int n = snprintf(line, sizeof line, "%s%s\n", url ? "" : "!", url ? url : message);
    ssize_t ignored = write(r->fd, line, (size_t)(n < (int)sizeof line ? n : (int)sizeof line - 1));
    (void)ignored;
    close(r->fd);
    r->fd = -1;
}

static int run_start(int argc, char **argv, const char *state_dir)
{
    static const struct option long_options[] = {
        {"http", required_argument, NULL, 'H'},
        {"http-threads", required_argument, NULL, 't'},
        {"foreground", no_argument, NULL, 'f'},
        {"max-body", required_argument, NULL, 'b'},
        {"max-header", required_argument, NULL, 'm'},
        {"max-body-memory", required_argument, NULL, 'B'},
        {"stream-buffer", required_argument, NULL, 'Z'},
        {"idle-timeout", required_argument, NULL, 'i'},
        {"read-timeout", required_argument, NULL, 'r'},
        {"max-connections", required_argument, NULL, 'C'},
        {"log-level", required_argument, NULL, 'l'},
        {"deploy", required_argument, NULL, 'd'},
        {"watch", no_argument, NULL, 'W'},
        {"access-log", required_argument, NULL, 'a'},
        {"access-log-format", required_argument, NULL, 'F'},
        {"no-metrics", no_argument, NULL, 'M'},
        {0, 0, 0, 0}};
    struct server_options o;
    server_options_default(&o);
    o.state_dir = state_dir;
    bool foreground = false, watch = false;
    char host[256];
    uint32_t u;
    uint64_t size;
    int c;
    optind = 1;
    while ((c = cli_getopt("start", argc, argv, long_options)) != -1) {
        switch (c) {
        case 'H':
            if (!parse_listen(optarg, host, sizeof host, &o.http_port))
                return cli_fail("start", "--http %s: expected HOST:PORT, e.g. 127.0.0.1:8000", optarg);
            o.http_host = host;
            break;
        case 't':
            if (!cli_parse_u32(optarg, 1, 256, &u))
                return cli_fail("start", "--http-threads %s: expected 1..256", optarg);
            o.http_threads = (int)u;
            break;
        case 'f': foreground = true; break;
        case 'd': o.deploy_file = optarg; break;
        case 'W': watch = true; break;
        case 'a': o.access_log = optarg; break;
        case 'M': o.no_metrics = true; break;
        case 'F':
            if (strcmp(optarg, "combined") == 0) o.access_log_format = ACCESS_LOG_COMBINED;
            else if (strcmp(optarg, "json") == 0) o.access_log_format = ACCESS_LOG_JSON;
            else return cli_fail("start", "--access-log-format %s: expected combined or json", optarg);
            break;
        case 'b':
            if (!cli_parse_u32(optarg, 1, 1u << 30, &u))
                return cli_fail("start", "--max-body %s: expected bytes, 1..1073741824", optarg);
            o.max_body = u;
            break;
        case 'B':
            if (!size_parse(optarg, &size) || size < (1u << 20) || size > SIZE_MAX)
                return cli_fail("start", "--max-body-memory %s: expected a size from 1M, in bytes "
                                "or with K, M or G (512M, 2G)", optarg);
            o.max_body_memory = (size_t)size;
            break;
        case 'Z':
            if (!size_parse(optarg, &size) || size < 4096 || size > (1ull << 30))
                return cli_fail("start", "--stream-buffer %s: expected a size from 4K to 1G "
                                "(64K, 1M)", optarg);
            o.stream_buffer = (size_t)size;
            break;
        case 'm':
            if (!cli_parse_u32(optarg, 256, 16u << 20, &u))
                return cli_fail("start", "--max-header %s: expected bytes, 256..16777216", optarg);
            o.max_header = u;
            break;
        case 'i':
            if (!cli_parse_u32(optarg, 1, 86400, &u))
                return cli_fail("start", "--idle-timeout %s: expected seconds, 1..86400", optarg);
            o.idle_timeout_s = (int)u;
            break;
        case 'r':
            if (!cli_parse_u32(optarg, 1, 86400, &u))
                return cli_fail("start", "--read-timeout %s: expected seconds, 1..86400", optarg);
            o.read_timeout_s = (int)u;
            break;
        case 'C':
            if (!cli_parse_u32(optarg, 1, 10000000, &u))
                return cli_fail("start", "--max-connections %s: expected 1..10000000", optarg);
            o.max_connections = u;
            break;
        case 'l': {
            int level = serve__log_level_from_name(optarg);
            if (level < 0)
                return cli_fail("start", "--log-level %s: expected error, warn, info or debug", optarg);
            serve__log_set_level(level);
            break;
        }
        default: return cli_fail("start", "unknown option; see `serve start --help`");
        }
    }
    if (optind < argc) return cli_fail("start", "unexpected argument '%s'", argv[optind]);
    if (watch && !o.deploy_file)
        return cli_fail("start", "--watch re-applies the file of --deploy FILE: give both");
    if (watch) o.watch_file = o.deploy_file;

    struct start_report report = {.fd = -1};
    o.on_started = report_started;
    o.on_started_arg = &report;
    /* The supervisor runs the server in a child process, and again when it
     * dies (runtime/supervisor.h). */
    if (foreground) return supervisor_run(&o, -1);

    /* Daemon: the child supervises; the parent waits on a pipe for the first
     * word of the server, so `serve start` fails loudly when it cannot. */
    char log_path[4200];
    snprintf(log_path, sizeof log_path, "%s/serve.log", state_dir);
    int fds[2];
    if (pipe(fds) != 0) return cli_fail("start", "pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return cli_fail("start", "fork: %s", strerror(errno));
    if (pid == 0) {
        close(fds[0]);
        setsid();
        int devnull = open("/dev/null", O_RDWR);
        /* The state dir must be trusted before the log is opened in it. */
        char why[4096];
        int log = -1;
        if (state_dir_prepare(state_dir, why, sizeof why)) {
            log = state_dir_open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
            if (log < 0)
                snprintf(why, sizeof why, "cannot open log %s: %s", log_path,
                         state_dir_strerror(errno));
        }
        if (log < 0) {
            char line[4200];
            int n = snprintf(line, sizeof line, "!%s\n", why);
            ssize_t ignored = write(fds[1], line, n < (int)sizeof line ? (size_t)n : sizeof line - 1);
            (void)ignored;
            _exit(1);
        }
        dup2(devnull, STDIN_FILENO);
        dup2(log, STDOUT_FILENO);
        dup2(log, STDERR_FILENO);
        close(devnull);
        close(log);
        report.fd = fds[1];
        _exit(supervisor_run(&o, fds[1]));
    }
    close(fds[1]);
    /* One line: the pipe stays open in a server process forked before the
     * supervisor reported. */
    char line[4200];
    size_t len = 0;
    while (!memchr(line, '\n', len) && len < sizeof line - 1) {
        ssize_t n = read(fds[0], line + len, sizeof line - 1 - len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        len += (size_t)n;
    }
    close(fds[0]);
    line[len] = '\0';
    line[strcspn(line, "\n")] = '\0';
    if (len == 0 || line[0] == '!') {
        int status = 0;
        waitpid(pid, &status, 0);
        if (len == 0)
            return cli_fail("start", "the server exited while starting; see %s", log_path);
        return cli_fail("start", "%s", line + 1);
    }
    printf("serve: listening on %s (pid %ld, state dir %s, log %s)\n", line, (long)pid,
           state_dir, log_path);
    return 0;
}

const struct cli_command cmd_start = {
    .name = "start",
    .usage = "start [--http HOST:PORT] [--http-threads N] [--foreground] [--deploy FILE [--watch]] [options]",
    .summary = "Start a server; restores the backends and endpoints of its state dir.",
    .help = "A small supervisor process stays above the server process: it holds the\n"
            "listening socket and starts the server again, with its state, if it dies.\n\n"
            "Options:\n"
            "  --http HOST:PORT    address to listen on (default 127.0.0.1:8000; port 0 picks one)\n"
            "  --http-threads N    HTTP I/O threads (default: one per core)\n"
            "  --foreground        stay in the foreground and log to stderr\n"
            "                      (default: run as a daemon, log to STATE_DIR/serve.log)\n"
            "  --max-body BYTES    largest request body; larger gets 413 (default 16777216)\n"
            "  --max-header BYTES  largest request head; larger gets 431 and a close\n"
            "                      (default 65536)\n"
            "  --max-body-memory SIZE  request bodies held in memory at once, over all\n"
            "                      connections (at least 1M: 512M, 2G); past it 503 and a close\n"
            "                      (default: 1/16 of the machine's memory, 64M..1G)\n"
            "  --stream-buffer SIZE  per streamed answer: what a plugin has written and the\n"
            "                      client not yet read; past it writes return SERVE_EAGAIN\n"
            "                      (4K..1G; default 256K)\n"
            "  --idle-timeout S    close idle keep-alive connections after S seconds (default 60)\n"
            "  --read-timeout S    close a connection whose request (head and body) has not\n"
            "                      arrived whole S seconds after its first byte (default 30)\n"
            "  --max-connections N answer 503 and close connections past N open ones\n"
            "                      (default: the open-files limit, raised to its maximum, less 256)\n"
            "  --log-level LEVEL   error, warn, info or debug (default info)\n"
            "  --deploy FILE       after restoring the state dir, apply this deploy file\n"
            "                      (as `serve deploy FILE`); a bad file stops the start\n"
            "  --watch             with --deploy: apply FILE again whenever it changes\n"
            "                      (polled every 500 ms); a bad version is refused whole\n"
            "                      and logged, and the server keeps what it runs\n"
            "  --access-log FILE   one line per request (HTTP and handle calls); - is stdout\n"
            "                      (the log file when daemonised); off by default\n"
            "  --access-log-format combined|json\n"
            "                      combined log format with serve's fields, or JSON (default combined)\n"
            "  --no-metrics        stop recording histograms and per-endpoint counts (to measure\n"
            "                      their cost); /metrics then shows zeros for them\n",
    .run = run_start,
};

/* The server holds an flock on STATE_DIR/serve.pid for as long as it runs. */
static bool server_gone(const char *state_dir)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/serve.pid", state_dir);
    int fd = state_dir_open(path, O_RDONLY, 0);
    if (fd < 0) return true;
    bool gone = flock(fd, LOCK_SH | LOCK_NB) == 0;
    close(fd);
    return gone;
}

static int run_stop(int argc, char **argv, const char *state_dir)
{
    static const struct option long_options[] = {{"timeout", required_argument, NULL, 't'},
                                                 {0, 0, 0, 0}};
    double timeout = 30;
    int c;
    optind = 1;
    while ((c = cli_getopt("stop", argc, argv, long_options)) != -1) {
        if (c != 't' || !cli_parse_double(optarg, 0, 86400, &timeout))
            return cli_fail("stop", "usage: serve stop [--timeout SECONDS]");
    }
    struct cli_request req;
    cli_request_begin(&req, "stop", 1);
    msgpack_packer *pk = &req.pk;
    mp_pack_key(pk, "timeout_s");
    msgpack_pack_double(pk, timeout);
    msgpack_unpacked reply;
    const msgpack_object *result;
    bool ok = cli_send("stop", state_dir, &req, &reply, &result);
    if (!ok) return 1;
    long pid = (long)cli_uint(result, "pid");
    cli_reply_free(&reply);
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        if (server_gone(state_dir)) break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec > timeout + 15)
            return cli_fail("stop", "server (pid %ld) is still running after %g s", pid, timeout + 15);
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    printf("serve: stopped (pid %ld)\n", pid);
    return 0;
}

const struct cli_command cmd_stop = {
    .name = "stop",
    .usage = "stop [--timeout SECONDS]",
    .summary = "Stop the server gracefully: every accepted request is answered first.",
    .help = "Stops accepting connections, answers every request already accepted\n"
            "(queued or executing), then exits. Waits until the server is gone.\n\n"
            "Options:\n"
            "  --timeout S         after S seconds (default 30) requests still queued get 503;\n"
            "                      stop gives up waiting 15 s after that and exits 1\n",
    .run = run_stop,
};

static int status_once(const char *state_dir, bool json)
{
    struct cli_request req;
    cli_request_begin(&req, "status", 0);
    msgpack_unpacked reply;
    const msgpack_object *result;
    bool ok = cli_send("status", state_dir, &req, &reply, &result);
    if (!ok) return 1;
    if (json) {
        cli_print_json(result);
        printf("\n");
    } else {
        char url[256];
        const msgpack_object *live = mp_get(result, "live");
        printf("serve at %s, pid %llu, up %llu s, state dir %s\n",
               cli_str(result, "url", url, sizeof url), (unsigned long long)cli_uint(result, "pid"),
               (unsigned long long)cli_uint(result, "uptime_s"), state_dir);
        /* pid is the supervisor's; the server process under it may differ. */
        unsigned long long restarts = cli_uint(result, "restarts");
        printf("server process pid %llu, restarted %llu time%s\n",
               (unsigned long long)cli_uint(result, "server_pid"), restarts,
               restarts == 1 ? "" : "s");
        double window_s = cli_double(live, "window_s");
        printf("%llu request(s) in progress; ", (unsigned long long)cli_uint(result, "outstanding_requests"));
        /* The window needs two samples, a second apart. */
        if (window_s > 0) printf("live figures over the last %.0f s\n\n", window_s);
        else printf("no live figures yet (they start a second after the server)\n\n");
        cli_print_backends_live(mp_get(result, "backends"), live);
        printf("\n");
        cli_print_endpoints_live(mp_get(result, "endpoints"), live);
    }
    cli_reply_free(&reply);
    return 0;
}

static int run_status(int argc, char **argv, const char *state_dir)
{
    static const struct option long_options[] = {{"json", no_argument, NULL, 'j'},
                                                 {"watch", no_argument, NULL, 'w'},
                                                 {0, 0, 0, 0}};
    bool json = false, watch = false;
    int c;
    optind = 1;
    while ((c = cli_getopt("status", argc, argv, long_options)) != -1) {
        if (c == 'j') json = true;
        else watch = true;
    }
    if (!watch) return status_once(state_dir, json);
    /* Refresh in place on a terminal; elsewhere one report a second. */
    bool tty = isatty(STDOUT_FILENO);
    for (;;) {
        if (tty) printf("\033[H\033[2J");
        if (status_once(state_dir, json) != 0) return 1;
        fflush(stdout);
        sleep(1);
    }
}

const struct cli_command cmd_status = {
    .name = "status",
    .usage = "status [--json] [--watch]",
    .summary = "Show the server's address, uptime, backends and endpoints, with live figures.",
    .help = "Live figures cover the last 10 seconds: requests/s and mean batch size per\n"
            "backend, requests/s and p50/p99 latency per endpoint (the upper bound of the\n"
            "histogram bucket that holds them), queue depth and busy replicas now.\n\n"
            "Options:\n"
            "  --json              print one JSON object instead of tables\n"
            "  --watch             refresh every second (in place on a terminal) until Ctrl-C\n",
    .run = run_status,
};
