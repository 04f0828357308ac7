/* backend.c - the batching queue, the replicas' worker threads and the
 * rules they follow (batching, concurrency, reconfigure, stop), the same
 * for every replica kind (replica_kind.h). The replica set's growing and
 * draining is backend_scale.c's; adaptive batching's choice, read by the
 * workers, batch_tuner.c's. */
#include "backend.h"

#include <errno.h>
#include <event2/buffer.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "answer_queue.h"
#include "backend_internal.h"
#include "batch_tuner.h"
#include "clock.h"
#include "config_typed.h"
#include "log.h"
#include "metrics.h"
#include "mp.h"
#include "park.h"
#include "replica_kind.h"
#include "handles.h"
#include "stream.h"
#include "signal_name.h"

/* After a batch came back unrun (REPLICA_DOWN) before the kind said the
 * replica is down, the worker waits this long before trying again. */
#define DOWN_RETRY_NS (10ull * 1000 * 1000)

/* Guards every backend_metrics' last_crash: kept by name, as the counters,
 * so that an update that replaces a backend's replicas keeps its history. */
static pthread_mutex_t last_crash_lock = PTHREAD_MUTEX_INITIALIZER;

static void deliver_or_drop(serve_request *req)
{
    if (atomic_load(&req->state) == REQ_ANSWERED)
        req->deliver(req); /* hands the execution reference to the origin */
    else
        request_release(req);
}

/* Hands the answered requests left in batch[] (the others are NULL) to
 * their answer queues: those for the same queue as one chain, in batch
 * order, so that each queue is pushed once and its consumer woken at most
 * once per batch. Each request carries its execution reference, handed
 * over; the batch references were dropped. A batch reaches few queues
 * (one per I/O thread at most), hence the quadratic scan. */
static void push_answers(serve_request **batch, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!batch[i]) continue;
        struct answer_queue *q = batch[i]->answers;
        serve_request *first = batch[i], *last = first;
        batch[i] = NULL;
        for (size_t k = i + 1; k < n; k++)
            if (batch[k] && batch[k]->answers == q) {
                last->next = batch[k];
                last = batch[k];
                batch[k] = NULL;
            }
        answer_queue_push_chain(q, first, last);
    }
}

/* A queued request nobody waits for (timed out: answered 504 already; or
 * its client went away): dropped before it runs, the queue's execution
 * reference with it. Never the last reference. */
static bool drop_abandoned(struct backend *b, serve_request *req)
{
    if (!request_abandoned(req)) return false;
    if (atomic_load(&req->state) == REQ_CANCELLED)
        atomic_fetch_add_explicit(&b->m->cancelled_total, 1, memory_order_relaxed);
    request_release(req);
    return true;
}

/* Under b->mutex: the first queued request someone still waits for,
 * unlinked; those before it that nobody waits for are dropped. NULL when
 * none is left. */
static serve_request *queue_pop(struct backend *b)
{
    while (b->queue_head) {
        serve_request *req = b->queue_head;
        b->queue_head = req->next;
        if (!b->queue_head) b->queue_tail = NULL;
        b->queue_len--;
        req->next = NULL;
        if (!drop_abandoned(b, req)) return req;
    }
    return NULL;
}


/* The kind could not take the batch and touched none of it: back to the
 * front of the queue, in order. REPLICA_DOWN: for another replica, or this
 * one once it is up. REPLICA_FULL (a hand-over that may not wait): for the
 * replica's worker, which may. */
static void requeue_batch(struct replica *r, serve_request **batch, size_t n, int why)
{
    struct backend *b = r->backend;
    atomic_fetch_sub_explicit(&b->m->batches_total, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&b->m->requests_total, n, memory_order_relaxed);
    for (size_t i = 0; i < n; i++) batch[i]->in_batch = false;
    pthread_mutex_lock(&b->mutex);
    for (size_t i = 0; i < n; i++) {
        batch[i]->replica = NULL; /* under the mutex: backend_request_cancelled reads it */
        request_release(batch[i]); /* the batch reference; the queue keeps the execution one */
    }
    for (size_t i = n; i-- > 0;) {
        batch[i]->next = b->queue_head;
        b->queue_head = batch[i];
        if (!b->queue_tail) b->queue_tail = batch[i];
        b->queue_len++;
        batch[i] = NULL;
    }
    struct replica *wake;
    if (why == REPLICA_FULL) {
        wake = r->parked != PARKED_NO ? r : NULL;
        if (wake) r->parked = PARKED_NO;
    } else {
        r->requeued = true;
        wake = unpark_one_ready(b);
    }
    pthread_mutex_unlock(&b->mutex);
    if (wake) park_wake(&wake->park);
}

/* Adaptive batching's latency samples: each answered request's time from
 * queued to answered (a stream's is its generation's, not a latency: left
 * out). One lock per call. reqs[i] may be NULL. */
static void observe_latencies(struct backend *b, serve_request *const *reqs, size_t n)
{
    if (!b->tuner) return;
    uint64_t now = serve__now_ns(), lat[64];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const serve_request *req = reqs[i];
        if (!req || req->stream || atomic_load(&req->state) != REQ_ANSWERED) continue;
        lat[k++] = now - req->enqueued_ns;
        if (k == 64) {
            batch_tuner_latencies(b->tuner, lat, k);
            k = 0;
        }
    }
    if (k) batch_tuner_latencies(b->tuner, lat, k);
}

/* Runs one batch, outside the mutex: on the replica's worker thread, or
 * (an asynchronous kind's hand-over, see dispatch_here) another one;
 * `nowait` on a thread the replica may be waiting on. Returns how many
 * requests left the replica's in-flight count. Uses batch[] as scratch:
 * its entries are gone (NULL) on return. */
