/* supervisor.c - starts the server process, and again when it dies (see
 * supervisor.h).
 *
 * A server process tells its supervisor what it does through a pipe, one
 * line per event: "URL" once it serves, "!MESSAGE" when it gave up
 * starting, "stopping" when a stop began. An exit after "stopping", or
 * before "URL", is on purpose: the supervisor exits with the same status.
 * Any other end is a death, and the server is started again. */
#include "supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "http_server.h"
#include "log.h"
#include "signal_name.h"
#include "state_dir.h"

#define FIRST_BACKOFF_MS 100
#define MAX_BACKOFF_MS 5000
#define STABLE_AFTER_NS (60 * 1000000000ull)

struct server_process {
    pid_t pid;              /* 0: none runs */
    int report_fd;          /* the read end of its report pipe; -1: none */
    bool serving;           /* it said "URL" */
    bool stopping;          /* it said "stopping" */
    uint64_t forked_at_ns;
    char partial[4200];     /* a report line not read whole yet */
    size_t partial_len;
};

struct supervisor {
    const struct server_options *options;
    pid_t pid;
    int lock_fd;
    int listen_fd;
    int signal_fd;
    int close_in_server;
    sigset_t server_mask;   /* the signal mask a server process starts with */
    struct server_process server;
    bool reported;          /* options->on_started was called */
    bool is_server;         /* this is a server process, forked from here */
    bool stopping;          /* SIGTERM or SIGINT came */
    unsigned restarts;
    unsigned backoff_ms;
    uint64_t restart_at_ns; /* 0: no restart pending */
};

/* -- in the server process ------------------------------------------------ */

struct reporter {
    int fd;
};

/* Report lines are shorter than PIPE_BUF, so each write is whole. */
static void report(struct reporter *r, const char *prefix, const char *text)
{
    char line[4000];
    int n = snprintf(line, sizeof line, "%s%s", prefix, text);
    if (n < 0) return;
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t ignored = write(r->fd, line, (size_t)n);
    (void)ignored;
}

static void report_started(const char *url, const char *message, void *arg)
{
    report(arg, url ? "" : "!", url ? url : message);
}

static void report_stopping(void *arg) { report(arg, "stopping", ""); }

static int serve_in_child(struct supervisor *sv, int report_fd)
{
    /* Die with the supervisor: a server left alone would hold the port and
     * the state dir with nobody to restart or stop it. The supervisor may
     * have died before the prctl: then the parent is someone else. */
    sv->is_server = true;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != sv->pid) _exit(1);
    close(sv->signal_fd);
    if (sv->close_in_server >= 0) close(sv->close_in_server);
    sigprocmask(SIG_SETMASK, &sv->server_mask, NULL);

    static struct reporter reporter;
    reporter.fd = report_fd;
    struct server_options o = *sv->options;
    o.listen_fd = sv->listen_fd;
    o.lock_fd = sv->lock_fd;
    o.supervisor_pid = (long)sv->pid;
    o.restarts = sv->restarts;
    if (sv->restarts > 0) o.deploy_file = NULL; /* the state dir has it */
    o.on_started = report_started;
    o.on_stopping = report_stopping;
    o.on_started_arg = &reporter;
    return server_run(&o);
}

/* -- in the supervisor ----------------------------------------------------- */

/* Forks a server process. Returns its pid in the supervisor, 0 in the
 * server process (with *report_fd its end of the pipe), -1 on failure. */
static pid_t fork_server(struct supervisor *sv, int *report_fd)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        LOG_ERROR("cannot start a server process: pipe: %s", strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        LOG_ERROR("cannot start a server process: fork: %s", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        close(fds[0]);
        *report_fd = fds[1];
        return 0;
    }
    close(fds[1]);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    sv->server = (struct server_process){.pid = pid, .report_fd = fds[0],
                                         .forked_at_ns = serve__now_ns()};
    return pid;
}

/* The one call of options->on_started. The caller's close_in_server
 * descriptor is closed by then (cmd_server.c's on_started closes it), and
 * its number may be reused: server processes forked later leave it. */
static void started(struct supervisor *sv, const char *url, const char *message)
{
    if (sv->reported) return;
    sv->reported = true;
    sv->close_in_server = -1;
    if (sv->options->on_started)
        sv->options->on_started(url, message, sv->options->on_started_arg);
}

