/* replica_process.c - the process replica kind: each replica is a child
 * process (`serve __replica-host`, replica_host.c) running the plugin, fed
 * through shared-memory rings (replica_channel.h).
 *
 * Per replica, the server has:
 *   - the backend's worker thread (backend.c), which forms batches as for
 *     any kind; run_batch registers each request in the incarnation's slot
 *     table, defers it and writes the batch to the work ring, then returns:
 *     the next batch can wait in the ring while the child runs this one
 *     (within the replica's --max-concurrent-queries), so the child never
 *     idles between batches and nobody waits for a batch's end;
 *   - a monitor thread, which spawns the child, reads the answers ring
 *     (answers, delivered a drained ring at a time, and handle calls), watches the child's pidfd, its
 *     time inside handle_batch (--hang-timeout-ms) and its resident memory
 *     (--max-memory), and on a death fails what the child held, reports
 *     it, waits out the backoff and spawns the next incarnation.
 *
 * The child is this very binary (/proc/self/exe), so every program that
 * creates backends hands `__replica-host` to replica_host_main first thing
 * (the serve command, the unit test runner).
 *
 * An incarnation is one child and its channel. Whoever writes to it holds
 * a reference, so a restart never pulls a ring from under a writer. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend.h"
#include "clock.h"
#include "handles.h"
#include "log.h"
#include "metrics.h"
#include "replica_channel.h"
#include "replica_host.h"
#include "replica_kind.h"
#include "signal_name.h"

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 30000
#define BACKOFF_RESET_NS (60ull * 1000000000u)
#define MEMORY_CHECK_MS 20
#define STOP_GRACE_MS 10000
/* How many request ids a crash's log line names before "...". */
#define LOGGED_IDS 16

extern char **environ;

struct process_group {
    char label[128];
};

struct incarnation {
    atomic_int refs;
    struct replica_channel ch;
    struct shm_ring_end work, results, answers;
    int wake_fd; /* the child writes it when the answers ring has news */
    pid_t pid;
    /* Readable once the child is gone: its pidfd, or (where pidfd_open is
     * missing, as under valgrind) the read end of a pipe whose only write
     * end the child holds. */
    int death_fd;
    atomic_bool gone;

    pthread_mutex_t slots_lock;
    serve_request **slots; /* requests the child holds, by slot */
    uint32_t slot_cap;
    uint32_t *free_slots;
    uint32_t free_count;
    bool closed;           /* the child died: no more slots */

    struct park worker_park; /* the worker waits for a reconfigure's end here */
    atomic_uint reconfigures_done;
    atomic_uint batches_sent;    /* by the worker */
    atomic_uint batches_done;    /* by the monitor, as the child reports them */
    atomic_int reconfigure_rc;
    struct wire_out work_head;    /* under work's lock */
    struct wire_out results_head; /* under results' lock */
};

struct process_replica {
    struct replica_base *base;
    pthread_t monitor;
    pthread_mutex_t lock;
    pthread_cond_t started;
    struct incarnation *current; /* NULL while down */
    bool stopping;
    int start_state;             /* 0 starting, 1 up, -1 failed */
    char start_err[1024];
    struct park backoff_park;    /* the monitor sleeps here between restarts */
    int killed_for;              /* -1, or CRASH_HANG / CRASH_MEMORY */
    char kill_text[160];
};

static bool inc_gone(void *arg) { return atomic_load(&((struct incarnation *)arg)->gone); }

static void inc_release(struct incarnation *inc)
{
    if (atomic_fetch_sub(&inc->refs, 1) != 1) return;
    shm_ring_end_destroy(&inc->work);
    shm_ring_end_destroy(&inc->results);
    shm_ring_end_destroy(&inc->answers);
    replica_channel_unmap(&inc->ch);
    if (inc->wake_fd >= 0) close(inc->wake_fd);
    if (inc->death_fd >= 0) close(inc->death_fd);
    pthread_mutex_destroy(&inc->slots_lock);
    free(inc->slots);
    free(inc->free_slots);
    wire_free(&inc->work_head);
    wire_free(&inc->results_head);
    free(inc);
}

static struct incarnation *current(struct process_replica *p)
{
    pthread_mutex_lock(&p->lock);
    struct incarnation *inc = p->current;
    if (inc) atomic_fetch_add(&inc->refs, 1);
    pthread_mutex_unlock(&p->lock);
    return inc;
}

/* ---- waiting on the child ------------------------------------------- */

/* The monitor's wait for the answers ring: its eventfd or the child's end.
 * Returns false when the child is gone and nothing more can come. */
