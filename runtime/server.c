/* server.c - server lifecycle: lock the state dir, restore the persisted
 * state, serve, and stop gracefully. */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

#include "clock.h"
#include "crash_report.h"
#include "deploy_file.h"
#include "dispatch.h"
#include "access_log.h"
#include "log.h"
#include "metrics.h"
#include "plugin_store.h"
#include "server_internal.h"
#include "state_dir.h"
#include "stream.h"

void server_options_default(struct server_options *o)
{
    memset(o, 0, sizeof *o);
    o->http_host = "127.0.0.1";
    o->http_port = 8000;
    o->max_body = 16u * 1024 * 1024;
    o->max_header = 64u * 1024;
    o->idle_timeout_s = 60;
    o->read_timeout_s = 30;
    o->listen_fd = -1;
    o->lock_fd = -1;
}

/* Request bodies in memory at once, by default: a sixteenth of the
 * machine's memory, between 64 MiB and 1 GiB. */
static size_t default_body_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    size_t memory = pages > 0 && page > 0 ? (size_t)pages * (size_t)page : 0;
    size_t budget = memory / 16;
    if (budget < (64u << 20)) budget = 64u << 20;
    if (budget > (1u << 30)) budget = 1u << 30;
    return budget;
}

/* Open connections need a file each: take the hard limit, and leave room
 * below it for plugins, the state file, the log and the control socket, so
 * that the connection limit answers before accept() starts failing. */
static size_t connection_capacity(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur == RLIM_INFINITY) return 0;
    return rl.rlim_cur > 512 ? (size_t)rl.rlim_cur - 256 : (size_t)rl.rlim_cur / 2;
}

static void started(const struct server_options *o, const char *url, const char *msg)
{
    if (o->on_started) o->on_started(url, msg, o->on_started_arg);
}

static bool restore(struct server *s, char *err, size_t errlen)
{
    if (!deployment_load(&s->declared, s->state_path, err, errlen)) return false;
    s->live = calloc(s->declared.backend_count + 1, sizeof *s->live);
    if (!s->live) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    char store[4200];
    snprintf(store, sizeof store, "%s/plugins", s->options.state_dir);
    for (size_t i = 0; i < s->declared.backend_count; i++) {
        char why[2048];
        /* The copy the state names; a state written before copies were
         * kept gets one of the file as it is now. */
        if (!plugin_store_import(store, &s->declared.backends[i], why, sizeof why) ||
            !server_add_live_backend(s, &s->declared.backends[i], why, sizeof why)) {
            snprintf(err, errlen, "cannot restore backend %s from %s: %s",
                     s->declared.backends[i].name, s->state_path, why);
            return false;
        }
    }
    plugin_store_sweep(store, &s->declared);
    return server_publish_routes(s);
}

static size_t outstanding(struct server *s)
{
    size_t n = http_server_outstanding(s->http);
    return n;
}