static uint32_t run_batch(struct replica *r, serve_request **batch, size_t n, bool nowait)
{
    struct backend *b = r->backend;
    struct backend_metrics *m = b->m;
    uint64_t started = serve__now_ns();
    for (size_t i = 0; i < n; i++) {
        request_ref(batch[i]); /* the batch reference */
        batch[i]->in_batch = true;
        batch[i]->dispatched_ns = started;
        batch[i]->batch_size = (uint32_t)n;
        histogram_observe(&m->queue_seconds, started - batch[i]->enqueued_ns);
    }
    histogram_observe(&m->batch_size, n);
    histogram_observe(&m->batch_wait_seconds, started - batch[0]->enqueued_ns);
    /* Counted at dispatch, like the batch-size histogram, so that the two
     * agree in any scrape. */
    atomic_fetch_add_explicit(&m->batches_total, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->requests_total, n, memory_order_relaxed);
    LOG_DEBUG("backend=%s replica=%d: batch of %zu", b->spec.name, r->base.index, n);
    int rc = nowait ? b->kind->run_batch_nowait(&r->base, batch, n)
                    : b->kind->run_batch(&r->base, batch, n);
    if (rc == REPLICA_DOWN || rc == REPLICA_FULL) {
        requeue_batch(r, batch, n, rc);
        return (uint32_t)n;
    }
    /* A kind that runs batches elsewhere reports their time (and
     * failures) itself. */
    if (!b->kind->idle) {
        if (b->tuner) {
            /* Those it answered now (the deferred ones count when answered). */
            serve_request *answered[64];
            size_t k = 0;
            for (size_t i = 0; i < n && k < 64; i++)
                if (!batch[i]->deferred && batch[i]->answered) answered[k++] = batch[i];
            observe_latencies(b, answered, k);
        }
        backend_replica_batch_ran(&r->base, n, serve__now_ns() - started);
        if (rc != 0) log_batch_failed(&r->batch_failures, b->spec.name, r->base.index, rc, n);
    }
    uint32_t finished = 0;
    for (size_t i = 0; i < n; i++) {
        serve_request *req = batch[i];
        req->in_batch = false;
        if (req->deferred) {
            batch[i] = NULL;
            request_release(req);
            continue;
        }
        if (!req->answered) {
            req->answered = true;
            char msg[256];
            if (rc != 0) {
                snprintf(msg, sizeof msg, "backend %s: plugin failed on this batch (code %d)",
                         b->spec.name, rc);
            } else {
                backend_report_plugin_bug(req, "returned without answering a request");
                snprintf(msg, sizeof msg, "backend %s: plugin returned without answering",
                         b->spec.name);
            }
            request_answer_runtime(req, 500, msg);
        }
        if (req->status >= 500 && atomic_load(&req->state) == REQ_ANSWERED)
            backend_count_rejection(b, REJECT_PLUGIN_ERROR);
        finished++;
        if (req->answers && atomic_load(&req->state) == REQ_ANSWERED) {
            /* Pushed with the others for its queue below. The execution
             * reference, which goes with it, keeps it alive meanwhile. */
            request_release(req);
            continue;
        }
        batch[i] = NULL;
        deliver_or_drop(req);
        request_release(req);
    }
    push_answers(batch, n);
    return finished;
}

/* A step of continuous batching with no new request: handle_batch(NULL,
 * 0) for a plugin that asked for it (serve_replica_continue). */
static void run_step(struct replica *r)
{
    struct backend *b = r->backend;
    uint64_t started = serve__now_ns();
    int rc = b->kind->run_batch(&r->base, NULL, 0);
    if (!b->kind->idle) {
        backend_replica_batch_ran(&r->base, 0, serve__now_ns() - started);
        if (rc != 0) log_batch_failed(&r->batch_failures, b->spec.name, r->base.index, rc, 0);
    }
}

static void reject_batch(struct backend *b, serve_request **batch, size_t n)
{
    char msg[256];
    snprintf(msg, sizeof msg, "backend %s is shutting down", b->spec.name);
    for (size_t i = 0; i < n; i++) {
        request_answer_runtime(batch[i], 503, msg);
        deliver_or_drop(batch[i]);
    }
}

/* Unlinks the first queued re-entrant call (see serve_request.reentrant).
 * Under b->mutex. */
static serve_request *take_reentrant(struct backend *b)
{
    for (serve_request **link = &b->queue_head, *prev = NULL; *link;
         prev = *link, link = &(*link)->next) {
        serve_request *req = *link;
        if (!req->reentrant || request_abandoned(req)) continue;
        *link = req->next;
        if (b->queue_tail == req) b->queue_tail = prev;
        b->queue_len--;
        req->next = NULL;
        return req;
    }
    return NULL;
}

/* Under b->mutex; returns under it, after a wake-up, the deadline
 * (CLOCK_MONOTONIC ns; 0: none), or a spurious return. */
static void replica_park(struct backend *b, struct replica *r, int why, uint64_t deadline_ns)
{
    unsigned seq = park_prepare(&r->park);
    r->parked = why;
    pthread_mutex_unlock(&b->mutex);
    park_wait(&r->park, seq, deadline_ns);
    pthread_mutex_lock(&b->mutex);
    r->parked = PARKED_NO;
}

/* Under b->mutex: takes one replica parked for `why` off its park, for
 * the caller to wake (after unlocking); NULL when none is. */
static struct replica *unpark_one(struct backend *b, int why)
{
    for (size_t i = 0; i < b->replica_count; i++)
        if (b->replicas[i].parked == why) {
            b->replicas[i].parked = PARKED_NO;
            return &b->replicas[i];
        }
    return NULL;
}

/* ... one parked with room for work. */
struct replica *unpark_one_ready(struct backend *b)
{
    return unpark_one(b, PARKED_READY);
}

/* Under b->mutex: wakes every replica parked for `why` (or any reason,
 * for PARKED_NO). Rare events: stop, reconfigure, capacity freed. */
static void wake_parked(struct backend *b, int why)
{
    for (size_t i = 0; i < b->replica_count; i++) {
        struct replica *r = &b->replicas[i];
        if (r->parked != PARKED_NO && (why == PARKED_NO || r->parked == why)) {
            r->parked = PARKED_NO;
            park_wake(&r->park);
        }
    }
}

