/* metrics.h - counters and histograms for /metrics (Prometheus text).
 *
 * Recording is lock-free: relaxed atomic adds on fixed buckets, so I/O and
 * worker threads never wait on each other to count. Histograms observe
 * integers (nanoseconds, or plain counts) and are scaled when written. */
#ifndef SERVE_RUNTIME_METRICS_H
#define SERVE_RUNTIME_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

#define HISTOGRAM_MAX_BUCKETS 24

/* False with `serve start --no-metrics`: histograms and endpoint counters
 * stop recording (for measuring what recording costs). */
extern bool metrics_enabled;

struct histogram {
    const uint64_t *bounds; /* upper bounds, ascending; +Inf is implicit */
    size_t bound_count;
    double scale;           /* multiply by this when written (1e-9 for ns) */
    atomic_ulong buckets[HISTOGRAM_MAX_BUCKETS + 1];
    atomic_ulong sum;
    atomic_ulong count;
};

void histogram_init_seconds(struct histogram *h);    /* observes ns */
void histogram_init_batch_sizes(struct histogram *h);
void histogram_observe(struct histogram *h, uint64_t value);

/* Writes the _bucket, _sum and _count lines of one labelled series. */
void histogram_write(const struct histogram *h, struct evbuffer *out, const char *name,
                     const char *labels);

/* Per endpoint, kept across route changes (looked up by name). */
struct endpoint_metrics {
    struct endpoint_metrics *next;
    atomic_ulong by_status[500]; /* 100..599 */
    struct histogram request_seconds;
    struct histogram first_byte_seconds; /* streams: received -> first piece written */
    atomic_ulong streamed_bytes;          /* streams: bytes the plugins wrote */
    atomic_ulong streams;
    char name[];
};

/* The metrics of endpoint `name` ("" for requests no endpoint took),
 * created on first use, never freed before metrics_shutdown. */
struct endpoint_metrics *metrics_endpoint(const char *name);
void metrics_count_response(struct endpoint_metrics *m, int status, uint64_t elapsed_ns);
/* A streamed answer ended: its bytes and its time to first byte (first_ns
 * 0: nothing was written). */
void metrics_count_stream(struct endpoint_metrics *m, uint64_t bytes, uint64_t first_ns,
                          uint64_t received_ns);

enum reject_reason { REJECT_BACKPRESSURE, REJECT_TIMEOUT, REJECT_PLUGIN_ERROR, REJECT_REASONS };

/* Handle calls a backend's replicas sent to one target endpoint. */
struct handle_calls {
    struct handle_calls *next;
    atomic_ulong count;
    char target[];
};

/* Per backend name, shared by every backend object that carries the name:
 * an update that replaces the replicas makes a new object, and Prometheus
 * counters must not go back to 0 when it does. */
struct backend_metrics {
    struct backend_metrics *next;
    atomic_ulong requests_total;
    atomic_ulong batches_total;
    struct histogram batch_size;
    struct histogram queue_seconds;      /* enqueued -> handed to handle_batch */
    struct histogram exec_seconds;       /* one handle_batch call */
    struct histogram batch_wait_seconds; /* first request queued -> batch dispatched */
    atomic_ulong rejected[REJECT_REASONS];
    atomic_ulong replica_restarts;       /* replicas started again by an update */
    atomic_ulong cancelled_total;        /* queued requests dropped: their client went away */
    atomic_ulong crashes[4];             /* process replicas died, by enum crash_reason */
    atomic_ulong crash_signals[65];      /* ... of which by a signal, by its number (0: other) */
    char last_crash[300];                /* the last one's description (backend.c's lock) */
    struct handle_calls *_Atomic calls;  /* grows under the registry mutex */
    /* Remote backends (replica_remote.c): answers by the status given to
     * the caller, and the time from hand-over to answer. */
    atomic_bool remote;
    atomic_ulong remote_by_status[500];  /* 100..599 */
    struct histogram remote_seconds;
    char name[];
};

/* The metrics of backend `name`, created on first use, never freed before
 * metrics_shutdown; NULL only when out of memory. */
struct backend_metrics *metrics_backend(const char *name);

/* The call counter of (m's backend, target), created on first use and kept
 * like m; NULL only when out of memory. m must not be NULL. */
atomic_ulong *metrics_handle_calls(struct backend_metrics *m, const char *target);

/* How many endpoints have metrics, and a walk over at most `max` of them. */
size_t metrics_endpoint_count(void);
void metrics_each_endpoint(void (*fn)(const struct endpoint_metrics *m, void *arg), void *arg,
                           size_t max);

/* Writes every endpoint's series. */
void metrics_write_endpoints(struct evbuffer *out);
void metrics_shutdown(void);

#endif