static void wait_outstanding(struct server *s, uint64_t deadline_ns)
{
    while (outstanding(s) > 0 && serve__now_ns() < deadline_ns) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* Stop accepting, answer everything accepted, then take the backends down.
 * When the time runs out, queued requests get 503 instead. */
static void graceful_stop(struct server *s)
{
    double timeout_s = atomic_load(&s->stop_timeout_s);
    LOG_INFO("stopping: draining %zu outstanding request(s), at most %g s",
             outstanding(s), timeout_s);
    control_close(s);
    http_server_drain(s->http);
    uint64_t started = serve__now_ns();
    uint64_t deadline = started + (uint64_t)(timeout_s * 1e9);
    wait_outstanding(s, deadline);
    /* A node behind a balancer (it polls /-/healthz) goes on refusing for
     * two of its intervals: what the balancer sends meanwhile is refused
     * unrouted (503, X-Serve-Unprocessed), which it can send elsewhere,
     * until its checks take the node out. Exiting at once would reset
     * connections it just opened, with requests on them. */
    uint64_t linger = started + http_server_drain_linger_ns(s->http);
    if (linger > deadline) linger = deadline;
    if (serve__now_ns() < linger)
        LOG_INFO("stopping: refusing for %.1f s more, until the balancer that polls /-/healthz "
                 "has seen the drain", (double)(linger - serve__now_ns()) / 1e9);
    while (serve__now_ns() < linger) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (outstanding(s) > 0) {
        LOG_WARN("stop timeout: answering %zu queued request(s) with 503", outstanding(s));
        for (size_t i = 0; i < s->declared.backend_count; i++)
            backend_reject_queued(s->live[i]);
        wait_outstanding(s, serve__now_ns() + 2000000000u);
    }
    for (size_t i = 0; i < s->declared.backend_count; i++) backend_reject_queued(s->live[i]);
    /* Backends stop before the HTTP threads so that answers given while a
     * plugin's destroy runs still reach their clients. */
    for (size_t i = 0; i < s->declared.backend_count; i++) backend_stop(s->live[i]);
    wait_outstanding(s, serve__now_ns() + 1000000000u);
    http_server_stop(s->http);
    s->http = NULL;
}

static void cleanup(struct server *s)
{
    control_stop(s);
    if (s->http) {
        for (size_t i = 0; s->live && i < s->declared.backend_count; i++)
            if (s->live[i]) backend_stop(s->live[i]);
        http_server_stop(s->http);
    }
    dispatch_shutdown();
    if (s->routes) routes_release(s->routes);
    for (size_t i = 0; s->live && i < s->declared.backend_count; i++)
        if (s->live[i]) backend_release(s->live[i]);
    free(s->live);
    deployment_free(&s->declared);
}

int server_run(const struct server_options *o)
{
    struct server server = {.options = *o};
    struct server *s = &server;
    atomic_init(&s->stop_timeout_s, 30.0);
    s->started_at = time(NULL);
    snprintf(s->state_path, sizeof s->state_path, "%s/state.msgpack", o->state_dir);
    snprintf(s->socket_path, sizeof s->socket_path, "%s/control.sock", o->state_dir);

    /* Every thread inherits this mask: only the main thread's sigwait sees
     * SIGTERM and SIGINT; a client closing its socket is no signal at all. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    crash_report_install();

    char err[4096];
    int lock_fd = -1;
    metrics_enabled = !o->no_metrics;
    if (!state_dir_prepare(o->state_dir, err, sizeof err)) goto fail;
    if (o->access_log && !access_log_open(o->access_log, o->access_log_format, err, sizeof err))
        goto fail;
    /* A supervised server shares its supervisor's lock (and its open file):
     * the state dir is free once both processes are gone. */
    if (o->lock_fd >= 0) lock_fd = o->lock_fd;
    else lock_fd = state_dir_lock(o->state_dir, err, sizeof err);
    if (lock_fd < 0) goto fail;
    struct http_options http = {.host = o->http_host, .port = o->http_port,
                                .threads = o->http_threads, .max_body = o->max_body,
                                .max_header = o->max_header,
                                .idle_timeout_s = o->idle_timeout_s,
                                .read_timeout_s = o->read_timeout_s,
                                .max_connections = o->max_connections,
                                .max_body_memory = o->max_body_memory ? o->max_body_memory
                                                                      : default_body_memory(),
                                .use_listen_fd = o->listen_fd >= 0,
                                .listen_fd = o->listen_fd};
    stream_set_bound(o->stream_buffer);
    if (http.max_body_memory < http.max_body)
        LOG_WARN("--max-body-memory %zu is less than --max-body %zu: a body over %zu bytes gets 413",
                 http.max_body_memory, http.max_body, http.max_body_memory);
    size_t capacity = connection_capacity();
    if (!http.max_connections) http.max_connections = capacity;
    else if (capacity && http.max_connections > capacity)
        LOG_WARN("--max-connections %zu is over what the open-files limit allows (%zu); "
                 "past that, connections wait in the listen queue",
                 http.max_connections, capacity);
    if (http.threads <= 0) http.threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    s->http = http_server_start(&http, err, sizeof err);
    if (!s->http) goto fail;
    /* The URL is set before the control thread starts: it reads it. */
    const char *host = o->http_host;
    bool v6 = strchr(host, ':') != NULL;
    snprintf(s->url, sizeof s->url, "http://%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "",
             http_server_port(s->http));
    if (!restore(s, err, sizeof err)) goto fail;
    if (o->deploy_file) {
        struct deployment desired;
        if (o->watch_file) deploy_watch_mark_take(o->watch_file, &s->watch_mark);
        if (!deploy_file_load(o->deploy_file, &desired, err, sizeof err) ||
            !server_apply(s, &desired, err, sizeof err))
            goto fail;
        LOG_INFO("deployed %s", o->deploy_file);
    }
    /* Only now, with the routes of the state (and deploy file) in place. */
    http_server_accept(s->http);
    /* Read before the control thread starts: it changes them. */
    size_t backends = s->declared.backend_count, endpoints = s->declared.endpoint_count;
    if (!control_start(s, err, sizeof err)) goto fail;
    LOG_INFO("listening on %s with %d HTTP thread(s); state dir %s; %zu backend(s), %zu endpoint(s) restored",
             s->url, http.threads, o->state_dir, backends, endpoints);
    started(o, s->url, NULL);

    /* The main thread waits for a stop signal and, meanwhile, writes the
     * access log out at least every 200 ms. */
    int sig = -1;
    while (sig < 0) {
        struct timespec tick = {0, 200 * 1000 * 1000};
        sig = sigtimedwait(&stop_signals, NULL, &tick);
        access_log_flush();
    }
    LOG_INFO("received %s", sig == SIGINT ? "SIGINT" : "SIGTERM");
    if (o->on_stopping) o->on_stopping(o->on_started_arg);
    graceful_stop(s);
    cleanup(s);
    metrics_shutdown();
    access_log_close();
    LOG_INFO("stopped");
    /* lock_fd stays open: the lock goes with the process, after exit-time
     * checks (LeakSanitizer) have written their report, so `serve stop`
     * returns only when the server is entirely gone. */
    return 0;
fail:
    access_log_close();
    LOG_ERROR("%s", err);
    started(o, NULL, err);
    cleanup(s);
    if (lock_fd >= 0 && lock_fd != o->lock_fd) close(lock_fd);
    return 1;
}