void *replica_main(void *arg)
{
    struct replica *r = arg;
    struct backend *b = r->backend;
    crash_report_set_context(b->spec.name, r->base.index);
    const size_t max_batch = b->spec.options.max_batch_size;
    serve_request **batch = malloc(max_batch * sizeof *batch);
    if (!batch) {
        LOG_ERROR("backend=%s replica=%d: out of memory", b->spec.name, r->base.index);
        return NULL;
    }
    pthread_mutex_lock(&b->mutex);
    for (;;) {
        /* Adaptive batching moves these between batches; static otherwise. */
        const size_t cap = b->tuner ? batch_tuner_max_batch(b->tuner) : max_batch;
        const uint64_t wait_ns = b->tuner ? batch_tuner_wait_ns(b->tuner) : b->batch_wait_ns;
        if (r->reconfigure_pending) {
            /* Between batches: no handle_batch of this replica runs now. */
            const serve_config *config = b->pending_config;
            pthread_mutex_unlock(&b->mutex);
            config_error_clear();
            int rc = b->kind->reconfigure(&r->base, config);
            /* The plugin's reason, where a typed getter gave one. */
            snprintf(r->reconfigure_why, sizeof r->reconfigure_why, "%s",
                     rc ? serve_config_error() : "");
            pthread_mutex_lock(&b->mutex);
            r->reconfigure_rc = rc;
            r->reconfigure_pending = false;
            pthread_cond_broadcast(&b->reconfigured);
            continue;
        }
        if (r->retiring) {
            /* Draining (autoscaling): what it holds finishes, open
             * generations included; nothing new comes. A backend that
             * stops meanwhile ends it as it ends the others. */
            bool stepping = r->base.again && !b->reject_queued && r->in_flight > 0 &&
                            (!b->stopping || serve__now_ns() < b->stop_steps_until_ns);
            if ((r->in_flight == 0 || b->stopping) && !stepping) {
                r->exited = true;
                break;
            }
            /* A wake-up meant for work it no longer takes goes on. */
            struct replica *other = b->queue_len ? unpark_one_ready(b) : NULL;
            if (other) park_wake(&other->park);
            if (stepping) {
                pthread_mutex_unlock(&b->mutex);
                run_step(r);
                pthread_mutex_lock(&b->mutex);
            } else {
                replica_park(b, r, PARKED_AT_LIMIT, 0);
            }
            continue;
        }
        if (r->down || r->requeued) {
            /* Its queue is for the replicas that are up, or for this one
             * once the kind says it is up again: a wake-up meant for work
             * goes on to a replica that can take it. */
            if (b->stopping) break;
            bool down = r->down;
            r->requeued = false;
            struct replica *other = b->queue_len ? unpark_one_ready(b) : NULL;
            if (other) {
                pthread_mutex_unlock(&b->mutex);
                park_wake(&other->park);
                pthread_mutex_lock(&b->mutex);
                continue;
            }
            replica_park(b, r, PARKED_DOWN, down ? 0 : serve__now_ns() + DOWN_RETRY_NS);
            continue;
        }
        if (b->queue_len == 0 && b->stopping &&
            !(r->base.again && serve__now_ns() < b->stop_steps_until_ns))
            break;
        bool rejecting = b->reject_queued;
        if (!rejecting && r->in_flight >= b->concurrency) {
            /* Full, but a call from this backend's own work may go ahead:
             * waiting for a slot its ancestor holds would wait for ever. */
            serve_request *reentrant = b->queue_len ? take_reentrant(b) : NULL;
            if (!reentrant) {
                replica_park(b, r, PARKED_AT_LIMIT, 0);
                continue;
            }
            reentrant->replica = r;
            r->in_flight++;
            pthread_mutex_unlock(&b->mutex);
            uint32_t finished = run_batch(r, &reentrant, 1, false);
            pthread_mutex_lock(&b->mutex);
            r->in_flight -= finished;
            continue;
        }
        /* Continuous batching: the plugin's open streams hold part of
         * its max batch size; a step it asked for runs at once, with what
         * fits of the queue (maybe nothing). */
        bool continuous = atomic_load_explicit(&r->base.continuous, memory_order_relaxed);
        size_t open_room = max_batch;
        if (continuous) open_room = r->in_flight < max_batch ? max_batch - r->in_flight : 0;
        if (r->base.again && !rejecting && (b->queue_len == 0 || open_room == 0)) {
            pthread_mutex_unlock(&b->mutex);
            run_step(r);
            pthread_mutex_lock(&b->mutex);
            continue;
        }
        if (b->queue_len == 0) {
            replica_park(b, r, PARKED_READY, 0);
            continue;
        }
        if (continuous && open_room == 0 && !rejecting) {
            replica_park(b, r, PARKED_AT_LIMIT, 0);
            continue;
        }
        if (!rejecting && !continuous && b->queue_len < cap && b->kind->idle &&
            !b->kind->idle(&r->base)) {
            /* A partial batch forms once the replica is free, so that what
             * arrives meanwhile joins it. */
            replica_park(b, r, PARKED_BUSY, 0);
            continue;
        }
        uint64_t deadline = b->queue_head->enqueued_ns + wait_ns;
        if (!rejecting && !b->stopping && b->queue_len < cap && !r->base.again &&
            !(continuous && r->in_flight) && serve__now_ns() < deadline) {
            replica_park(b, r, PARKED_READY, deadline);
            continue;
        }
        if (!rejecting && b->kind->idle && !continuous) {
            /* A kind that holds batches elsewhere gets whole ones: answers
             * come back a few at a time, and a batch cut to the few slots
             * they freed would run at a batch's cost for a fraction of it. */
            size_t want = b->queue_len < cap ? b->queue_len : cap;
            if (b->concurrency - r->in_flight < want) {
                replica_park(b, r, PARKED_AT_LIMIT, 0);
                continue;
            }
        }
        size_t limit = continuous ? max_batch : cap;
        if (!rejecting && b->concurrency - r->in_flight < limit)
            limit = b->concurrency - r->in_flight;
        if (!rejecting && open_room < limit) limit = open_room;
        size_t n = 0;
        for (serve_request *req; n < limit && (req = queue_pop(b));) {
            req->replica = r;
            batch[n++] = req;
        }
        if (n == 0) continue;
        if (rejecting) {
            pthread_mutex_unlock(&b->mutex);
            reject_batch(b, batch, n);
            pthread_mutex_lock(&b->mutex);
            continue;
        }
        r->in_flight += (uint32_t)n;
        /* What this batch left is another replica's, if one is idle. */
        struct replica *idle = b->queue_len ? unpark_one_ready(b) : NULL;
        pthread_mutex_unlock(&b->mutex);
        if (idle) park_wake(&idle->park);
        uint32_t finished = run_batch(r, batch, n, false);
        pthread_mutex_lock(&b->mutex);
        r->in_flight -= finished;
    }
    pthread_mutex_unlock(&b->mutex);
    free(batch);
    return NULL;
}

/* Slot i made ready for the kind's start. */
struct replica *replica_slot_init(struct backend *b, size_t i)
{
    struct replica *r = &b->replicas[i];
    memset(r, 0, sizeof *r);
    r->backend = b;
    r->base.spec = &b->spec;
    r->base.group = &b->group;
    r->base.metrics = b->m;
    r->base.index = (int)i;
    return r;
}

static void destroy_replicas(struct backend *b)
{
    /* No cancel callback may run into a replica being stopped. */
    pthread_mutex_lock(&b->mutex);
    b->stopping_replicas = true;
    /* Nor a hand-over (dispatch_here) that saw the backend running. */
    while (b->cancels_running || b->handovers_running)
        pthread_cond_wait(&b->reconfigured, &b->mutex);
    pthread_mutex_unlock(&b->mutex);
    for (size_t i = 0; i < b->replica_count; i++) {
        struct replica *r = &b->replicas[i];
        if (r->started) b->kind->stop(&r->base);
        r->started = false;
    }
}

struct backend *backend_create(const struct backend_spec *spec, char *err,
                               size_t errlen)
{
    const struct replica_kind *kind = spec->remote ? &replica_kind_remote
                                      : spec->options.isolation == ISOLATION_THREAD
                                          ? &replica_kind_thread
                                          : &replica_kind_process;
    return backend_create_with_kind(spec, kind, err, errlen);
}

