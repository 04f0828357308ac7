/* replica_kind.h - what runs a backend's batches: a replica kind.
 *
 * A backend (backend.c) owns the queue, the batching rule, the concurrency
 * limit of each replica, backpressure, reconfigure sequencing and stop, the
 * same for every kind. A kind only runs what it is given: threads in this
 * process (replica_thread.c, plugins opened with dlopen), processes
 * (replica_process.c) and remote servers (replica_remote.c).
 *
 * Each replica has one worker thread in backend.c that forms batches and
 * calls run_batch, reconfigure and stop on it, never two at once (but see
 * `idle` for the run_batch of an asynchronous kind). A kind
 * that hands a batch to something else (a child process, a connection)
 * defers every request (serve_request_defer) and answers it later from any
 * thread (serve_respond and friends), as a plugin answers a deferred request.
 *
 * The table is a const object with static storage; the backend keeps a
 * pointer to it. */
#ifndef SERVE_RUNTIME_REPLICA_KIND_H
#define SERVE_RUNTIME_REPLICA_KIND_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "request.h"
#include "spec.h"

struct backend;
struct backend_metrics;

/* What a kind shares between the replicas of one backend (the thread kind:
 * the opened plugin). Filled by open. */
struct replica_group {
    void *data;              /* the kind's */
    const char *label;       /* what status calls plugin_name; never NULL */
    bool can_reconfigure;    /* reconfigure may be called */
    /* The tensors replica 0 declared, as the JSON members "inputs": [...],
     * "outputs": [...] of the OIP model metadata (malloc'd; NULL: none).
     * Set by start of replica 0, before the backend is routed to; freed
     * by the backend after close. */
    char *tensor_metadata;
};

/* One replica as a kind sees it. The backend sets these fields before
 * start and does not change them afterwards, except `data`, which is the
 * kind's. The rest of the replica is the backend's (backend.c). */
struct replica_base {
    const struct backend_spec *spec;     /* the backend's; config as at start */
    struct replica_group *group;         /* a kind may fill label at first start */
    struct backend_metrics *metrics;     /* the backend's, never NULL */
    int index;                           /* 0 .. num_replicas-1 */
    void *data;                          /* the kind's, set by start */
    /* Continuous batching (serve_replica_continue). `again`: the batch
     * just run asked for another step at once (set by a kind whose
     * run_batch runs the plugin, after each run); `continuous`: the plugin
     * has asked once, so its deferred requests count against the max batch
     * size (set by either kind; for process replicas by the monitor). */
    bool again;
    atomic_bool continuous;
};

struct replica_kind {
    const char *name; /* "thread" */

    /* Control thread, once per backend, before any start. Fills *group.
     * On failure returns false with one line in err; close is not called. */
    bool (*open)(const struct backend_spec *spec, struct replica_group *group, char *err,
                 size_t errlen);

    /* When the backend's last reference goes: no request of the backend is
     * alive any more (answers may hold code of the group, e.g. free_body). */
    void (*close)(struct replica_group *group);

    /* Control thread, replica by replica, in index order. On failure returns
     * false with one line in err, having undone its own work; stop is then
     * not called for this replica. */
    bool (*start)(struct replica_base *r, char *err, size_t errlen);

    /* The replica's worker thread, outside the backend's lock. Each request
     * is answered or deferred by the time it returns; the backend answers
     * any other with 500 (naming rc when it is not 0). REPLICA_DOWN: the
     * replica could not take the batch (its process is gone) and touched
     * none of it; the backend queues the requests again, in front. */
    int (*run_batch)(struct replica_base *r, serve_request **reqs, size_t n);

    /* Optional: false while the replica still runs a batch it was given
     * (a kind whose run_batch returns before the batch ran). The worker
     * then forms a partial batch only once the replica is idle again, as a
     * thread replica's worker does, and waits for backend_replica_wake;
     * a full batch may go at once, and only whole batches go while others
     * wait. NULL: run_batch runs the batch. A kind with idle also has its
     * run_batch called by enqueuing threads (any thread, concurrently with
     * the worker's) for backends with max batch 1 while the replica's
     * worker sleeps: it must only hand the batch over, never run it. */
    bool (*idle)(struct replica_base *r);

