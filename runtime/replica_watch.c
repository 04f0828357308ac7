/* replica_watch.c - the monitor thread of a process replica while its
 * child lives: it reads the answers ring (answers, delivered a drained
 * ring at a time; batch ends; handle calls, sent on through dispatch),
 * watches the child's end, its time inside handle_batch (--hang-timeout-ms)
 * and its resident memory (--max-memory), and after a death fails what
 * the child held. Everything the child writes is checked as a client's
 * bytes would be: a plugin may have scribbled over its whole process. */
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
#include "handles.h"
#include "metrics.h"
#include "replica_process_internal.h"
#include "stream.h"

#define MEMORY_CHECK_MS 20

/* For draining what a dead child wrote: never waits. */
static bool no_wait(struct shm_ring_end *end, void *arg)
{
    (void)end;
    (void)arg;
    return false;
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

/* ---- messages from the child ----------------------------------------- */

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
    incarnation_release(inc);
    free(f);
}

/* A piece of a streamed result, for a child's call that takes chunks. */
static void forwarded_chunk(const void *data, size_t len, void *arg)
{
    struct forwarded *f = arg;
    struct incarnation *inc = f->inc;
    if (atomic_load(&inc->gone)) return;
    shm_ring_lock(&inc->results);
    struct wire_out *w = &inc->results_head;
    wire_reset(w);
    wire_u64(w, f->id);
    channel_put(&inc->results, MSG_CALL_CHUNK, w, 0, data, len);
    shm_ring_end_message(&inc->results);
    shm_ring_unlock(&inc->results);
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
            incarnation_release(inc);
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
    if (wire_get_u32(r) && !r->bad) serve_call_on_chunk(call, forwarded_chunk);
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

/* The request that holds `slot`, left there (only this thread takes
 * slots, so it stays valid until this thread takes it). */
static serve_request *slot_peek(struct incarnation *inc, uint32_t slot)
{
    pthread_mutex_lock(&inc->slots_lock);
    serve_request *req = slot < inc->slot_cap ? inc->slots[slot] : NULL;
    pthread_mutex_unlock(&inc->slots_lock);
    return req;
}

/* A stream of the child's: its head, a piece, or its end, relayed to the
 * server's side of the same stream (stream.h). */
static void on_stream(struct incarnation *inc, uint32_t type, struct wire_in *r,
                      uint32_t header_pairs, void *body, size_t body_len)
{
    uint32_t slot = wire_get_u32(r);
    serve_request *req = r->bad ? NULL : slot_peek(inc, slot);
    if (!req) return;
    if (type == MSG_STREAM_BEGIN) {
        int status = (int)wire_get_u32(r);
        const char *ctype = wire_get_str(r);
        for (uint32_t i = 0; i < header_pairs; i++) {
            const char *name = wire_get_str(r);
            const char *value = wire_get_str(r);
            if (!r->bad) serve_response_add_header(req, name, value);
        }
        if (r->bad || status < 100 || status > 599 || req->stream) return;
        req->answered = true;
        /* Cancelled meanwhile: the end the child sends finishes it. */
        stream_begin_local(req, status, ctype);
    } else if (type == MSG_STREAM_DATA) {
        /* The child counts the bound against what the server reports
         * drained; here the piece is taken as it comes. */
        if (req->stream) stream_write_local(req, body, body_len, false);
    } else {
        uint32_t failed = wire_get_u32(r);
        const char *message = wire_get_str(r);
        req = slot_take(inc, slot);
        if (!req->stream) { /* ended before its head: a malformed answer */
            char msg[256];
            snprintf(msg, sizeof msg, "backend %s: the replica process ended a stream it had not begun",
                     backend_name(req->backend));
            req->answered = true;
            bool won = request_answer_runtime(req, 502, msg);
            backend_deferred_answered_many(&req, &won, 1);
            return;
        }
        stream_finish_local(req, failed ? (r->bad ? "malformed end" : message) : NULL);
    }
}

/* Reads and acts on one message. False when the child is gone mid-way. */
static bool handle_message(struct process_replica *p, struct incarnation *inc, ring_wait_fn wait,
                           struct wire_out *head, struct delivery *d)
{
    uint32_t type;
    struct wire_prefix prefix;
    if (!channel_get(&inc->answers, wait, inc, &type, &prefix, head)) return false;
    void *body = NULL;
    if (type == MSG_ANSWER || type == MSG_CALL || type == MSG_STREAM_DATA) {
        body = malloc(prefix.body_len ? prefix.body_len : 1);
        if (!body) return false; /* the stream cannot be resynchronised: killed */
        if (!shm_ring_read(&inc->answers, body, prefix.body_len, wait, inc)) {
            free(body);
            return false;
        }
    } else if (!channel_skip(&inc->answers, prefix.body_len, wait, inc)) {
        return false;
    }
    struct wire_in r = wire_in_of(head);
    switch (type) {
    case MSG_ANSWER: on_answer(inc, &r, prefix.count, body, prefix.body_len, d); break;
    case MSG_CALL: on_call(p, inc, &r, prefix.count, body, prefix.body_len); break;
    case MSG_STREAM_BEGIN:
    case MSG_STREAM_DATA:
    case MSG_STREAM_END:
        deliver(d); /* answers read before keep their order */
        on_stream(inc, type, &r, prefix.count, body, prefix.body_len);
        free(body);
        break;
    case MSG_CONTINUOUS: atomic_store(&p->base->continuous, true); break;
    case MSG_STREAM_BLOCKED: {
        uint32_t slot = wire_get_u32(&r);
        serve_request *req = r.bad ? NULL : slot_peek(inc, slot);
        if (req && req->stream) stream_writer_blocked(req);
        break;
    }
    case MSG_CANCEL_CALLS: {
        uint32_t slot = wire_get_u32(&r);
        serve_request *req = r.bad ? NULL : slot_peek(inc, slot);
        if (req) handles_cancel_calls(req);
        break;
    }
    case MSG_BATCH_DONE: {
        deliver(d); /* the batch's answers count before the batch's end */
        uint32_t n = wire_get_u32(&r);
        uint64_t took = wire_get_u64(&r);
        if (!r.bad) backend_replica_batch_ran(p->base, n, took);
        atomic_fetch_add(&inc->batches_done, 1);
        backend_replica_wake(p->base);
        break;
    }
    case MSG_RECONFIGURED: {
        const char *why = wire_get_str(&r);
        /* For the worker that waits for it (process_reconfigure), under the
         * slot lock: the worker's read of the last reason and this write of
         * the next one are ordered only through the child, which a thread
         * checker cannot see. */
        pthread_mutex_lock(&inc->slots_lock);
        snprintf(inc->reconfigure_why, sizeof inc->reconfigure_why, "%s", r.bad ? "" : why);
        pthread_mutex_unlock(&inc->slots_lock);
        atomic_store(&inc->reconfigure_rc, (int)wire_get_u32(&r));
        atomic_fetch_add(&inc->reconfigures_done, 1);
        park_wake(&inc->worker_park);
        break;
    }
    default: free(body); break;
    }
    return true;
}

/* ---- health ------------------------------------------------------------ */

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
void incarnation_watch(struct process_replica *p, struct incarnation *inc)
{
    struct wire_out head = {0};
    struct delivery d = {.n = 0};
    for (;;) {
        while (shm_ring_readable(&inc->answers) > 0)
            if (!handle_message(p, inc, incarnation_wait, &head, &d)) goto gone;
        deliver(&d);
        int timeout = check_health(p, inc);
        if (!shm_ring_reader_sleep(&inc->answers)) continue;
        bool ended = incarnation_sleep(inc, timeout);
        shm_ring_reader_awake(&inc->answers);
        if (ended) break;
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
size_t incarnation_fail_held(struct process_replica *p, struct incarnation *inc, int status,
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
        if (req->stream) /* its head is out: the stream ends cut, and is logged */
            stream_finish_local(req, msg);
        else
            backend_deferred_answered(req, request_answer_runtime(req, status, msg));
    }
    return failed;
}