struct backend *backend_create_with_kind(const struct backend_spec *spec,
                                         const struct replica_kind *kind, char *err,
                                         size_t errlen)
{
    struct backend *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    atomic_init(&b->refs, 1);
    bool copied = backend_spec_copy(&b->spec, spec);
    b->kind = kind;
    b->concurrency = backend_options_concurrency(&spec->options);
    b->m = metrics_backend(spec->name);
    b->batch_wait_ns = (uint64_t)(spec->options.batch_wait_timeout_ms * 1e6);
    pthread_mutex_init(&b->mutex, NULL);
    pthread_cond_init(&b->reconfigured, NULL);
    if (copied) backend_options_normalize(&b->spec.options);
    const struct backend_options *o = &b->spec.options;
    b->autoscaled = backend_options_autoscaled(o);
    b->replica_count = o->num_replicas;
    b->replica_capacity = b->autoscaled && o->max_replicas > o->num_replicas ? o->max_replicas
                                                                             : o->num_replicas;
    atomic_init(&b->target_replicas, (uint32_t)b->replica_count);
    if (b->autoscaled) {
        struct autoscale_policy policy = {
            .min_replicas = o->min_replicas,
            .max_replicas = o->max_replicas,
            .target_ongoing = o->target_ongoing_requests,
            .upscale_delay_ns = (uint64_t)(o->upscale_delay_s * 1e9),
            .downscale_delay_ns = (uint64_t)(o->downscale_delay_s * 1e9),
        };
        autoscale_init(&b->autoscale, &policy, o->num_replicas);
    }
    b->replicas = calloc(b->replica_capacity, sizeof *b->replicas);
    if (copied && o->latency_slo_ms > 0) {
        b->tuner = batch_tuner_new(o->latency_slo_ms, o->max_batch_size);
        if (b->tuner) batch_tuner_set_replicas(b->tuner, (uint32_t)b->replica_count);
    }
    if (!copied || !b->replicas || !b->m || (o->latency_slo_ms > 0 && !b->tuner)) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (!kind->open(&b->spec, &b->group, err, errlen)) goto fail;
    b->group_open = true;

    for (size_t i = 0; i < b->replica_count; i++) {
        struct replica *r = replica_slot_init(b, i);
        if (!kind->start(&r->base, err, errlen)) goto fail;
        r->started = true;
    }
    b->accepting = true;
    for (size_t i = 0; i < b->replica_count; i++) {
        struct replica *r = &b->replicas[i];
        int rc = pthread_create(&r->thread, NULL, replica_main, r);
        if (rc != 0) {
            snprintf(err, errlen, "backend %s: cannot start worker thread: %s",
                     spec->name, strerror(rc));
            backend_stop(b);
            backend_release(b);
            return NULL;
        }
        r->thread_started = true;
    }
    return b;
fail:
    destroy_replicas(b);
    backend_release(b);
    return NULL;
}

void backend_ref(struct backend *b)
{
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}

void backend_release(struct backend *b)
{
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1) return;
    if (b->group_open) b->kind->close(&b->group);
    free(b->group.tensor_metadata);
    pthread_mutex_destroy(&b->mutex);
    pthread_cond_destroy(&b->reconfigured);
    free(b->replicas);
    batch_tuner_free(b->tuner);
    backend_spec_free(&b->spec);
    free(b);
}

const char *backend_name(const struct backend *b) { return b->spec.name; }
const char *backend_tensor_metadata(const struct backend *b) { return b->group.tensor_metadata; }

const struct backend_spec *backend_get_spec(const struct backend *b)
{
    return &b->spec;
}

/* Wake-ups held back by this thread until the end of its loop's pass
 * (backend_hold_wakeups). A replica is unparked once and its park stays
 * valid: the request that woke it is queued, so its backend is alive. */
#define HELD_WAKEUPS_MAX 32
static _Thread_local bool holding_wakeups;
static _Thread_local struct park *held_wakeups[HELD_WAKEUPS_MAX];
static _Thread_local int held_count;

void backend_hold_wakeups(bool hold) { holding_wakeups = hold; }

void backend_flush_wakeups(void)
{
    for (int i = 0; i < held_count; i++) park_wake(held_wakeups[i]);
    held_count = 0;
}

static void wake_replica(struct replica *r)
{
    if (holding_wakeups && held_count < HELD_WAKEUPS_MAX)
        held_wakeups[held_count++] = &r->park;
    else
        park_wake(&r->park);
}

/* Bodies up to this may be handed over by a thread other than the
 * replica's worker; larger ones go through the worker (the hand-over may
 * wait for room). */
#define DISPATCH_HERE_BYTES (64u << 10)

/* Under b->mutex: may a thread other than r's worker hand r a request?
 * Only while the worker sleeps (so the two never take from the queue for
 * r at once) and r has room. */
static bool can_dispatch_here(const struct backend *b, const struct replica *r)
{
    uint32_t limit = b->concurrency;
    /* Continuous batching: its open streams hold part of the max batch. */
    if (atomic_load_explicit(&r->base.continuous, memory_order_relaxed) &&
        b->spec.options.max_batch_size < limit)
        limit = (uint32_t)b->spec.options.max_batch_size;
    return (r->parked == PARKED_READY || r->parked == PARKED_AT_LIMIT) && !r->down &&
           !r->retiring && r->in_flight < limit;
}

/* Under b->mutex, which it releases when it returns true. A backend with
 * nothing to batch (max batch 1) whose kind only hands batches over (idle
 * != NULL): the calling thread hands queued requests to `only` (or to any
 * replica whose worker sleeps with room) itself, one thread hop less per
 * request than waking the worker to do it; the worker stays asleep. The
 * enqueuing thread (an I/O thread) does this, and, for kinds with
 * run_batch_nowait, the thread that reports answers, as each answer frees
 * a slot. Both hand over with run_batch_nowait where the kind has it: a
 * request that does not fit now is left to the worker, the one thread that
 * may wait for the replica.
 * With larger batches the worker forms them, so that the batching rule
 * and its timing are the same for every kind. */
static bool dispatch_here(struct backend *b, struct replica *only, bool nowait)
{
    if (!b->kind->idle || b->reject_queued || b->stopping || b->spec.options.max_batch_size != 1 ||
        !b->queue_head)
        return false;
    struct replica *r = NULL;
    if (only)
        r = can_dispatch_here(b, only) ? only : NULL;
    else /* the least loaded: a request handed over waits behind the others there */
        for (size_t i = 0; i < b->replica_count; i++)
            if (can_dispatch_here(b, &b->replicas[i]) &&
                (!r || b->replicas[i].in_flight < r->in_flight))
                r = &b->replicas[i];
    if (!r) return false;
    bool dispatched = false;
    /* The enqueuing thread hands over its one request; the answers'
     * reader refills what the answers freed. */
    while (b->queue_head && can_dispatch_here(b, r) && !b->reject_queued && !b->stopping) {
        if (b->queue_head->body_len > DISPATCH_HERE_BYTES) break;
        serve_request *req = queue_pop(b);
        if (!req) break;
        req->replica = r;
        r->in_flight++;
        dispatched = true;
        b->handovers_running++;
        pthread_mutex_unlock(&b->mutex);
        uint32_t finished = run_batch(r, &req, 1, nowait);
        pthread_mutex_lock(&b->mutex);
        if (--b->handovers_running == 0 && b->stopping_replicas)
            pthread_cond_broadcast(&b->reconfigured);
        r->in_flight -= finished;
        if (finished) break; /* answered, failed or given back: the worker's turn */
    }
    if (!dispatched) return false;
    /* What is left (a large body, a full ring) is the worker's. */
    bool wake = b->queue_head && r->parked == PARKED_AT_LIMIT && r->in_flight < b->concurrency;
    /* A replica that began to drain meanwhile ends once it holds nothing. */
    wake = wake || (r->retiring && r->in_flight == 0 && r->parked != PARKED_NO);
    if (wake) r->parked = PARKED_NO;
    pthread_mutex_unlock(&b->mutex);
    if (wake) park_wake(&r->park);
    return true;
}