static bool wait_child(struct shm_ring_end *end, void *arg)
{
    struct incarnation *inc = arg;
    if (!shm_ring_reader_sleep(end)) return true;
    struct pollfd fds[2] = {{.fd = inc->wake_fd, .events = POLLIN},
                            {.fd = inc->death_fd, .events = POLLIN}};
    int n = poll(fds, 2, -1);
    shm_ring_reader_awake(end);
    if (n > 0 && (fds[0].revents & POLLIN)) {
        uint64_t count;
        ssize_t ignored = read(inc->wake_fd, &count, sizeof count);
        (void)ignored;
    }
    if (n > 0 && (fds[1].revents & (POLLIN | POLLHUP)) && shm_ring_readable(end) == 0) {
        atomic_store(&inc->gone, true);
        return false;
    }
    return true;
}

/* For draining what a dead child wrote: never waits. */
static bool no_wait(struct shm_ring_end *end, void *arg)
{
    (void)end;
    (void)arg;
    return false;
}

/* ---- spawning -------------------------------------------------------- */

static void put_config(struct wire_out *w, const serve_config *c)
{
    for (size_t i = 0; i < c->count; i++) {
        wire_str(w, c->keys[i]);
        wire_str(w, c->values[i]);
    }
}

static void reap(struct incarnation *inc, int *status)
{
    while (waitpid(inc->pid, status, 0) < 0 && errno == EINTR) {
    }
}

/* "died (SIGSEGV)", "died (exit status 3)" */
static void describe_exit(int status, char *out, size_t len)
{
    if (WIFSIGNALED(status)) {
        const char *name = signal_name(WTERMSIG(status));
        if (strcmp(name, "signal") != 0)
            snprintf(out, len, "died (%s)", name);
        else
            snprintf(out, len, "died (signal %d)", WTERMSIG(status));
    } else {
        snprintf(out, len, "died (exit status %d)", WEXITSTATUS(status));
    }
}

/* Moves *fd above `floor` when it is not already. */
static bool fd_above(int *fd, int floor)
{
    if (*fd > floor) return true;
    int moved = fcntl(*fd, F_DUPFD_CLOEXEC, floor + 1);
    if (moved < 0) return false;
    close(*fd);
    *fd = moved;
    return true;
}

/* What the child runs: this very binary, /proc/self/exe (the file this
 * process started from, even if a newer build has replaced it on disk
 * since), unless this process runs under an interpreter such as valgrind,
 * whose /proc/self/exe is the interpreter: then the path it was given. */
static char executable[PATH_MAX] = "/proc/self/exe";

void replica_process_note_argv0(const char *argv0)
{
    struct stat self, given;
    char resolved[PATH_MAX];
    if (!argv0 || !strchr(argv0, '/') || !realpath(argv0, resolved)) return;
    if (stat("/proc/self/exe", &self) == 0 && stat(resolved, &given) == 0 &&
        (self.st_dev != given.st_dev || self.st_ino != given.st_ino))
        snprintf(executable, sizeof executable, "%s", resolved);
}

