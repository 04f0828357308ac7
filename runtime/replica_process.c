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
 * This file is the kind and the monitor thread's life (start, restarts with
 * backoff, stop); replica_spawn.c makes an incarnation (a child and its
 * channel), replica_watch.c serves one while it lives. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "clock.h"
#include "config_typed.h"
#include "log.h"
#include "replica_host.h"
#include "replica_process_internal.h"

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 30000
#define BACKOFF_RESET_NS (60ull * 1000000000u)
#define STOP_GRACE_MS 10000

static struct incarnation *current(struct process_replica *p)
{
    pthread_mutex_lock(&p->lock);
    struct incarnation *inc = p->current;
    if (inc) atomic_fetch_add(&inc->refs, 1);
    pthread_mutex_unlock(&p->lock);
    return inc;
}

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
    if (slot < CHANNEL_CANCEL_SLOTS) /* a new request: not cancelled */
        atomic_fetch_and(&inc->ch.shared->cancelled[slot / 64], ~(UINT64_C(1) << (slot % 64)));
    return true;
}

static void send_note(struct incarnation *inc, serve_request *req, uint32_t type, uint64_t value);

/* Sets req's bit while it holds its slot (under the slot lock, so never
 * the bit of a request that took the slot after it). */
static void process_cancelled(struct replica_base *r, serve_request *req)
{
    struct process_replica *p = r->data;
    struct incarnation *inc = current(p);
    if (!inc) return;
    pthread_mutex_lock(&inc->slots_lock);
    uint32_t slot = req->slot;
    if (slot < inc->slot_cap && inc->slots[slot] == req && slot < CHANNEL_CANCEL_SLOTS)
        atomic_fetch_or(&inc->ch.shared->cancelled[slot / 64], UINT64_C(1) << (slot % 64));
    pthread_mutex_unlock(&inc->slots_lock);
    send_note(inc, req, MSG_CANCEL, 0); /* the plugin's cancel callback, there */
    incarnation_release(inc);
}

/* Tells the child something about the request of `slot` (MSG_CANCEL,
 * MSG_STREAM_DRAINED), if it still holds the slot. Any thread, an I/O
 * thread included: never waits, so a note that finds the results ring full
 * is dropped (the cancelled bit still tells the plugin; the next drained
 * note carries the total). */
static void send_note(struct incarnation *inc, serve_request *req, uint32_t type, uint64_t value)
{
    shm_ring_lock(&inc->results);
    pthread_mutex_lock(&inc->slots_lock);
    uint32_t slot = req->slot;
    bool holds = !inc->closed && slot < inc->slot_cap && inc->slots[slot] == req;
    pthread_mutex_unlock(&inc->slots_lock);
    struct wire_out *w = &inc->results_head;
    wire_reset(w);
    wire_u32(w, slot);
    wire_u64(w, value);
    if (holds && !w->failed && shm_ring_room(&inc->results) >= w->len + 64) {
        channel_put(&inc->results, type, w, 0, NULL, 0);
        shm_ring_end_message(&inc->results);
    }
    shm_ring_unlock(&inc->results);
}