static void on_report(struct supervisor *sv, const char *line)
{
    struct server_process *p = &sv->server;
    if (strcmp(line, "stopping") == 0) {
        p->stopping = true;
    } else if (line[0] == '!') {
        started(sv, NULL, line + 1);
    } else {
        p->serving = true;
        if (sv->reported)
            LOG_INFO("server process %ld serves again (restart %u)", (long)p->pid, sv->restarts);
        started(sv, line, NULL);
    }
}

/* Reads every whole line the server process wrote; at its end of file,
 * closes the pipe. */
static void read_reports(struct supervisor *sv)
{
    struct server_process *p = &sv->server;
    while (p->report_fd >= 0) {
        ssize_t n = read(p->report_fd, p->partial + p->partial_len,
                         sizeof p->partial - 1 - p->partial_len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return;
        if (n <= 0) {
            close(p->report_fd);
            p->report_fd = -1;
            return;
        }
        p->partial_len += (size_t)n;
        char *start = p->partial, *nl;
        while ((nl = memchr(start, '\n', p->partial_len - (size_t)(start - p->partial)))) {
            *nl = '\0';
            on_report(sv, start);
            start = nl + 1;
        }
        p->partial_len -= (size_t)(start - p->partial);
        memmove(p->partial, start, p->partial_len);
        if (p->partial_len == sizeof p->partial - 1) p->partial_len = 0; /* no newline: drop */
    }
}

static void schedule_restart(struct supervisor *sv, uint64_t ran_ns)
{
    if (ran_ns >= STABLE_AFTER_NS) sv->backoff_ms = FIRST_BACKOFF_MS;
    unsigned delay_ms = sv->backoff_ms;
    sv->backoff_ms = delay_ms * 2 > MAX_BACKOFF_MS ? MAX_BACKOFF_MS : delay_ms * 2;
    if (delay_ms > FIRST_BACKOFF_MS)
        LOG_WARN("the server process died again within a minute: restarting it in %u ms",
                 delay_ms);
    sv->restart_at_ns = serve__now_ns() + (uint64_t)delay_ms * 1000000u;
}

/* What to do about the end of the server process: -1 to restart it, or the
 * supervisor's exit status. */
static int on_server_end(struct supervisor *sv, int status)
{
    read_reports(sv); /* what it said before it ended comes first */
    struct server_process *p = &sv->server;
    long pid = (long)p->pid;
    uint64_t ran_ns = serve__now_ns() - p->forked_at_ns;
    if (p->report_fd >= 0) close(p->report_fd);
    p->report_fd = -1;
    p->pid = 0;

    bool on_purpose = sv->stopping || p->stopping;
    if (WIFEXITED(status)) {
        int code = WEXITSTATUS(status);
        /* Before it served, an exit is a failed start: retrying would fail
         * the same way. */
        if (on_purpose || !p->serving) {
            started(sv, NULL, "the server exited while starting");
            if (!on_purpose && sv->restarts > 0)
                LOG_ERROR("server process %ld could not start again (exit status %d); "
                          "giving up", pid, code);
            return code;
        }
        LOG_ERROR("server process %ld exited with status %d, unannounced; restarting it",
                  pid, code);
    } else {
        int sig = WIFSIGNALED(status) ? WTERMSIG(status) : SIGKILL;
        if (!sv->reported) {
            /* The first start died: a crash of a plugin restored from the
             * state dir, most likely, which a restart would repeat. */
            char why[256];
            snprintf(why, sizeof why, "the server process died (%s) while starting",
                     signal_name(sig));
            LOG_ERROR("%s", why);
            started(sv, NULL, why);
            return 128 + sig;
        }
        if (on_purpose) {
            LOG_ERROR("server process %ld died (%s) while stopping", pid, signal_name(sig));
            return 128 + sig;
        }
        LOG_ERROR("server process %ld died (%s); restarting it", pid, signal_name(sig));
    }
    schedule_restart(sv, ran_ns);
    return -1;
}

/* Handles the signals that came; -1 to go on, or the exit status. */
static int on_signals(struct supervisor *sv)
{
    struct signalfd_siginfo si;
    while (read(sv->signal_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
            if (!sv->stopping)
                LOG_INFO("supervisor received %s: stopping the server", signal_name((int)si.ssi_signo));
            sv->stopping = true;
            if (sv->server.pid) kill(sv->server.pid, SIGTERM);
            else return 0;
        }
    }
    /* SIGCHLD: reap whatever ended (only server processes are ours). */
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0) return -1;
        if (pid != sv->server.pid) continue;
        int rc = on_server_end(sv, status);
        if (rc >= 0) return rc;
        if (sv->stopping) return 0;
    }
}