static struct incarnation *spawn(struct process_replica *p, char *err, size_t errlen)
{
    const struct backend_spec *spec = p->base->spec;
    struct incarnation *inc = calloc(1, sizeof *inc);
    if (!inc) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    atomic_init(&inc->refs, 1);
    inc->wake_fd = inc->death_fd = -1;
    int life[2] = {-1, -1};
    inc->ch.memfd = -1;
    pthread_mutex_init(&inc->slots_lock, NULL);
    if (!replica_channel_create(&inc->ch) ||
        (inc->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        snprintf(err, errlen, "cannot set up the replica's channel: %s", strerror(errno));
        goto fail_early;
    }
    /* The child's fds 3 and 4 are set by dup2 in turn: neither source may
     * be the other's target. */
    if (pipe2(life, O_CLOEXEC) != 0 || !fd_above(&inc->ch.memfd, 5) ||
        !fd_above(&inc->wake_fd, 5) || !fd_above(&life[1], 5)) {
        snprintf(err, errlen, "cannot set up the replica's channel: %s", strerror(errno));
        goto fail_early;
    }
    shm_ring_end_init(&inc->work, inc->ch.work, -1, inc_gone, inc);
    shm_ring_end_init(&inc->results, inc->ch.results, -1, inc_gone, inc);
    shm_ring_end_init(&inc->answers, inc->ch.answers, -1, NULL, NULL);

    /* The child gets the channel as fds 3 and 4, the pipe's write end as
     * 5, and nothing else of ours;
     * its own process group keeps a terminal's Ctrl-C for the server. */
    char parent[32];
    snprintf(parent, sizeof parent, "%ld", (long)getpid());
    char *argv[] = {"serve", "__replica-host", "3", "4", parent, NULL};
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, inc->ch.memfd, 3);
    posix_spawn_file_actions_adddup2(&actions, inc->wake_fd, 4);
    posix_spawn_file_actions_adddup2(&actions, life[1], 5);
    posix_spawn_file_actions_addclosefrom_np(&actions, 6);
    posix_spawnattr_init(&attr);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGINT);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                        POSIX_SPAWN_SETPGROUP);
    int rc = posix_spawn(&inc->pid, executable, &actions, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the replica process: %s", strerror(rc));
        goto fail_early;
    }
    close(life[1]);
    life[1] = -1;
    inc->death_fd = (int)syscall(SYS_pidfd_open, inc->pid, 0);
    if (inc->death_fd >= 0) {
        close(life[0]);
    } else {
        inc->death_fd = life[0];
    }
    life[0] = -1;

    struct wire_out *w = &inc->work_head;
    wire_reset(w);
    wire_str(w, spec->name);
    wire_str(w, spec->plugin);
    wire_u32(w, (uint32_t)p->base->index);
    wire_u32(w, spec->options.num_replicas);
    put_config(w, spec->config);
    shm_ring_lock(&inc->work);
    channel_put(&inc->work, MSG_INIT, w, (uint32_t)spec->config->count, NULL, 0);
    shm_ring_end_message(&inc->work);
    shm_ring_unlock(&inc->work);

    struct wire_out head = {0};
    uint32_t type = 0;
    struct wire_prefix prefix;
    bool got = channel_get(&inc->answers, wait_child, inc, &type, &prefix, &head) &&
               channel_skip(&inc->answers, prefix.body_len, wait_child, inc);
    struct wire_in r = {head.buf, head.buf + head.len, false};
    const char *text = got ? wire_get_str(&r) : "";
    uint32_t value = got ? wire_get_u32(&r) : 0;
    if (got && type == MSG_READY && !r.bad) {
        struct replica_group *g = p->base->group;
        struct process_group *pg = g->data;
        if (p->base->index == 0) {
            snprintf(pg->label, sizeof pg->label, "%s", text);
            g->can_reconfigure = value != 0;
        }
        wire_free(&head);
        return inc;
    }
    if (got && type == MSG_INIT_FAILED) {
        snprintf(err, errlen, "%s", text);
    } else {
        int status = 0;
        kill(inc->pid, SIGKILL);
        reap(inc, &status);
        inc->pid = 0;
        char how[64];
        describe_exit(status, how, sizeof how);
        snprintf(err, errlen, "plugin %s: init failed: the replica process %s", spec->plugin, how);
    }
    wire_free(&head);
    if (inc->pid) {
        int status;
        reap(inc, &status);
    }
    inc_release(inc);
    return NULL;
fail_early:
    if (life[0] >= 0) close(life[0]);
    if (life[1] >= 0) close(life[1]);
    inc_release(inc);
    return NULL;
}

/* ---- slots ----------------------------------------------------------- */

/* Under slots_lock. */
static bool slot_put(struct incarnation *inc, serve_request *req)
{
    if (inc->free_count == 0) {
        uint32_t cap = inc->slot_cap ? 2 * inc->slot_cap : 64;
        serve_request **slots = realloc(inc->slots, cap * sizeof *slots);
        if (!slots) return false;
        inc->slots = slots;
        uint32_t *free_slots = realloc(inc->free_slots, cap * sizeof *free_slots);
        if (!free_slots) return false;
        inc->free_slots = free_slots;
        for (uint32_t i = cap; i > inc->slot_cap; i--) {
            inc->slots[i - 1] = NULL;
            inc->free_slots[inc->free_count++] = i - 1;
        }
        inc->slot_cap = cap;
    }
    uint32_t slot = inc->free_slots[--inc->free_count];
    inc->slots[slot] = req;
    req->slot = slot;
    return true;
}

static serve_request *slot_take(struct incarnation *inc, uint32_t slot)
{
    pthread_mutex_lock(&inc->slots_lock);
    serve_request *req = slot < inc->slot_cap ? inc->slots[slot] : NULL;
    if (req) {
        inc->slots[slot] = NULL;
        inc->free_slots[inc->free_count++] = slot;
    }
    pthread_mutex_unlock(&inc->slots_lock);
    return req;
}

/* ---- the monitor: messages from the child ---------------------------- */

