/* backend_internal.h - a backend's insides, shared by backend.c (the
 * queue, batching, workers, stop) and backend_scale.c (the replica set
 * growing and draining under autoscaling). Nothing else includes it. */
#ifndef SERVE_RUNTIME_BACKEND_INTERNAL_H
#define SERVE_RUNTIME_BACKEND_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autoscale.h"
#include "backend.h"
#include "log.h"
#include "park.h"
#include "replica_kind.h"

enum parked { PARKED_NO, PARKED_READY, PARKED_AT_LIMIT, PARKED_DOWN, PARKED_BUSY };

struct replica {
    struct replica_base base; /* what the kind sees */
    struct backend *backend;
    pthread_t thread;
    bool thread_started;
    bool started; /* the kind's start succeeded; stop not called yet */
    /* Where the worker sleeps, and why (guarded by backend->mutex): with
     * room for work (a new request wakes one such replica), or at its
     * concurrency limit (woken when one of its deferred requests is
     * answered, or a re-entrant call arrives). No wake-up is spent on a
     * replica that cannot take the request, and none wakes them all. */
    struct park park;
    int parked; /* enum parked */
    /* Guarded by backend->mutex. */
    uint32_t in_flight;
    serve_request *deferred_head;
    bool reconfigure_pending;
    int reconfigure_rc;
    char reconfigure_why[512]; /* with a refusal: why, or "" */
    bool down;      /* the kind said it cannot take work (backend_replica_down) */
    bool requeued;  /* its last batch came back unrun */
    /* Autoscaling's drain: a retiring replica takes no new work and its
     * worker ends once it holds nothing (`exited`); the control thread
     * then stops it (reap_retired). `reaping`: no cancel may reach it. */
    bool retiring;
    bool exited;
    bool reaping;
    bool empty; /* a slot below replica_count whose replica was stopped */
    struct log_rate batch_failures; /* the worker's */
};

struct backend {
    atomic_int refs;
    struct backend_spec spec;
    const struct replica_kind *kind;
    struct replica_group group;
    bool group_open;
    uint32_t concurrency;
    uint64_t batch_wait_ns;

    pthread_mutex_t mutex;
    pthread_cond_t reconfigured;
    const serve_config *pending_config;
    serve_request *queue_head;
    serve_request *queue_tail;
    size_t queue_len;
    bool accepting;
    bool stopping;
    uint64_t stop_steps_until_ns; /* continuous replicas step open streams until then */
    bool reject_queued;

    /* Slots [0, replica_count) are started: the running ones first, then
     * those retiring. replica_count changes under mutex (on the control
     * thread); the array holds replica_capacity (the autoscaling maximum)
     * and never moves. */
    struct replica *replicas;
    size_t replica_count;
    size_t replica_capacity;

    /* Autoscaling (control thread; target_replicas read by any). */
    bool autoscaled;
    struct autoscale autoscale;
    _Atomic uint32_t target_replicas;
    double last_ongoing;
    uint64_t scale_retry_at_ns; /* no start attempt before (after a failed one) */
    uint64_t scale_backoff_ns;

    struct batch_tuner *tuner; /* --latency-slo-ms; NULL: static batching */

    struct backend_metrics *m; /* shared with the objects that carried the name before */

    /* Guarded by mutex. */
    char unavailable[1200]; /* why requests get 503 while no replica is up; "" */
    /* Cancel callbacks running (backend_request_cancelled), which the
     * replicas' stop waits for; none starts once `stopping_replicas`. */
    unsigned cancels_running;
    unsigned handovers_running; /* run_batch calls of dispatch_here under way */
    bool stopping_replicas;
};

/* backend.c, for backend_scale.c. */
/* Slot i made ready for the kind's start. */
struct replica *replica_slot_init(struct backend *b, size_t i);
/* A replica's worker thread. */
void *replica_main(void *arg);
/* Under b->mutex: takes one replica parked with room for work off its
 * park, for the caller to wake; NULL when none is. */
struct replica *unpark_one_ready(struct backend *b);
/* backend_scale.c, for backend.c. Under b->mutex: replicas that take work. */
size_t running_count(const struct backend *b);

#endif
