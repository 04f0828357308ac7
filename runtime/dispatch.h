/* dispatch.h - the one path from a front end to a backend queue.
 *
 * A front end (HTTP in http_server.c, handle calls in handles.c) only
 * translates its protocol: it builds a serve_request, asks dispatch to take
 * it, and answers in its own protocol whatever dispatch refuses. Dispatch
 * owns everything in between: choosing the endpoint (by path for HTTP, by
 * name for handle calls), the method check, the traffic split and shard key,
 * shadows, the request timeout, backend_enqueue and its backpressure, the
 * wording of every error it gives (404, 405, 501, 503, 504, 508) and the
 * counting of those errors in the endpoint metrics.
 *
 *   front end ──build──> dispatch ──backend_enqueue──> queue ──> replica
 *       ^                   │ refused: status + message (front end answers)
 *       └── origin.ready ───┴── answer, or origin.failed (504 from the timer)
 *
 * Threads: the routing functions take no lock and read only what they are
 * given; dispatch_call reads the handle-call snapshot under a mutex held for
 * one reference count. A request's timeout fires on the event base its
 * front end names (the thread that answers its errors): an HTTP I/O thread's
 * own base, or for handle calls dispatch's timer thread. */
#ifndef SERVE_RUNTIME_DISPATCH_H
#define SERVE_RUNTIME_DISPATCH_H

#include <stdbool.h>

#include "request.h"
#include "routes.h"

struct event_base;

/* What dispatch refused, for the front end to answer in its protocol. */
struct dispatch_error {
    int status;        /* an HTTP status; 0 when nothing was refused */
    char message[512]; /* the client's message (a JSON error body's text) */
    char allow[128];   /* 405 and 501: the route's methods, for Allow; else "" */
};

/* A front end, as dispatch sees it. One static instance per front end. */
struct dispatch_origin {
    /* The answer is ready in req (status, body, headers): the origin sends
     * it, calling dispatch_disarm first, and drops the execution reference
     * and its own. Any thread; becomes req->deliver. */
    void (*ready)(serve_request *req);
    /* The request timed out and the timeout won the race with the answer:
     * the origin answers `status` with `message` and drops its own
     * reference (the execution side drops the other when the late answer
     * comes). Runs on the thread of the timer's event base. */
    void (*failed)(serve_request *req, int status, const char *message);
    /* True when the requests of this origin are counted in their
     * endpoint's metrics (HTTP: serve_http_requests_total); dispatch then
     * counts its own errors there too, and sets req->endpoint_metrics. */
    bool count_endpoint;
};

enum dispatch_result {
    DISPATCH_QUEUED,  /* the answer comes through origin->ready or ->failed */
    DISPATCH_REFUSED, /* *err says what to answer; the origin still owns req */
};

/* The method check of an endpoint: true when `method` is one of its
 * methods. Otherwise fills err with 405 (a method serve knows, not allowed
 * here) or 501 (a method serve never routes), and err->allow. Pure. */
bool dispatch_check_method(const struct route_entry *route, const char *method,
                           struct dispatch_error *err);

/* The endpoint that serves an HTTP request for `path` (percent-decoded)
 * with `method`, from the front end's own snapshot (NULL: no routes yet).
 * NULL when refused, with err filled (404, 405 or 501) and the error
 * counted: a 404 in the metrics of endpoint "", a 405 or 501 in the
 * endpoint's. Takes no lock; never allocates. */
const struct route_entry *dispatch_route_path(const struct routes *routes, const char *path,
                                              const char *method, struct dispatch_error *err);

/* Queues req on one backend of `route`: picks it by the traffic split (and
 * X-Serve-Shard-Key), arms the request timeout on `timers` when the backend
 * has one, enqueues, and on success sends copies to the shadows. req has
 * method, path, headers, body and id; it must not have a backend yet, and
 * the origin holds one reference. On DISPATCH_REFUSED (503: overloaded or
 * not accepting) err is filled and counted, and req->backend names the
 * backend that refused. The route entry is read only during the call. */
enum dispatch_result dispatch_submit(serve_request *req, const struct route_entry *route,
                                     const struct dispatch_origin *origin,
                                     struct event_base *timers, struct dispatch_error *err);

/* A handle call: req->target_endpoint names the endpoint, looked up in the
 * snapshot of dispatch_publish_routes. Refuses a call nested too deep (508)
 * or to an unknown name (404); otherwise as dispatch_submit, with the
 * timeout on dispatch's timer thread, and looking the name up again (at
 * most three times in all) when the backend found has just stopped taking
 * requests: a replaced backend closes only after the new routes are
 * published. Any thread. */
enum dispatch_result dispatch_call(serve_request *req, const struct dispatch_origin *origin,
                                   struct dispatch_error *err);

/* Stops req's timeout, if armed. The origin calls it when the answer won,
 * before sending it. */
void dispatch_disarm(serve_request *req);

/* Sends copies of `primary` to the endpoint's shadow backends: one uniform
 * draw per request, and each shadow whose fraction is above it gets a copy,
 * so a smaller fraction sees a subset of a larger one's requests. Answers
 * are discarded; the primary never waits for them. */
void dispatch_shadow(const struct route_entry *route, const serve_request *primary);

/* Makes `routes` the snapshot handle calls resolve names in (takes a
 * reference; NULL drops the current one). Any thread. */
void dispatch_publish_routes(struct routes *routes);

/* Drops the handle-call snapshot and stops the timer thread; call once the
 * backends are stopped. */
void dispatch_shutdown(void);

#endif