struct forwarded {
    struct incarnation *inc; /* referenced */
    uint64_t id;
};

/* Any thread: a handle call of the child's has its result. */
static void forwarded_done(const serve_result *result, void *arg)
{
    struct forwarded *f = arg;
    struct incarnation *inc = f->inc;
    if (!atomic_load(&inc->gone)) {
        shm_ring_lock(&inc->results);
        struct wire_out *w = &inc->results_head;
        wire_reset(w);
        wire_u64(w, f->id);
        wire_u32(w, (uint32_t)result->status);
        wire_str(w, result->content_type);
        for (size_t i = 0; i < result->header_count; i++) {
            wire_str(w, result->headers[i].name);
            wire_str(w, result->headers[i].value);
        }
        channel_put(&inc->results, MSG_CALL_RESULT, w, (uint32_t)result->header_count,
                    result->body, result->len);
        shm_ring_end_message(&inc->results);
        shm_ring_unlock(&inc->results);
    }
    inc_release(inc);
    free(f);
}

static void on_call(struct process_replica *p, struct incarnation *inc, struct wire_in *r,
                    uint32_t header_pairs, void *body, size_t body_len)
{
    uint64_t id = wire_get_u64(r);
    uint32_t parent_slot = wire_get_u32(r);
    const char *endpoint = wire_get_str(r);
    /* The parent stays in its slot until its answer, which the child sent
     * after this call, if at all: the ring keeps the child's order. */
    pthread_mutex_lock(&inc->slots_lock);
    serve_request *parent = parent_slot < inc->slot_cap ? inc->slots[parent_slot] : NULL;
    serve_call *call = r->bad ? NULL : handles_call_new(endpoint, parent);
    pthread_mutex_unlock(&inc->slots_lock);
    struct forwarded *f = malloc(sizeof *f);
    if (!call || !f) {
        free(f);
        free(body);
        if (call) request_release((serve_request *)call);
        serve_result failed = {.status = 503, .content_type = "application/json",
                               .body = "{\"error\": \"the server could not make this call\"}"};
        failed.len = strlen(failed.body);
        struct forwarded once = {.inc = inc, .id = id};
        atomic_fetch_add(&inc->refs, 1);
        struct forwarded *copy = malloc(sizeof *copy);
        if (copy) {
            *copy = once;
            forwarded_done(&failed, copy);
        } else {
            inc_release(inc);
        }
        return;
    }
    atomic_ulong *count = metrics_handle_calls(p->base->metrics, endpoint);
    if (count) atomic_fetch_add_explicit(count, 1, memory_order_relaxed);
    for (uint32_t i = 0; i < header_pairs; i++) {
        const char *name = wire_get_str(r);
        const char *value = wire_get_str(r);
        serve_call_add_header(call, name, value);
    }
    uint32_t queries = wire_get_u32(r);
    for (uint32_t i = 0; i < queries; i++) {
        const char *key = wire_get_str(r);
        const char *value = wire_get_str(r);
        serve_call_add_query(call, key, value);
    }
    serve_call_take_body(call, body, body_len, free);
    atomic_fetch_add(&inc->refs, 1);
    f->inc = inc;
    f->id = id;
    serve_call_send(call, forwarded_done, f);
}

/* Answers read from the ring, delivered together (one backend lock, one
 * push per answer queue) once the ring is drained or this is full. */
#define DELIVERY_MAX 64
struct delivery {
    serve_request *reqs[DELIVERY_MAX];
    bool won[DELIVERY_MAX];
    size_t n;
};

static void deliver(struct delivery *d)
{
    backend_deferred_answered_many(d->reqs, d->won, d->n);
    d->n = 0;
}

/* The child's bytes are checked like a client's: a plugin may have
 * scribbled over its process, rings included. */
static void on_answer(struct incarnation *inc, struct wire_in *r, uint32_t header_pairs,
                      void *body, size_t body_len, struct delivery *d)
{
    uint32_t slot = wire_get_u32(r);
    int status = (int)wire_get_u32(r);
    const char *ctype = wire_get_str(r);
    serve_request *req = r->bad ? NULL : slot_take(inc, slot);
    if (!req) {
        free(body);
        return;
    }
    for (uint32_t i = 0; i < header_pairs; i++) {
        const char *name = wire_get_str(r);
        const char *value = wire_get_str(r);
        serve_response_add_header(req, name, value);
    }
    req->answered = true;
    int rc;
    if (r->bad || status < 100 || status > 599) {
        free(body);
        char msg[256];
        snprintf(msg, sizeof msg, "backend %s: the replica process sent a malformed answer",
                 backend_name(req->backend));
        rc = request_answer_runtime(req, 502, msg) ? SERVE_OK : SERVE_ETIMEDOUT;
    } else {
        rc = request_store_answer(req, status, ctype, body, body_len, free);
    }
    if (d->n == DELIVERY_MAX) deliver(d);
    d->reqs[d->n] = req;
    d->won[d->n++] = rc == SERVE_OK;
}

