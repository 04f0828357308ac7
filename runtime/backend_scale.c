/* backend_scale.c - a backend's replica set growing and draining while it
 * serves (autoscaling, backend.h). Only the control thread changes it
 * (backend_autoscale_tick and backend_set_target_replicas), so these need
 * no lock of their own; what workers and I/O threads read changes under
 * the backend's mutex. */
#include <stdio.h>
#include <string.h>

#include "backend_internal.h"
#include "batch_tuner.h"
#include "clock.h"

/* The backoff between attempts to start a replica after one failed. */
#define SCALE_RETRY_MIN_NS (1000ull * 1000 * 1000)
#define SCALE_RETRY_MAX_NS (30000ull * 1000 * 1000)

/* Under b->mutex: replicas that take work. */
size_t running_count(const struct backend *b)
{
    size_t n = 0;
    for (size_t i = 0; i < b->replica_count; i++)
        n += !b->replicas[i].retiring && !b->replicas[i].empty;
    return n;
}

/* Starts a replica in the lowest free slot; it is routed to (its worker
 * takes from the queue) only once the kind's start succeeded. */
static bool start_replica(struct backend *b, char *err, size_t errlen)
{
    pthread_mutex_lock(&b->mutex);
    size_t i = 0;
    while (i < b->replica_count && !b->replicas[i].empty) i++;
    if (i == b->replica_capacity) {
        pthread_mutex_unlock(&b->mutex);
        snprintf(err, errlen, "no free replica slot (%zu in use)", i);
        return false;
    }
    struct replica *r = replica_slot_init(b, i);
    r->empty = true; /* a reused slot: not counted, not reached, until started */
    pthread_mutex_unlock(&b->mutex);
    if (!b->kind->start(&r->base, err, errlen)) return false;
    r->started = true;
    pthread_mutex_lock(&b->mutex);
    r->empty = false; /* `down` is the kind's to say, from its start on */
    if (i == b->replica_count) b->replica_count = i + 1;
    pthread_mutex_unlock(&b->mutex);
    int rc = pthread_create(&r->thread, NULL, replica_main, r);
    if (rc != 0) {
        pthread_mutex_lock(&b->mutex);
        r->empty = true;
        pthread_mutex_unlock(&b->mutex);
        b->kind->stop(&r->base);
        r->started = false;
        snprintf(err, errlen, "cannot start a worker thread: %s", strerror(rc));
        return false;
    }
    r->thread_started = true;
    return true;
}

/* Under b->mutex: a running replica starts to drain: the highest that is
 * down (restarting after a crash) if any, else the highest. */
static void retire_one(struct backend *b)
{
    struct replica *down = NULL;
    for (size_t i = b->replica_count; i-- > 0 && !down;)
        if (!b->replicas[i].retiring && !b->replicas[i].empty && b->replicas[i].down)
            down = &b->replicas[i];
    for (size_t i = b->replica_count; i-- > 0;) {
        struct replica *r = &b->replicas[i];
        if (down && r != down) continue;
        if (r->retiring || r->empty) continue;
        r->retiring = true;
        LOG_INFO("backend=%s replica=%zu: draining (autoscaling down)", b->spec.name, i);
        if (r->parked != PARKED_NO) {
            r->parked = PARKED_NO;
            park_wake(&r->park);
        }
        return;
    }
}

/* Under b->mutex: a draining replica whose worker still runs takes work
 * again, cheaper than starting one. False when none can. */
static bool unretire_one(struct backend *b)
{
    for (size_t i = 0; i < b->replica_count; i++) {
        struct replica *r = &b->replicas[i];
        if (!r->retiring || r->exited || r->empty) continue;
        r->retiring = false;
        LOG_INFO("backend=%s replica=%zu: kept (autoscaling up while it drained)", b->spec.name, i);
        if (r->parked != PARKED_NO) {
            r->parked = PARKED_NO;
            park_wake(&r->park);
        }
        return true;
    }
    return false;
}

