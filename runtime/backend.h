/* backend.h - a backend: its replicas, of one kind (replica_kind.h: threads
 * running a loaded plugin), and the queue they take batches from.
 *
 * Threads: backend_create and backend_stop run on the control thread. Front
 * ends call backend_enqueue from any thread. Each replica has one worker
 * thread that forms batches and hands each to its kind's run_batch.
 *
 * The batching rule: a replica dispatches as soon as max_batch_size requests
 * wait, or batch_wait_timeout after the first waiting request arrived,
 * whichever comes first, never more than max_batch_size, in arrival order,
 * and only while it has fewer than max_concurrent_queries requests in
 * flight (executing or deferred). */
#ifndef SERVE_RUNTIME_BACKEND_H
#define SERVE_RUNTIME_BACKEND_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>

#include "crash_report.h" /* replica threads name themselves for crash reports */
#include "metrics.h"
#include "request.h"
#include "spec.h"

struct backend;
struct replica_kind;

/* Loads the plugin, runs init for every replica and starts the workers:
 * backend_create_with_kind with the thread kind. The spec is copied. On
 * failure returns NULL with one line in err. */
struct backend *backend_create(const struct backend_spec *spec, char *err,
                               size_t errlen);

/* Opens the kind's group for spec, starts every replica (in index order)
 * and their workers. kind has static storage. On failure returns NULL with
 * one line in err, the replicas started so far stopped. */
struct backend *backend_create_with_kind(const struct backend_spec *spec,
                                         const struct replica_kind *kind, char *err,
                                         size_t errlen);

void backend_ref(struct backend *b);
void backend_release(struct backend *b); /* frees on the last reference */

const char *backend_name(const struct backend *b);
/* The tensors its plugin declared, as JSON members for the OIP model
 * metadata ("inputs": [...], "outputs": [...]), or NULL. Fixed once the
 * backend runs; any thread. */
const char *backend_tensor_metadata(const struct backend *b);
const struct backend_spec *backend_get_spec(const struct backend *b);

enum enqueue_result { ENQUEUE_OK, ENQUEUE_OVERLOADED, ENQUEUE_CLOSED, ENQUEUE_UNAVAILABLE };

/* ENQUEUE_UNAVAILABLE: why (no replica is up and they cannot restart now). */
void backend_unavailable_reason(struct backend *b, char *out, size_t len);

/* Queues a request (taking the execution reference on success). Sets
 * req->backend's timing fields. Any thread. */
enum enqueue_result backend_enqueue(struct backend *b, serve_request *req);

/* A thread that takes in many requests per pass of its event loop (an
 * HTTP I/O thread) may hold back the wake-ups its enqueues owe replicas
 * until the pass ends: backend_hold_wakeups(true) once, then
 * backend_flush_wakeups() after every pass. A replica woken once per pass
 * takes the pass's requests as one batch, instead of being woken for the
 * first and finding the rest a batch later. Until the flush, the woken
 * replica counts as awake (no other enqueue wakes it). This thread only. */
void backend_hold_wakeups(bool hold);
void backend_flush_wakeups(void);

/* Stops taking requests, lets the replicas finish what is queued, joins
 * them, stops them (the kind's stop: the plugin's destroy) and answers
 * still-deferred requests with 503. */
void backend_stop(struct backend *b);

/* Any thread, once `req` was cancelled or timed out (its state says so):
 * a replica that holds it is told, for serve_request_cancelled. */
void backend_request_cancelled(serve_request *req);

/* Any thread: a stream of req drained (stream.c); its replica's kind is
 * told when it keeps its own count. */
void backend_stream_drained(serve_request *req, uint64_t drained);

/* True when the replicas can take a new config (the thread kind: the
 * plugin has a reconfigure callback). */
bool backend_can_reconfigure(const struct backend *b);

/* Hands a new user config to every replica through the plugin's
 * reconfigure, each between two batches; waits until all have it. When one
 * refuses, the replicas that took it get the old config back and false is
 * returned with err set. Control thread. */
bool backend_reconfigure(struct backend *b, const serve_config *config, char *err,
                         size_t errlen);

/* From now on queued requests are answered 503 instead of executed (the
 * last step of a graceful stop whose time ran out). Any thread. */
void backend_reject_queued(struct backend *b);

/* Packs {name, plugin, options..., queued, in_flight, requests, batches}
 * for status and list commands. */
void backend_pack_status(struct backend *b, msgpack_packer *pk);

/* Cumulative counts for live figures. Any thread. */
void backend_totals(struct backend *b, uint64_t *requests, uint64_t *batches, uint64_t *batch_sum);

/* Autoscaling (autoscale.h), with --min-replicas/--max-replicas. Control
 * thread. One tick (every AUTOSCALE_TICK_MS): stops replicas that finished
 * draining, samples the ongoing requests (queued + in flight), and moves
 * the replicas to the autoscaler's target: new ones start (and are routed
 * to) once their kind started them; extra ones drain, taking no new work,
 * and stop once they hold nothing. True when the target changed (to be
 * persisted). A backend without autoscaling: false, nothing done. */
#define AUTOSCALE_TICK_MS 100
bool backend_autoscale_tick(struct backend *b, uint64_t now_ns);
bool backend_autoscaled(const struct backend *b);
/* The count the autoscaler chose (num_replicas without autoscaling). Any thread. */
uint32_t backend_target_replicas(const struct backend *b);
/* update-backend --num-replicas on an autoscaled backend: n (clamped into
 * the bounds) becomes the target now, and the delays start again. */
void backend_set_target_replicas(struct backend *b, uint32_t n);

/* Counts b's replicas as restarted: b replaces a backend of the same name. */
void backend_count_replica_restarts(struct backend *b);

/* Counts a request answered with an error, by reason. Any thread. */
void backend_count_rejection(struct backend *b, enum reject_reason reason);

/* Writes the Prometheus series of these backends (each once). */
struct evbuffer;
void backend_write_metrics(struct backend *const *backends, size_t count, struct evbuffer *out);

/* A request of this backend timed out: counts it, logs it with the replica
 * that held it (or "queued"), and writes the client's message into msg.
 * Any thread (takes the backend's lock: timeouts are rare). */
void backend_timed_out(struct backend *b, const serve_request *req, char *msg, size_t len);

/* Hooks for request.c. */
void backend_defer(serve_request *req);
void backend_deferred_answered(serve_request *req, bool answer_won);
/* The same for n deferred requests of one replica, answered at once (a
 * process replica's answers, read together): one lock, one wake-up, and
 * one push per answer queue. won[i]: whether reqs[i]'s answer won its race
 * with the timeout. Uses reqs[] as scratch. */
void backend_deferred_answered_many(serve_request **reqs, const bool *won, size_t n);
void backend_report_plugin_bug(const serve_request *req, const char *what);

#endif