/* Reads and acts on one message. False when the child is gone mid-way. */
static bool handle_message(struct process_replica *p, struct incarnation *inc, ring_wait_fn wait,
                           struct wire_out *head, struct delivery *d)
{
    uint32_t type;
    struct wire_prefix prefix;
    if (!channel_get(&inc->answers, wait, inc, &type, &prefix, head)) return false;
    void *body = NULL;
    if (type == MSG_ANSWER || type == MSG_CALL) {
        body = malloc(prefix.body_len ? prefix.body_len : 1);
        if (!body) return false; /* the stream cannot be resynchronised: killed */
        if (!shm_ring_read(&inc->answers, body, prefix.body_len, wait, inc)) {
            free(body);
            return false;
        }
    } else if (!channel_skip(&inc->answers, prefix.body_len, wait, inc)) {
        return false;
    }
    struct wire_in r = {head->buf, head->buf + head->len, false};
    switch (type) {
    case MSG_ANSWER: on_answer(inc, &r, prefix.count, body, prefix.body_len, d); break;
    case MSG_CALL: on_call(p, inc, &r, prefix.count, body, prefix.body_len); break;
    case MSG_BATCH_DONE:
        deliver(d); /* the batch's answers count before the batch's end */
        atomic_fetch_add(&inc->batches_done, 1);
        backend_replica_wake(p->base);
        break;
    case MSG_RECONFIGURED:
        wire_get_str(&r);
        atomic_store(&inc->reconfigure_rc, (int)wire_get_u32(&r));
        atomic_fetch_add(&inc->reconfigures_done, 1);
        park_wake(&inc->worker_park);
        break;
    default: free(body); break;
    }
    return true;
}

/* ---- the monitor: health --------------------------------------------- */