enum enqueue_result backend_enqueue(struct backend *b, serve_request *req)
{
    req->enqueued_ns = serve__now_ns();
    pthread_mutex_lock(&b->mutex);
    if (!b->accepting) {
        pthread_mutex_unlock(&b->mutex);
        return ENQUEUE_CLOSED;
    }
    if (b->unavailable[0]) {
        pthread_mutex_unlock(&b->mutex);
        return ENQUEUE_UNAVAILABLE;
    }
    if (b->queue_len >= b->spec.options.max_queued_requests) {
        pthread_mutex_unlock(&b->mutex);
        backend_count_rejection(b, REJECT_BACKPRESSURE);
        return ENQUEUE_OVERLOADED;
    }
    request_ref(req); /* the execution reference */
    req->next = NULL;
    if (b->queue_tail)
        b->queue_tail->next = req;
    else
        b->queue_head = req;
    b->queue_tail = req;
    b->queue_len++;
    if (dispatch_here(b, NULL, b->kind->run_batch_nowait != NULL)) return ENQUEUE_OK; /* unlocked it */
    /* One replica with room is enough: it takes everything it may in one
     * batch. Replicas at their limit are woken only for a re-entrant call,
     * the one thing they may take. */
    struct replica *idle = unpark_one_ready(b);
    /* A replica waiting for its kind to finish a batch takes a full one
     * at once. */
    size_t full = b->tuner ? batch_tuner_max_batch(b->tuner) : b->spec.options.max_batch_size;
    if (!idle && b->queue_len >= full) idle = unpark_one(b, PARKED_BUSY);
    if (req->reentrant) wake_parked(b, PARKED_AT_LIMIT);
    pthread_mutex_unlock(&b->mutex);
    if (idle) wake_replica(idle);
    return ENQUEUE_OK;
}

/* Under b->mutex: may a callback about a request it held still reach
 * replica r? Not once the replicas stop, nor once r is being stopped or
 * its slot was freed (autoscaling): a stream's last bytes, or a late
 * cancel, may come after the replica that answered it is gone. */
static bool replica_reachable(const struct backend *b, const struct replica *r)
{
    return r && !b->stopping_replicas && !r->reaping && !r->empty;
}

void backend_request_cancelled(serve_request *req)
{
    handles_cancel_calls(req); /* the calls it made go too, transitively */
    struct backend *b = req->backend;
    if (!b || !b->kind->cancelled) return;
    pthread_mutex_lock(&b->mutex);
    struct replica *r = req->replica; /* NULL while queued */
    if (!replica_reachable(b, r)) r = NULL;
    if (r) b->cancels_running++;
    pthread_mutex_unlock(&b->mutex);
    if (!r) return;
    /* The replica's kind data lives until its stop, which waits for this. */
    b->kind->cancelled(&r->base, req);
    pthread_mutex_lock(&b->mutex);
    /* Waited for by a stop, or the reaping of a drained replica. */
    if (--b->cancels_running == 0) pthread_cond_broadcast(&b->reconfigured);
    pthread_mutex_unlock(&b->mutex);
}

void backend_stream_drained(serve_request *req, uint64_t drained)
{
    struct backend *b = req->backend;
    if (!b || !b->kind->stream_drained) return;
    pthread_mutex_lock(&b->mutex);
    struct replica *r = req->replica; /* a streaming request stays on its replica */
    bool reachable = replica_reachable(b, r);
    if (reachable) b->cancels_running++; /* its stop waits for this, as for a cancel */
    pthread_mutex_unlock(&b->mutex);
    if (!reachable) return;
    b->kind->stream_drained(&r->base, req, drained);
    pthread_mutex_lock(&b->mutex);
    if (--b->cancels_running == 0) pthread_cond_broadcast(&b->reconfigured);
    pthread_mutex_unlock(&b->mutex);
}

/* Answers everything queued with 503 and msg. */
static void reject_queue(struct backend *b, const char *msg)
{
    pthread_mutex_lock(&b->mutex);
    serve_request *req = b->queue_head;
    b->queue_head = b->queue_tail = NULL;
    b->queue_len = 0;
    pthread_mutex_unlock(&b->mutex);
    while (req) {
        serve_request *next = req->next;
        req->next = NULL;
        if (!drop_abandoned(b, req)) {
            request_answer_runtime(req, 503, msg);
            deliver_or_drop(req);
        }
        req = next;
    }
}

void backend_stop(struct backend *b)
{
    pthread_mutex_lock(&b->mutex);
    b->accepting = false;
    b->stopping = true;
    b->stop_steps_until_ns = serve__now_ns() + REPLICA_STOP_STEPS_MS * 1000000ull;
    wake_parked(b, PARKED_NO);
    pthread_mutex_unlock(&b->mutex);
    for (size_t i = 0; i < b->replica_count; i++) {
        if (b->replicas[i].thread_started) pthread_join(b->replicas[i].thread, NULL);
        b->replicas[i].thread_started = false;
    }
    destroy_replicas(b);
    char msg[256];
    snprintf(msg, sizeof msg, "backend %s stopped before its plugin answered", b->spec.name);
    /* Left only when no replica was up to take it (all down at the stop). */
    reject_queue(b, msg);
    for (size_t i = 0; i < b->replica_count; i++) {
        struct replica *r = &b->replicas[i];
        for (;;) {
            pthread_mutex_lock(&b->mutex);
            serve_request *req = r->deferred_head;
            pthread_mutex_unlock(&b->mutex);
            if (!req) break;
            if (req->stream) /* its head may be out: it ends as a failed stream */
                stream_finish_local(req, msg);
            else
                backend_deferred_answered(req, request_answer_runtime(req, 503, msg));
        }
    }
}

/* Under b->mutex. */
static bool any_replica_up(const struct backend *b)
{
    for (size_t i = 0; i < b->replica_count; i++) {
        const struct replica *r = &b->replicas[i];
        if (!r->down && !r->retiring && !r->empty) return true;
    }
    return false;
}

void backend_replica_down(struct replica_base *base, const char *unavailable)
{
    struct replica *r = (struct replica *)base;
    struct backend *b = r->backend;
    pthread_mutex_lock(&b->mutex);
    r->down = true;
    /* Parked for work it can no longer take: out of the way of the
     * enqueues that wake one ready replica (backend_replica_up wakes it). */
    if (r->parked == PARKED_READY || r->parked == PARKED_BUSY) r->parked = PARKED_DOWN;
    bool reject = unavailable && !any_replica_up(b);
    if (reject) snprintf(b->unavailable, sizeof b->unavailable, "%s", unavailable);
    struct replica *idle = b->queue_len ? unpark_one_ready(b) : NULL;
    pthread_mutex_unlock(&b->mutex);
    if (idle) park_wake(&idle->park);
    if (reject) reject_queue(b, unavailable);
}

void backend_replica_up(struct replica_base *base)
{
    struct replica *r = (struct replica *)base;
    struct backend *b = r->backend;
    pthread_mutex_lock(&b->mutex);
    r->down = false;
    b->unavailable[0] = '\0';
    bool wake = r->parked == PARKED_DOWN;
    if (wake) r->parked = PARKED_NO;
    pthread_mutex_unlock(&b->mutex);
    if (wake) park_wake(&r->park);
}