/* Stops the replicas that finished draining; their slots are free again. */
static void reap_retired(struct backend *b)
{
    for (size_t i = 0; i < b->replica_count; i++) {
        struct replica *r = &b->replicas[i];
        pthread_mutex_lock(&b->mutex);
        bool done = r->retiring && r->exited && !r->empty;
        if (done) {
            r->reaping = true; /* no new cancel reaches it */
            while (b->cancels_running) pthread_cond_wait(&b->reconfigured, &b->mutex);
        }
        pthread_mutex_unlock(&b->mutex);
        if (!done) continue;
        pthread_join(r->thread, NULL);
        r->thread_started = false;
        b->kind->stop(&r->base);
        r->started = false;
        pthread_mutex_lock(&b->mutex);
        r->empty = true;
        while (b->replica_count && b->replicas[b->replica_count - 1].empty) b->replica_count--;
        pthread_mutex_unlock(&b->mutex);
        LOG_INFO("backend=%s replica=%zu: drained and stopped", b->spec.name, i);
    }
}

/* Moves the running replicas to the target: drains the extra ones, or
 * keeps draining ones and starts new ones. */
static void converge(struct backend *b)
{
    uint32_t target = atomic_load(&b->target_replicas);
    pthread_mutex_lock(&b->mutex);
    size_t running = running_count(b);
    for (; running > target; running--) retire_one(b);
    while (running < target && unretire_one(b)) running++;
    pthread_mutex_unlock(&b->mutex);
    uint64_t now = serve__now_ns();
    for (; running < target && now >= b->scale_retry_at_ns; running++) {
        char err[1024];
        if (start_replica(b, err, sizeof err)) {
            b->scale_backoff_ns = 0;
            continue;
        }
        /* A start that fails (an init that cannot load its model) is
         * tried again after a backoff, not on every tick. */
        b->scale_backoff_ns = b->scale_backoff_ns ? b->scale_backoff_ns * 2 : SCALE_RETRY_MIN_NS;
        if (b->scale_backoff_ns > SCALE_RETRY_MAX_NS) b->scale_backoff_ns = SCALE_RETRY_MAX_NS;
        b->scale_retry_at_ns = now + b->scale_backoff_ns;
        /* The backoff spaces these lines too: each attempt is logged. */
        LOG_ERROR("backend=%s: cannot start a replica to reach %u (tried again in %.0f s): %s",
                  b->spec.name, target, b->scale_backoff_ns / 1e9, err);
        break;
    }
    if (b->tuner) batch_tuner_set_replicas(b->tuner, (uint32_t)running);
}

bool backend_autoscale_tick(struct backend *b, uint64_t now_ns)
{
    if (!b->autoscaled) return false;
    reap_retired(b);
    pthread_mutex_lock(&b->mutex);
    size_t ongoing = b->queue_len;
    for (size_t i = 0; i < b->replica_count; i++) ongoing += b->replicas[i].in_flight;
    bool stopping = b->stopping;
    pthread_mutex_unlock(&b->mutex);
    if (stopping) return false;
    b->last_ongoing = (double)ongoing;
    uint32_t before = b->autoscale.target;
    char why[256];
    uint32_t target = autoscale_sample(&b->autoscale, (double)ongoing, now_ns, why, sizeof why);
    if (target != before) {
        LOG_INFO("backend=%s: autoscaling from %u to %u replicas: %s", b->spec.name, before,
                 target, why);
        atomic_store(&b->target_replicas, target);
    }
    converge(b);
    return target != before;
}

bool backend_autoscaled(const struct backend *b) { return b->autoscaled; }

uint32_t backend_target_replicas(const struct backend *b)
{
    return atomic_load(&b->target_replicas);
}

void backend_set_target_replicas(struct backend *b, uint32_t n)
{
    if (!b->autoscaled) return;
    struct autoscale_policy policy = b->autoscale.policy;
    autoscale_init(&b->autoscale, &policy, n);
    uint32_t target = b->autoscale.target;
    if (target != atomic_load(&b->target_replicas))
        LOG_INFO("backend=%s: %u replicas, as update-backend --num-replicas asked (within %u..%u)",
                 b->spec.name, target, policy.min_replicas, policy.max_replicas);
    atomic_store(&b->target_replicas, target);
    converge(b);
}