static void process_stream_drained(struct replica_base *r, serve_request *req, uint64_t drained)
{
    struct process_replica *p = r->data;
    struct incarnation *inc = current(p);
    if (!inc) return;
    send_note(inc, req, MSG_STREAM_DRAINED, drained);
    incarnation_release(inc);
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
        struct incarnation *inc = incarnation_spawn(p, err, sizeof err);
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
        incarnation_watch(p, inc);

        pthread_mutex_lock(&p->lock);
        p->current = NULL;
        bool stopping = p->stopping;
        pthread_mutex_unlock(&p->lock);
        if (!stopping) backend_replica_down(p->base, NULL);
        park_wake(&inc->worker_park); /* a worker waiting for a batch end */
        int status = 0;
        incarnation_reap(inc, &status);
        if (stopping) {
            incarnation_release(inc);
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
        size_t failed = incarnation_fail_held(p, inc, reason == CRASH_HANG ? 504 : 502, text, ids, sizeof ids);
        uint64_t now = serve__now_ns();
        if (last_crash_ns && now - last_crash_ns > BACKOFF_RESET_NS) backoff_ms = BACKOFF_FIRST_MS;
        last_crash_ns = now;
        LOG_ERROR("backend=%s replica=%d pid=%ld %s; %zu request(s) it held failed%s%s; "
                  "restarting in %llu ms",
                  name, index, (long)inc->pid, text, failed, failed ? ": " : "", ids,
                  (unsigned long long)backoff_ms);
        char line[300];
        snprintf(line, sizeof line, "replica %d %s", index, text);
        backend_replica_crashed(p->base, reason, WIFSIGNALED(status) ? WTERMSIG(status) : 0,
                                line);
        incarnation_release(inc);
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
    if (!replica_process_supported()) {
        snprintf(err, errlen, "this program cannot run process replicas; use --isolation thread");
        return false;
    }
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

/* Work-ring bytes a batch of these requests takes at most (put_request,
 * channel_put and the MSG_RUN_BATCH after them). */
static size_t batch_bytes(serve_request *const *reqs, size_t n)
{
    const size_t per_message = sizeof(struct shm_ring_header) + sizeof(struct wire_prefix);
    size_t bytes = per_message + 4;
    for (size_t i = 0; i < n; i++) {
        const serve_request *req = reqs[i];
        /* Fixed fields, then each string as length, bytes and NUL. */
        size_t b = per_message + 4 + 4 + 8 + 8 + 8 + 4 + 4 + req->body_len;
        b += 5 + strlen(req->method) + 5 + strlen(req->path) + 5 + strlen(req->id);
        for (size_t k = 0; k < 2 * req->header_count; k++) b += 5 + strlen(req->headers[k]);
        for (size_t k = 0; k < 2 * req->query_count; k++)
            b += 5 + (req->query[k] ? strlen(req->query[k]) : 0);
        bytes += b;
    }
    return bytes;
}

static int hand_over(struct replica_base *r, serve_request **reqs, size_t n, bool may_wait)
{
    struct process_replica *p = r->data;
    struct incarnation *inc = current(p);
    if (!inc) return REPLICA_DOWN;
    shm_ring_lock(&inc->work);
    if (!may_wait && shm_ring_room(&inc->work) < batch_bytes(reqs, n)) {
        shm_ring_unlock(&inc->work);
        incarnation_release(inc);
        return REPLICA_FULL;
    }
    pthread_mutex_lock(&inc->slots_lock);
    bool ok = !inc->closed;
    size_t placed = 0;
    for (; ok && placed < n; placed++) {
        if (!slot_put(inc, reqs[placed])) break;
        serve_request_defer(reqs[placed]);
    }
    pthread_mutex_unlock(&inc->slots_lock);
    if (!ok) {
        shm_ring_unlock(&inc->work);
        incarnation_release(inc);
        return REPLICA_DOWN;
    }
    /* Requests without a slot (out of memory) are answered 500 by the
     * backend, as unanswered ones. The others are the child's now: the
     * caller goes on to the next batch while the child runs this one, as
     * far as the replica's concurrency limit lets it. */
    atomic_fetch_add(&inc->batches_sent, 1);
    for (size_t i = 0; i < placed; i++) put_request(inc, reqs[i]);
    struct wire_out *w = &inc->work_head;
    wire_reset(w);
    wire_u32(w, (uint32_t)placed);
    channel_put(&inc->work, MSG_RUN_BATCH, w, 0, NULL, 0);
    shm_ring_end_message(&inc->work);
    shm_ring_unlock(&inc->work);
    incarnation_release(inc);
    return 0;
}

static int process_run_batch(struct replica_base *r, serve_request **reqs, size_t n)
{
    return hand_over(r, reqs, n, true);
}

/* The monitor thread, which reads the answers ring, must never wait for
 * room in the work ring: the child may itself be waiting for room in the
 * answers ring. */
static int process_run_batch_nowait(struct replica_base *r, serve_request **reqs, size_t n)
{
    return hand_over(r, reqs, n, false);
}

static bool process_idle(struct replica_base *r)
{
    struct process_replica *p = r->data;
    struct incarnation *inc = current(p);
    if (!inc) return true; /* down: run_batch says so, and the batch goes back */
    bool idle = atomic_load(&inc->batches_done) == atomic_load(&inc->batches_sent);
    incarnation_release(inc);
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
    if (rc) {
        pthread_mutex_lock(&inc->slots_lock);
        if (inc->reconfigure_why[0]) config_error_set(inc->reconfigure_why);
        pthread_mutex_unlock(&inc->slots_lock);
    }
    incarnation_release(inc);
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
        incarnation_release(inc);
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
    .run_batch_nowait = process_run_batch_nowait,
    .cancelled = process_cancelled,
    .stream_drained = process_stream_drained,
    .reconfigure = process_reconfigure,
    .stop = process_stop,
};