void backend_replica_batch_ran(struct replica_base *base, size_t n, uint64_t took)
{
    struct replica *r = (struct replica *)base;
    struct backend *b = r->backend;
    histogram_observe(&b->m->exec_seconds, took);
    if (b->tuner) batch_tuner_observe(b->tuner, n, took, serve__now_ns());
    double timeout_ms = b->spec.options.request_timeout_ms;
    double hang_ms = b->spec.options.hang_timeout_ms;
    if (hang_ms > 0 && took / 1e6 > hang_ms && b->kind == &replica_kind_thread)
        LOG_WARN("backend=%s replica=%d: handle_batch of %zu ran %.1f s, past --hang-timeout-ms "
                 "%g (a thread replica cannot be stopped; --isolation process kills and restarts "
                 "a hung replica)", b->spec.name, r->base.index, n, took / 1e9, hang_ms);
    if (timeout_ms > 0 && took / 1e6 > timeout_ms)
        LOG_WARN("backend=%s replica=%d: handle_batch of %zu ran %.1f s, past the %g ms request "
                 "timeout (its clients got 504; the replica took no other work meanwhile)",
                 b->spec.name, r->base.index, n, took / 1e9, timeout_ms);
}

void backend_replica_wake(struct replica_base *base)
{
    struct replica *r = (struct replica *)base;
    struct backend *b = r->backend;
    pthread_mutex_lock(&b->mutex);
    bool wake = r->parked == PARKED_BUSY;
    if (wake) r->parked = PARKED_NO;
    pthread_mutex_unlock(&b->mutex);
    if (wake) park_wake(&r->park);
}

void backend_replica_crashed(struct replica_base *base, enum crash_reason reason, int sig,
                             const char *text)
{
    struct replica *r = (struct replica *)base;
    struct backend *b = r->backend;
    atomic_fetch_add_explicit(&b->m->crashes[reason], 1, memory_order_relaxed);
    if (reason == CRASH_SIGNAL)
        atomic_fetch_add_explicit(&b->m->crash_signals[sig > 0 && sig < 65 ? sig : 0], 1,
                                  memory_order_relaxed);
    pthread_mutex_lock(&last_crash_lock);
    snprintf(b->m->last_crash, sizeof b->m->last_crash, "%s", text);
    pthread_mutex_unlock(&last_crash_lock);
}

void backend_unavailable_reason(struct backend *b, char *out, size_t len)
{
    pthread_mutex_lock(&b->mutex);
    snprintf(out, len, "%s", b->unavailable[0] ? b->unavailable : "backend unavailable");
    pthread_mutex_unlock(&b->mutex);
}

bool backend_can_reconfigure(const struct backend *b)
{
    return b->group.can_reconfigure;
}

/* Runs reconfigure(config) on every replica; returns the index of the first
 * replica that refused, or -1. */
static long reconfigure_all(struct backend *b, const serve_config *config, bool *took)
{
    pthread_mutex_lock(&b->mutex);
    b->pending_config = config;
    /* A drained replica (autoscaling) is stopped before it runs again. */
    for (size_t i = 0; i < b->replica_count; i++)
        b->replicas[i].reconfigure_pending = !b->replicas[i].exited && !b->replicas[i].empty;
    wake_parked(b, PARKED_NO);
    for (size_t i = 0; i < b->replica_count; i++)
        while (b->replicas[i].reconfigure_pending) pthread_cond_wait(&b->reconfigured, &b->mutex);
    long failed = -1;
    for (size_t i = 0; i < b->replica_count; i++) {
        if (b->replicas[i].exited || b->replicas[i].empty) b->replicas[i].reconfigure_rc = 0;
        if (took) took[i] = b->replicas[i].reconfigure_rc == 0;
        if (b->replicas[i].reconfigure_rc != 0 && failed < 0) failed = (long)i;
    }
    b->pending_config = NULL;
    pthread_mutex_unlock(&b->mutex);
    return failed;
}

bool backend_reconfigure(struct backend *b, const serve_config *config, char *err,
                         size_t errlen)
{
    serve_config *copy = config_copy(config);
    bool *took = calloc(b->replica_count, sizeof *took);
    if (!copy || !took) {
        config_free(copy);
        free(took);
        snprintf(err, errlen, "out of memory");
        return false;
    }
    long failed = reconfigure_all(b, copy, took);
    if (failed >= 0) {
        const struct replica *r = &b->replicas[failed];
        if (r->reconfigure_why[0])
            snprintf(err, errlen, "plugin %s: reconfigure failed on replica %ld of backend %s: %s",
                     b->spec.plugin, failed, b->spec.name, r->reconfigure_why);
        else
            snprintf(err, errlen,
                     "plugin %s: reconfigure failed on replica %ld of backend %s (code %d)",
                     b->spec.plugin, failed, b->spec.name, r->reconfigure_rc);
        LOG_WARN("backend=%s: new config refused, the replicas keep the old one: %s",
                 b->spec.name, err);
        /* The old config back everywhere, so all replicas agree again. */
        reconfigure_all(b, b->spec.config, NULL);
        config_free(copy);
        free(took);
        return false;
    }
    free(took);
    config_free(b->spec.config);
    b->spec.config = copy;
    return true;
}

void backend_reject_queued(struct backend *b)
{
    pthread_mutex_lock(&b->mutex);
    b->reject_queued = true;
    wake_parked(b, PARKED_NO);
    pthread_mutex_unlock(&b->mutex);
}

void backend_defer(serve_request *req)
{
    struct replica *r = req->replica;
    struct backend *b = r->backend;
    pthread_mutex_lock(&b->mutex);
    req->deferred = true;
    req->deferred_prev = NULL;
    req->deferred_next = r->deferred_head;
    if (r->deferred_head) r->deferred_head->deferred_prev = req;
    r->deferred_head = req;
    pthread_mutex_unlock(&b->mutex);
}

/* Under b->mutex: req leaves r's list of deferred requests. */
static void unlink_deferred(struct replica *r, serve_request *req)
{
    if (req->deferred_prev)
        req->deferred_prev->deferred_next = req->deferred_next;
    else
        r->deferred_head = req->deferred_next;
    if (req->deferred_next) req->deferred_next->deferred_prev = req->deferred_prev;
    req->deferred_prev = req->deferred_next = NULL;
}

void backend_deferred_answered(serve_request *req, bool answer_won)
{
    struct replica *r = req->replica;
    struct backend *b = r->backend;
    pthread_mutex_lock(&b->mutex);
    unlink_deferred(r, req);
    r->in_flight--;
    bool wake = r->parked == PARKED_AT_LIMIT; /* a slot of its own is free again */
    if (wake) r->parked = PARKED_NO;
    pthread_mutex_unlock(&b->mutex);
    if (wake) park_wake(&r->park);
    if (answer_won && req->status >= 500) backend_count_rejection(b, REJECT_PLUGIN_ERROR);
    if (answer_won) observe_latencies(b, &req, 1);
    if (answer_won)
        req->deliver(req);
    else
        request_release(req); /* timed out: drop the execution reference */
}