static uint64_t resident_bytes(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/statm", (long)pid);
    FILE *f = fopen(path, "re");
    if (!f) return 0;
    unsigned long size = 0, resident = 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    return n == 2 ? (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
}

static void format_size(uint64_t bytes, char *out, size_t len)
{
    if (bytes >= (1ull << 30) && bytes % (1ull << 30) == 0)
        snprintf(out, len, "%lluG", (unsigned long long)(bytes >> 30));
    else if (bytes >= (1ull << 20))
        snprintf(out, len, "%lluM", (unsigned long long)(bytes >> 20));
    else
        snprintf(out, len, "%llu", (unsigned long long)bytes);
}

/* Kills the child when it hangs or grows past its limit; returns the
 * poll timeout until the next check (-1: none needed). */
static int check_health(struct process_replica *p, struct incarnation *inc)
{
    const struct backend_options *o = &p->base->spec->options;
    int timeout = -1;
    if (p->killed_for >= 0) return timeout;
    if (o->hang_timeout_ms > 0) {
        uint64_t started = atomic_load(&inc->ch.shared->batch_started_ns);
        uint64_t limit = (uint64_t)(o->hang_timeout_ms * 1e6);
        uint64_t now = serve__now_ns();
        if (started && now - started > limit) {
            p->killed_for = CRASH_HANG;
            snprintf(p->kill_text, sizeof p->kill_text,
                     "hung (handle_batch ran past --hang-timeout-ms %g; killed)", o->hang_timeout_ms);
            kill(inc->pid, SIGKILL);
            return -1;
        }
        uint64_t left = started ? limit - (now - started) : limit;
        timeout = (int)(left / 1000000) + 1;
    }
    if (o->max_memory) {
        uint64_t rss = resident_bytes(inc->pid);
        if (rss > o->max_memory) {
            char used[32], limit[32];
            format_size(rss, used, sizeof used);
            format_size(o->max_memory, limit, sizeof limit);
            p->killed_for = CRASH_MEMORY;
            snprintf(p->kill_text, sizeof p->kill_text,
                     "died (killed at %s resident, over --max-memory %s)", used, limit);
            kill(inc->pid, SIGKILL);
            return -1;
        }
        if (timeout < 0 || timeout > MEMORY_CHECK_MS) timeout = MEMORY_CHECK_MS;
    }
    return timeout;
}

/* Serves the incarnation until its child is gone. */
static void watch(struct process_replica *p, struct incarnation *inc)
{
    struct wire_out head = {0};
    struct delivery d = {.n = 0};
    for (;;) {
        while (shm_ring_readable(&inc->answers) > 0)
            if (!handle_message(p, inc, wait_child, &head, &d)) goto gone;
        deliver(&d);
        int timeout = check_health(p, inc);
        if (!shm_ring_reader_sleep(&inc->answers)) continue;
        struct pollfd fds[2] = {{.fd = inc->wake_fd, .events = POLLIN},
                                {.fd = inc->death_fd, .events = POLLIN}};
        int n = poll(fds, 2, timeout);
        shm_ring_reader_awake(&inc->answers);
        if (n > 0 && (fds[0].revents & POLLIN)) {
            uint64_t count;
            ssize_t ignored = read(inc->wake_fd, &count, sizeof count);
            (void)ignored;
        }
        if (n > 0 && (fds[1].revents & (POLLIN | POLLHUP))) break;
    }
gone:
    /* What the child finished writing before it died still counts. */
    while (shm_ring_readable(&inc->answers) > 0 && handle_message(p, inc, no_wait, &head, &d)) {
    }
    deliver(&d);
    wire_free(&head);
    atomic_store(&inc->gone, true);
    /* Not dead yet when it broke the protocol (a malformed message). */
    if (kill(inc->pid, 0) == 0 && p->killed_for < 0) {
        struct pollfd fd = {.fd = inc->death_fd, .events = POLLIN};
        if (poll(&fd, 1, 0) == 0) {
            p->killed_for = CRASH_SIGNAL;
            snprintf(p->kill_text, sizeof p->kill_text,
                     "broke the channel protocol (a malformed message; killed)");
            kill(inc->pid, SIGKILL);
        }
    }
}

/* After a death: the requests the child held get `status` with `text`;
 * returns how many, their ids in ids (a list for the log). */
static size_t fail_held(struct process_replica *p, struct incarnation *inc, int status,
                        const char *text, char *ids, size_t idslen)
{
    pthread_mutex_lock(&inc->slots_lock);
    inc->closed = true;
    pthread_mutex_unlock(&inc->slots_lock);
    char msg[512];
    snprintf(msg, sizeof msg, "backend %s replica %d %s while it held this request",
             p->base->spec->name, p->base->index, text);
    size_t failed = 0, at = 0;
    ids[0] = '\0';
    for (uint32_t s = 0; s < inc->slot_cap; s++) {
        serve_request *req = slot_take(inc, s);
        if (!req) continue;
        if (failed < LOGGED_IDS && at < idslen)
            at += (size_t)snprintf(ids + at, idslen - at, "%s%s", failed ? "," : "", req->id);
        else if (failed == LOGGED_IDS && at < idslen)
            at += (size_t)snprintf(ids + at, idslen - at, ",...");
        failed++;
        backend_deferred_answered(req, request_answer_runtime(req, status, msg));
    }
    return failed;
}

static bool sleep_backoff(struct process_replica *p, uint64_t ms)
{
    uint64_t deadline = serve__now_ns() + ms * 1000000;
    for (;;) {
        unsigned seq = park_prepare(&p->backoff_park);
        pthread_mutex_lock(&p->lock);
        bool stopping = p->stopping;
        pthread_mutex_unlock(&p->lock);
        if (stopping) return false;
        if (serve__now_ns() >= deadline) return true;
        park_wait(&p->backoff_park, seq, deadline);
    }
}

static void *monitor_main(void *arg)
{
    struct process_replica *p = arg;
    const char *name = p->base->spec->name;
    int index = p->base->index;
    uint64_t backoff_ms = BACKOFF_FIRST_MS, last_crash_ns = 0;
    bool first = true;
    for (;;) {
        char err[1024];
        struct incarnation *inc = spawn(p, err, sizeof err);
        if (first) {
            pthread_mutex_lock(&p->lock);
            p->start_state = inc ? 1 : -1;
            if (!inc) snprintf(p->start_err, sizeof p->start_err, "%s", err);
            p->current = inc;
            pthread_cond_broadcast(&p->started);
            pthread_mutex_unlock(&p->lock);
            if (!inc) return NULL;
            first = false;
        } else if (!inc) {
            LOG_ERROR("backend=%s replica=%d: restart failed: %s; next try in %llu ms", name,
                      index, err, (unsigned long long)backoff_ms);
            char why[1200];
            snprintf(why, sizeof why, "backend %s replica %d cannot restart: %s", name, index, err);
            backend_replica_down(p->base, why);
            if (!sleep_backoff(p, backoff_ms)) break;
            backoff_ms = backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff_ms * 2;
            continue;
        } else {
            pthread_mutex_lock(&p->lock);
            p->current = inc;
            bool stopping = p->stopping;
            pthread_mutex_unlock(&p->lock);
            if (stopping) {
                kill(inc->pid, SIGKILL);
            } else {
                LOG_INFO("backend=%s replica=%d: restarted (pid %ld)", name, index,
                         (long)inc->pid);
                backend_replica_up(p->base);
            }
        }
        p->killed_for = -1;
        watch(p, inc);

        pthread_mutex_lock(&p->lock);
        p->current = NULL;
        bool stopping = p->stopping;
        pthread_mutex_unlock(&p->lock);
        if (!stopping) backend_replica_down(p->base, NULL);
        park_wake(&inc->worker_park); /* a worker waiting for a batch end */
        int status = 0;
        reap(inc, &status);
        if (stopping) {
            inc_release(inc);
            break;
        }
        char text[200];
        int reason;
        if (p->killed_for >= 0) {
            reason = p->killed_for;
            snprintf(text, sizeof text, "%s", p->kill_text);
        } else {
            reason = WIFSIGNALED(status) ? CRASH_SIGNAL : CRASH_EXIT;
            describe_exit(status, text, sizeof text);
        }
        char ids[LOGGED_IDS * 34 + 8];
        size_t failed = fail_held(p, inc, reason == CRASH_HANG ? 504 : 502, text, ids, sizeof ids);
        uint64_t now = serve__now_ns();
        if (last_crash_ns && now - last_crash_ns > BACKOFF_RESET_NS) backoff_ms = BACKOFF_FIRST_MS;
        last_crash_ns = now;
        LOG_ERROR("backend=%s replica=%d pid=%ld %s; %zu request(s) it held failed%s%s; "
                  "restarting in %llu ms",
                  name, index, (long)inc->pid, text, failed, failed ? ": " : "", ids,
                  (unsigned long long)backoff_ms);
        char line[300];
        snprintf(line, sizeof line, "replica %d %s", index, text);
        backend_replica_crashed(p->base, reason, line);
        inc_release(inc);
        if (!sleep_backoff(p, backoff_ms)) break;
        backoff_ms = backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff_ms * 2;
    }
    return NULL;
}

/* ---- the kind -------------------------------------------------------- */

static bool process_open(const struct backend_spec *spec, struct replica_group *group, char *err,
                         size_t errlen)
{
    (void)spec;
    struct process_group *pg = calloc(1, sizeof *pg);
    if (!pg) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    snprintf(pg->label, sizeof pg->label, "?");
    group->data = pg;
    group->label = pg->label;
    group->can_reconfigure = false;
    return true;
}

static void process_close(struct replica_group *group)
{
    free(group->data);
    group->data = NULL;
}

static bool process_start(struct replica_base *r, char *err, size_t errlen)
{
    struct process_replica *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    p->base = r;
    p->killed_for = -1;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->started, NULL);
    int rc = pthread_create(&p->monitor, NULL, monitor_main, p);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start a monitor thread: %s", strerror(rc));
        goto fail;
    }
    pthread_mutex_lock(&p->lock);
    while (p->start_state == 0) pthread_cond_wait(&p->started, &p->lock);
    pthread_mutex_unlock(&p->lock);
    if (p->start_state < 0) {
        pthread_join(p->monitor, NULL);
        snprintf(err, errlen, "%s", p->start_err);
        goto fail;
    }
    r->data = p;
    return true;