static int supervise(struct supervisor *sv)
{
    for (;;) {
        if (!sv->server.pid && sv->restart_at_ns && serve__now_ns() >= sv->restart_at_ns) {
            sv->restart_at_ns = 0;
            sv->restarts++;
            int report_fd;
            pid_t pid = fork_server(sv, &report_fd);
            if (pid == 0) return serve_in_child(sv, report_fd);
            if (pid < 0) schedule_restart(sv, 0);
        }
        int timeout_ms = -1;
        if (!sv->server.pid && sv->restart_at_ns) {
            uint64_t now = serve__now_ns();
            timeout_ms = sv->restart_at_ns > now
                             ? (int)((sv->restart_at_ns - now) / 1000000u) + 1 : 0;
        }
        struct pollfd fds[2] = {{.fd = sv->signal_fd, .events = POLLIN},
                                {.fd = sv->server.report_fd, .events = POLLIN}};
        int n = poll(fds, sv->server.report_fd >= 0 ? 2 : 1, timeout_ms);
        if (n < 0 && errno != EINTR) {
            LOG_ERROR("supervisor: poll: %s", strerror(errno));
            return 1;
        }
        if (n <= 0) continue;
        if (fds[1].revents) read_reports(sv);
        if (fds[0].revents) {
            int rc = on_signals(sv);
            if (rc >= 0) return rc;
        }
    }
}

static int fail_to_start(const struct server_options *o, const char *why)
{
    LOG_ERROR("%s", why);
    if (o->on_started) o->on_started(NULL, why, o->on_started_arg);
    return 1;
}

int supervisor_run(const struct server_options *o, int close_in_server)
{
    struct supervisor sv = {.options = o, .pid = getpid(), .lock_fd = -1, .listen_fd = -1,
                            .close_in_server = close_in_server,
                            .server = {.report_fd = -1}, .backoff_ms = FIRST_BACKOFF_MS};
    char err[4096];
    /* The order of server_run's own checks, so that errors read the same:
     * an untrusted state dir, then another server, then the port. */
    if (!state_dir_prepare(o->state_dir, err, sizeof err)) return fail_to_start(o, err);
    sv.lock_fd = state_dir_lock(o->state_dir, err, sizeof err);
    if (sv.lock_fd < 0) return fail_to_start(o, err);
    int port;
    sv.listen_fd = http_listen(o->http_host, o->http_port, &port, err, sizeof err);
    if (sv.listen_fd < 0) return fail_to_start(o, err);

    /* Signals come through a descriptor, read in the one loop: no handler
     * runs between a fork and its bookkeeping. A server process starts with
     * SIGTERM and SIGINT blocked too, so that a stop sent before server_run
     * waits for it instead of killing it. */
    sigset_t handled, old;
    sigemptyset(&handled);
    sigaddset(&handled, SIGCHLD);
    sigaddset(&handled, SIGTERM);
    sigaddset(&handled, SIGINT);
    sigprocmask(SIG_BLOCK, &handled, &old);
    sv.server_mask = old;
    sigaddset(&sv.server_mask, SIGTERM);
    sigaddset(&sv.server_mask, SIGINT);
    signal(SIGPIPE, SIG_IGN); /* `serve start` may be gone when we report */
    sv.signal_fd = signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sv.signal_fd < 0) {
        snprintf(err, sizeof err, "signalfd: %s", strerror(errno));
        return fail_to_start(o, err);
    }

    int report_fd;
    pid_t pid = fork_server(&sv, &report_fd);
    if (pid == 0) return serve_in_child(&sv, report_fd);
    if (pid < 0) return fail_to_start(o, "cannot start the server process");
    int rc = supervise(&sv);
    if (sv.is_server) return rc; /* returning from server_run */
    close(sv.signal_fd);
    close(sv.listen_fd);
    /* sv.lock_fd stays open: the lock goes with the process. */
    return rc;
}