void backend_deferred_answered_many(serve_request **reqs, const bool *won, size_t n)
{
    if (n == 0) return;
    struct replica *r = reqs[0]->replica;
    struct backend *b = r->backend;
    pthread_mutex_lock(&b->mutex);
    for (size_t i = 0; i < n; i++) unlink_deferred(r, reqs[i]);
    r->in_flight -= (uint32_t)n;
    if (!b->kind->run_batch_nowait || !dispatch_here(b, r, true)) {
        bool wake = r->parked == PARKED_AT_LIMIT;
        if (wake) r->parked = PARKED_NO;
        pthread_mutex_unlock(&b->mutex);
        if (wake) park_wake(&r->park);
    }
    observe_latencies(b, reqs, n); /* those whose answer won (the others are not answered) */
    for (size_t i = 0; i < n; i++) {
        serve_request *req = reqs[i];
        if (!won[i]) {
            request_release(req); /* timed out: drop the execution reference */
            reqs[i] = NULL;
            continue;
        }
        if (req->status >= 500) backend_count_rejection(b, REJECT_PLUGIN_ERROR);
        if (!req->answers) {
            reqs[i] = NULL;
            req->deliver(req);
        }
    }
    push_answers(reqs, n);
}

void backend_timed_out(struct backend *b, const serve_request *req, char *msg, size_t len)
{
    double timeout_ms = b->spec.options.request_timeout_ms;
    snprintf(msg, len, "request timed out after %g ms in backend %s", timeout_ms, b->spec.name);
    backend_count_rejection(b, REJECT_TIMEOUT);
    pthread_mutex_lock(&b->mutex);
    int replica = req->replica ? req->replica->base.index : -1;
    pthread_mutex_unlock(&b->mutex);
    char where[32] = "queued";
    if (replica >= 0) snprintf(where, sizeof where, "replica=%d", replica);
    LOG_WARN("backend=%s %s request=%s: no answer within %g ms; %s got 504", b->spec.name, where,
             req->id, timeout_ms, req->call_done ? "the caller" : "the client");
}

void backend_report_plugin_bug(const serve_request *req, const char *what)
{
    const struct replica *r = req->replica;
    LOG_ERROR("backend=%s replica=%d request=%s: plugin bug: %s",
              r ? r->backend->spec.name : "?", r ? r->base.index : -1,
              req->id ? req->id : "-", what);
}

void backend_pack_status(struct backend *b, msgpack_packer *pk)
{
    /* One look under the lock: counts that agree with each other. */
    size_t queued, in_flight = 0, busy = 0;
    pthread_mutex_lock(&b->mutex);
    queued = b->queue_len;
    for (size_t i = 0; i < b->replica_count; i++) {
        in_flight += b->replicas[i].in_flight;
        busy += b->replicas[i].in_flight > 0;
    }
    size_t running = running_count(b);
    uint64_t crashes = 0;
    for (int i = 0; i < CRASH_REASONS; i++) crashes += atomic_load(&b->m->crashes[i]);
    char last_crash[sizeof b->m->last_crash];
    pthread_mutex_lock(&last_crash_lock);
    memcpy(last_crash, b->m->last_crash, sizeof last_crash);
    pthread_mutex_unlock(&last_crash_lock);
    char unavailable[sizeof b->unavailable];
    memcpy(unavailable, b->unavailable, sizeof unavailable);
    pthread_mutex_unlock(&b->mutex);
    msgpack_pack_map(pk, 15 + (b->autoscaled ? 1 : 0) + (b->tuner ? 1 : 0));
    mp_pack_key(pk, "replicas");
    msgpack_pack_uint64(pk, running);
    mp_pack_key(pk, "target_replicas");
    msgpack_pack_uint32(pk, atomic_load(&b->target_replicas));
    if (b->autoscaled) {
        /* The sample's figures; the bounds and delays are in the spec. */
        mp_pack_key(pk, "autoscaling");
        msgpack_pack_map(pk, 2);
        mp_pack_key(pk, "ongoing");
        msgpack_pack_double(pk, b->last_ongoing);
        mp_pack_key(pk, "mean_ongoing");
        msgpack_pack_double(pk, autoscale_mean_ongoing(&b->autoscale, serve__now_ns()));
    }
    if (b->tuner) {
        struct batch_tuner_view v;
        batch_tuner_view(b->tuner, &v);
        mp_pack_key(pk, "adaptive_batching");
        msgpack_pack_map(pk, 5);
        mp_pack_key(pk, "max_batch_size");
        msgpack_pack_uint32(pk, v.max_batch);
        mp_pack_key(pk, "batch_wait_timeout_ms");
        msgpack_pack_double(pk, v.wait_ms);
        mp_pack_key(pk, "p99_ms");
        msgpack_pack_double(pk, v.p99_ms);
        mp_pack_key(pk, "headroom");
        msgpack_pack_double(pk, v.headroom);
        mp_pack_key(pk, "latency_slo_ms");
        msgpack_pack_double(pk, v.slo_ms);
    }
    mp_pack_key(pk, "busy_replicas");
    msgpack_pack_uint64(pk, busy);
    mp_pack_key(pk, "concurrency"); /* max_concurrent_queries in force */
    msgpack_pack_uint32(pk, b->concurrency);
    mp_pack_key(pk, "spec");
    /* As the state file has it: the count autoscaling chose last. */
    struct backend_spec shown = b->spec;
    shown.options.num_replicas = atomic_load(&b->target_replicas);
    backend_spec_pack(pk, &shown);
    mp_pack_key(pk, "plugin_name");
    mp_pack_str(pk, b->group_open ? b->group.label : "?");
    mp_pack_key(pk, "queued");
    msgpack_pack_uint64(pk, queued);
    mp_pack_key(pk, "in_flight");
    msgpack_pack_uint64(pk, in_flight);
    mp_pack_key(pk, "requests");
    msgpack_pack_uint64(pk, atomic_load(&b->m->requests_total));
    mp_pack_key(pk, "batches");
    msgpack_pack_uint64(pk, atomic_load(&b->m->batches_total));
    mp_pack_key(pk, "cancelled");
    msgpack_pack_uint64(pk, atomic_load(&b->m->cancelled_total));
    mp_pack_key(pk, "isolation");
    mp_pack_str(pk, b->kind->name);
    mp_pack_key(pk, "crashes");
    msgpack_pack_uint64(pk, crashes);
    mp_pack_key(pk, "last_crash");
    mp_pack_str(pk, last_crash);
    mp_pack_key(pk, "unavailable");
    mp_pack_str(pk, unavailable);
}

void backend_totals(struct backend *b, uint64_t *requests, uint64_t *batches, uint64_t *batch_sum)
{
    *requests = atomic_load(&b->m->requests_total);
    *batches = atomic_load(&b->m->batch_size.count);
    *batch_sum = atomic_load(&b->m->batch_size.sum);
}

void backend_count_replica_restarts(struct backend *b)
{
    atomic_fetch_add_explicit(&b->m->replica_restarts, b->replica_count, memory_order_relaxed);
}

void backend_count_rejection(struct backend *b, enum reject_reason reason)
{
    atomic_fetch_add_explicit(&b->m->rejected[reason], 1, memory_order_relaxed);
}