fail:
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->started);
    free(p);
    return false;
}

/* Under the work ring's lock: one request. */
static void put_request(struct incarnation *inc, serve_request *req)
{
    struct wire_out *w = &inc->work_head;
    wire_reset(w);
    wire_u32(w, req->slot);
    wire_u32(w, req->call_depth);
    wire_u64(w, req->received_ns);
    wire_u64(w, req->enqueued_ns);
    wire_u64(w, req->dispatched_ns);
    wire_u32(w, req->batch_size);
    wire_str(w, req->method);
    wire_str(w, req->path);
    wire_str(w, req->id);
    for (size_t i = 0; i < 2 * req->header_count; i++) wire_str(w, req->headers[i]);
    wire_u32(w, (uint32_t)req->query_count);
    for (size_t i = 0; i < 2 * req->query_count; i++) wire_str(w, req->query[i]);
    channel_put(&inc->work, MSG_REQUEST, w, (uint32_t)req->header_count, req->body,
                req->body_len);
}

/* The worker: waits until `done` reaches target or the child is gone. */
static void wait_worker(struct incarnation *inc, atomic_uint *done, unsigned target)
{
    for (;;) {
        unsigned seq = park_prepare(&inc->worker_park);
        if ((int)(atomic_load(done) - target) >= 0 || atomic_load(&inc->gone)) return;
        park_wait(&inc->worker_park, seq, 0);
    }
}