    /* Optional, with idle: run_batch for a thread that the replica may
     * itself be waiting on (the one that reads its answers): where handing
     * the batch over would wait for room, it touches nothing and returns
     * REPLICA_FULL, and the backend leaves the batch to the worker. The
     * backend then also hands over work from the thread that reports the
     * replica's answers (backend_deferred_answered_many), as a slot frees,
     * instead of waking the worker to do it. */
    int (*run_batch_nowait)(struct replica_base *r, serve_request **reqs, size_t n);

    /* Optional: any thread (an I/O thread: it must not block). `req`, which
     * the backend handed this replica, was cancelled (its client went away
     * or it timed out): let serve_request_cancelled report it where the
     * plugin runs. The request may be answered meanwhile; then nothing. */
    void (*cancelled)(struct replica_base *r, serve_request *req);

    /* Optional: any thread. A stream of `req` (a request this replica
     * holds) has drained to `drained` bytes in all: a kind whose plugin
     * counts what is unsent elsewhere is told (process replicas). */
    void (*stream_drained)(struct replica_base *r, serve_request *req, uint64_t drained);

    /* The replica's worker thread, between two batches; only when the
     * group's can_reconfigure. 0 when the replica took the config. */
    int (*reconfigure)(struct replica_base *r, const serve_config *config);

    /* Control thread, after the worker has ended. Requests still deferred
     * are answered 503 by the backend afterwards. */
    void (*stop)(struct replica_base *r);
};

/* How long a replica in continuous batching keeps stepping the streams it
 * holds once its backend began to stop (an update, a delete, a stop):
 * open generations finish instead of being cut, within the process kind's
 * grace before a kill. */
#define REPLICA_STOP_STEPS_MS 8000

#define REPLICA_DOWN (-0x7fff)
#define REPLICA_FULL (-0x7ffe)

/* Replicas as processes (replica_process.c): a child process per replica,
 * spawned from this binary, restarted when it dies. */
extern const struct replica_kind replica_kind_process;

/* What a kind tells the backend about a replica, from any thread. */
enum crash_reason { CRASH_SIGNAL, CRASH_EXIT, CRASH_HANG, CRASH_MEMORY, CRASH_REASONS };
/* The replica cannot take work until backend_replica_up: its worker takes
 * none meanwhile, and the queue waits for another replica or for this one.
 * `unavailable`: not NULL when it cannot come back for now (its init
 * fails): while no replica of the backend is up, requests are answered 503
 * with that reason instead of waiting. */
void backend_replica_down(struct replica_base *r, const char *unavailable);
void backend_replica_up(struct replica_base *r);
/* The replica finished a batch: a worker waiting for it to be idle forms
 * its next batch. */
void backend_replica_wake(struct replica_base *r);
/* A batch of n ran for `took` ns in handle_batch: the exec-time histogram,
 * and the log line for one past the request or hang timeout. Called by the
 * backend for kinds without `idle`, by the kind itself for the others. */
void backend_replica_batch_ran(struct replica_base *r, size_t n, uint64_t took);
/* Counts a crash (metrics, status) with its one-line description; `sig`
 * is the signal it died of for CRASH_SIGNAL. */
void backend_replica_crashed(struct replica_base *r, enum crash_reason reason, int sig,
                             const char *text);

/* The one line for an init that failed (both kinds). */
void replica_init_error(char *err, size_t errlen, const char *plugin, int index, size_t count,
                        const char *why);

/* Replicas as threads of this process, running a dlopen'ed plugin
 * (replica_thread.c). */
extern const struct replica_kind replica_kind_thread;

/* Replicas that are another server (replica_remote.c): each an event loop
 * with pooled keep-alive HTTP/1.1 connections to the backend's URLs. */
extern const struct replica_kind replica_kind_remote;

#endif