void backend_write_metrics(struct backend *const *backends, size_t count, struct evbuffer *out)
{
    static const struct {
        const char *name, *type, *help;
    } series[] = {
        {"serve_backend_requests_total", "counter", "Requests a backend took (HTTP, handle and shadow)."},
        {"serve_backend_batches_total", "counter", "handle_batch calls."},
        {"serve_backend_queued_requests", "gauge", "Requests waiting for a replica."},
        {"serve_backend_replicas", "gauge", "Replicas running."},
        {"serve_backend_batch_size", "histogram", "Requests per handle_batch call."},
        {"serve_backend_queue_seconds", "histogram", "Time from queued to handed to the plugin."},
        {"serve_backend_exec_seconds", "histogram", "Duration of one handle_batch call."},
        {"serve_backend_batch_wait_seconds", "histogram", "From a batch's first request queued to the batch dispatched."},
        {"serve_requests_rejected_total", "counter", "Requests answered with an error by reason: backpressure (503), timeout (504), plugin_error (5xx from the plugin or the runtime on its behalf)."},
        {"serve_replica_in_flight", "gauge", "Requests a replica holds: executing or deferred."},
        {"serve_handle_calls_total", "counter", "Handle calls sent by a backend's replicas, by target endpoint."},
        {"serve_backend_replica_restarts_total", "counter", "Replicas started again because an update replaced them."},
        {"serve_backend_cancelled_total", "counter", "Queued requests dropped before they ran because their client went away."},
        {"serve_backend_replica_crashes_total", "counter", "Process replicas that died, by reason: the signal's name (SIGSEGV), exit, hang (past --hang-timeout-ms) or memory (past --max-memory); each is restarted."},
        {"serve_remote_requests_total", "counter", "Requests a remote backend forwarded, by the status its caller got (the remote's, or 502 when unreachable or garbled, 499 when cancelled)."},
        {"serve_remote_request_seconds", "histogram", "Time from a remote backend taking a request to its answer (the whole answer, or a stream's head)."},
        {"serve_backend_target_replicas", "gauge", "Replicas a backend should run: the autoscaler's choice, or --num-replicas."},
        {"serve_backend_adaptive_max_batch_size", "gauge", "The max batch size adaptive batching (--latency-slo-ms) chose."},
        {"serve_backend_adaptive_batch_wait_seconds", "gauge", "The batch wait adaptive batching (--latency-slo-ms) chose."},
        {"serve_backend_adaptive_p99_seconds", "gauge", "p99 queue + execution time adaptive batching measured over its last period."},
    };
    static const char *const crash_reasons[CRASH_REASONS] = {"signal", "exit", "hang", "memory"};
    static const char *const reasons[REJECT_REASONS] = {"backpressure", "timeout", "plugin_error"};
    for (size_t k = 0; k < sizeof series / sizeof *series; k++) {
        evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", series[k].name, series[k].help,
                            series[k].name, series[k].type);
        for (size_t i = 0; i < count; i++) {
            struct backend *b = backends[i];
            char labels[128];
            snprintf(labels, sizeof labels, "backend=\"%s\"", b->spec.name);
            struct backend_metrics *m = b->m;
            switch (k) {
            case 0: evbuffer_add_printf(out, "%s{%s} %lu\n", series[k].name, labels,
                                        atomic_load(&m->requests_total)); break;
            case 1: evbuffer_add_printf(out, "%s{%s} %lu\n", series[k].name, labels,
                                        atomic_load(&m->batches_total)); break;
            case 2: {
                pthread_mutex_lock(&b->mutex);
                size_t queued = b->queue_len;
                pthread_mutex_unlock(&b->mutex);
                evbuffer_add_printf(out, "%s{%s} %zu\n", series[k].name, labels, queued);
                break;
            }
            case 3: {
                pthread_mutex_lock(&b->mutex);
                size_t running = running_count(b);
                pthread_mutex_unlock(&b->mutex);
                evbuffer_add_printf(out, "%s{%s} %zu\n", series[k].name, labels, running);
                break;
            }
            case 4: histogram_write(&m->batch_size, out, series[k].name, labels); break;
            case 5: histogram_write(&m->queue_seconds, out, series[k].name, labels); break;
            case 6: histogram_write(&m->exec_seconds, out, series[k].name, labels); break;
            case 7: histogram_write(&m->batch_wait_seconds, out, series[k].name, labels); break;
            case 8:
                for (int r = 0; r < REJECT_REASONS; r++)
                    evbuffer_add_printf(out, "%s{%s,reason=\"%s\"} %lu\n", series[k].name, labels,
                                        reasons[r], atomic_load(&m->rejected[r]));
                break;
            case 9:
                pthread_mutex_lock(&b->mutex);
                for (size_t r = 0; r < b->replica_count; r++)
                    if (!b->replicas[r].empty)
                        evbuffer_add_printf(out, "%s{%s,replica=\"%zu\"} %u\n", series[k].name, labels,
                                        r, b->replicas[r].in_flight);
                pthread_mutex_unlock(&b->mutex);
                break;
            case 10:
                for (struct handle_calls *c = atomic_load(&m->calls); c; c = c->next)
                    evbuffer_add_printf(out, "%s{%s,target=\"%s\"} %lu\n", series[k].name, labels,
                                        c->target, atomic_load(&c->count));
                break;
            case 11:
                evbuffer_add_printf(out, "%s{%s} %lu\n", series[k].name, labels,
                                    atomic_load(&m->replica_restarts));
                break;
            case 12:
                evbuffer_add_printf(out, "%s{%s} %lu\n", series[k].name, labels,
                                    atomic_load(&m->cancelled_total));
                break;
            case 14:
                if (!atomic_load(&m->remote)) break;
                for (int s = 0; s < 500; s++) {
                    unsigned long n = atomic_load(&m->remote_by_status[s]);
                    if (n)
                        evbuffer_add_printf(out, "%s{%s,code=\"%d\"} %lu\n", series[k].name,
                                            labels, s + 100, n);
                }
                break;
            case 15:
                if (atomic_load(&m->remote))
                    histogram_write(&m->remote_seconds, out, series[k].name, labels);
                break;
            case 16:
                evbuffer_add_printf(out, "%s{%s} %u\n", series[k].name, labels,
                                    atomic_load(&b->target_replicas));
                break;
            case 17:
            case 18:
            case 19: {
                if (!b->tuner) break;
                struct batch_tuner_view v;
                batch_tuner_view(b->tuner, &v);
                double value = k == 17 ? v.max_batch : k == 18 ? v.wait_ms / 1e3 : v.p99_ms / 1e3;
                evbuffer_add_printf(out, "%s{%s} %g\n", series[k].name, labels, value);
                break;
            }
            case 13:
                /* By signal name (those seen), then exit, hang and memory. */
                for (int sig = 0; sig < 65; sig++) {
                    unsigned long n = atomic_load(&m->crash_signals[sig]);
                    if (n)
                        evbuffer_add_printf(out, "%s{%s,reason=\"%s\"} %lu\n", series[k].name,
                                            labels, sig ? signal_name(sig) : "signal", n);
                }
                for (int c = CRASH_EXIT; c < CRASH_REASONS; c++)
                    evbuffer_add_printf(out, "%s{%s,reason=\"%s\"} %lu\n", series[k].name,
                                        labels, crash_reasons[c], atomic_load(&m->crashes[c]));
                break;
            }
        }
    }
}