static int process_run_batch(struct replica_base *r, serve_request **reqs, size_t n)
{
    struct process_replica *p = r->data;
    struct incarnation *inc = current(p);
    if (!inc) return REPLICA_DOWN;
    pthread_mutex_lock(&inc->slots_lock);
    bool ok = !inc->closed;
    size_t placed = 0;
    for (; ok && placed < n; placed++) {
        if (!slot_put(inc, reqs[placed])) break;
        serve_request_defer(reqs[placed]);
    }
    pthread_mutex_unlock(&inc->slots_lock);
    if (!ok) {
        inc_release(inc);
        return REPLICA_DOWN;
    }
    /* Requests without a slot (out of memory) are answered 500 by the
     * backend, as unanswered ones. The others are the child's now: the
     * worker goes on to the next batch while the child runs this one, as
     * far as the replica's concurrency limit lets it. */
    atomic_fetch_add(&inc->batches_sent, 1);
    shm_ring_lock(&inc->work);
    for (size_t i = 0; i < placed; i++) put_request(inc, reqs[i]);
    struct wire_out *w = &inc->work_head;
    wire_reset(w);
    wire_u32(w, (uint32_t)placed);
    channel_put(&inc->work, MSG_RUN_BATCH, w, 0, NULL, 0);
    shm_ring_end_message(&inc->work);
    shm_ring_unlock(&inc->work);
    inc_release(inc);
    return 0;
}

static bool process_idle(struct replica_base *r)
{
    struct process_replica *p = r->data;
    struct incarnation *inc = current(p);
    if (!inc) return true; /* down: run_batch says so, and the batch goes back */
    bool idle = atomic_load(&inc->batches_done) == atomic_load(&inc->batches_sent);
    inc_release(inc);
    return idle;
}

static int process_reconfigure(struct replica_base *r, const serve_config *config)
{
    struct process_replica *p = r->data;
    struct incarnation *inc = current(p);
    if (!inc) return 0; /* down: it starts again with the backend's config */
    unsigned target = atomic_load(&inc->reconfigures_done) + 1;
    shm_ring_lock(&inc->work);
    struct wire_out *w = &inc->work_head;
    wire_reset(w);
    put_config(w, config);
    channel_put(&inc->work, MSG_RECONFIGURE, w, (uint32_t)config->count, NULL, 0);
    shm_ring_end_message(&inc->work);
    shm_ring_unlock(&inc->work);
    wait_worker(inc, &inc->reconfigures_done, target);
    int rc = atomic_load(&inc->gone) ? 0 : atomic_load(&inc->reconfigure_rc);
    inc_release(inc);
    return rc;
}

static void process_stop(struct replica_base *r)
{
    struct process_replica *p = r->data;
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    struct incarnation *inc = p->current;
    if (inc) atomic_fetch_add(&inc->refs, 1);
    pthread_mutex_unlock(&p->lock);
    park_wake(&p->backoff_park);
    if (inc) {
        /* The plugin's destroy runs in the child; past the grace period
         * the child is killed. */
        shm_ring_lock(&inc->work);
        channel_put(&inc->work, MSG_STOP, NULL, 0, NULL, 0);
        shm_ring_end_message(&inc->work);
        shm_ring_unlock(&inc->work);
        struct pollfd fd = {.fd = inc->death_fd, .events = POLLIN};
        int n;
        while ((n = poll(&fd, 1, STOP_GRACE_MS)) < 0 && errno == EINTR) {
        }
        if (n == 0) {
            LOG_WARN("backend=%s replica=%d: the replica process did not stop within %d s; killed",
                     r->spec->name, r->index, STOP_GRACE_MS / 1000);
            kill(inc->pid, SIGKILL);
        }
        inc_release(inc);
    }
    pthread_join(p->monitor, NULL);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->started);
    free(p);
    r->data = NULL;
}

const struct replica_kind replica_kind_process = {
    .name = "process",
    .open = process_open,
    .close = process_close,
    .start = process_start,
    .run_batch = process_run_batch,
    .idle = process_idle,
    .reconfigure = process_reconfigure,
    .stop = process_stop,
};
