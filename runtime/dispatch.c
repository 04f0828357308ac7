/* dispatch.c - the one path from a front end to a backend queue (see
 * dispatch.h): routing, the method check, the traffic split, shadows, the
 * request timeout, backpressure, and the errors of all of them. */
#include "dispatch.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "metrics.h"

static void dispatch_error_clear(struct dispatch_error *err)
{
    err->status = 0;
    err->message[0] = '\0';
    err->allow[0] = '\0';
}

bool dispatch_check_method(const struct route_entry *route, const char *method,
                           struct dispatch_error *err)
{
    unsigned bit = method_bit(method);
    if (route->methods & bit) return true;
    methods_format(route->methods, err->allow, sizeof err->allow);
    if (bit) {
        err->status = 405;
        snprintf(err->message, sizeof err->message,
                 "method %s not allowed on endpoint %s (allowed: %s)", method, route->endpoint,
                 err->allow);
    } else {
        err->status = 501;
        snprintf(err->message, sizeof err->message, "method %s is not supported", method);
    }
    return false;
}

/* The metrics of requests no endpoint took: metrics_endpoint takes the
 * registry's lock, so the pointer (which never changes) is kept. */
static struct endpoint_metrics *unrouted_metrics(void)
{
    static struct endpoint_metrics *_Atomic unrouted;
    struct endpoint_metrics *m = atomic_load_explicit(&unrouted, memory_order_acquire);
    if (!m) {
        m = metrics_endpoint("");
        atomic_store_explicit(&unrouted, m, memory_order_release);
    }
    return m;
}

const struct route_entry *dispatch_route_path(const struct routes *routes, const char *path,
                                              const char *method, struct dispatch_error *err)
{
    dispatch_error_clear(err);
    const struct route_entry *route = routes_match(routes, path);
    if (!route) {
        err->status = 404;
        snprintf(err->message, sizeof err->message,
                 "no endpoint serves %.300s; GET /-/routes lists the routes", path);
        metrics_count_response(unrouted_metrics(), 404, 0);
        return NULL;
    }
    if (!dispatch_check_method(route, method, err)) {
        metrics_count_response(route->metrics, err->status, 0);
        return NULL;
    }
    return route;
}

/* Handle-call timeouts: one libevent loop of their own, started on first
 * use. HTTP requests time out on their I/O thread's loop instead; both run
 * on_timeout, and both settle the race with the answer the same way. */
static pthread_mutex_t timer_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct event_base *timer_base;
static pthread_t timer_thread;

static void *timer_main(void *arg)
{
    event_base_loop(arg, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static void stop_timer_loop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    event_base_loopbreak(arg);
}

static struct event_base *timer_thread_base(void)
{
    pthread_mutex_lock(&timer_mutex);
    if (!timer_base) {
        timer_base = event_base_new();
        if (timer_base && pthread_create(&timer_thread, NULL, timer_main, timer_base) != 0) {
            event_base_free(timer_base);
            timer_base = NULL;
        }
    }
    struct event_base *base = timer_base;
    pthread_mutex_unlock(&timer_mutex);
    return base;
}

/* On the thread of the base the timer was armed on. */
static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    serve_request *req = arg;
    if (!request_time_out(req)) return; /* the answer won; it is on its way */
    backend_request_cancelled(req); /* serve_request_cancelled, where it runs */
    char msg[256];
    backend_timed_out(req->backend, req, msg, sizeof msg);
    metrics_count_response(req->endpoint_metrics, 504, serve__now_ns() - req->received_ns);
    req->dispatch_origin->failed(req, 504, msg);
}

void dispatch_disarm(serve_request *req)
{
    if (!req->has_timeout) return;
    event_del(&req->timeout_event);
    req->has_timeout = false;
}

static void arm_timeout(serve_request *req, struct event_base *timers)
{
    double timeout_ms = backend_get_spec(req->backend)->options.request_timeout_ms;
    if (timeout_ms <= 0) return;
    struct event_base *base = timers ? timers : timer_thread_base();
    if (!base) return;
    event_assign(&req->timeout_event, base, -1, 0, on_timeout, req);
    uint64_t us = (uint64_t)(timeout_ms * 1000.0);
    struct timeval tv = {(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};
    req->has_timeout = true;
    event_add(&req->timeout_event, &tv);
}

/* Picks the backend, arms the timeout and queues; disarms when refused. */
static enum enqueue_result enqueue(serve_request *req, const struct route_entry *route,
                                   const char *shard_key, struct event_base *timers)
{
    struct backend *backend = route_pick(route, shard_key);
    backend_ref(backend);
    if (req->backend) backend_release(req->backend);
    req->backend = backend;
    req->reentrant = false;
    for (uint32_t i = 0; req->callers && i < req->call_depth; i++)
        req->reentrant |= req->callers[i] == backend;
    arm_timeout(req, timers);
    enum enqueue_result queued = backend_enqueue(backend, req);
    if (queued != ENQUEUE_OK) dispatch_disarm(req);
    return queued;
}

static void refused_by_backend(serve_request *req, enum enqueue_result queued,
                               struct dispatch_error *err)
{
    const char *name = backend_name(req->backend);
    err->status = 503;
    if (queued == ENQUEUE_OVERLOADED)
        snprintf(err->message, sizeof err->message,
                 "request dropped: backend %s is overloaded (%u requests queued)", name,
                 backend_get_spec(req->backend)->options.max_queued_requests);
    else if (queued == ENQUEUE_UNAVAILABLE)
        backend_unavailable_reason(req->backend, err->message, sizeof err->message);
    else
        snprintf(err->message, sizeof err->message, "backend %s is not accepting requests", name);
    metrics_count_response(req->endpoint_metrics, 503, serve__now_ns() - req->received_ns);
}

/* Queues req on route and shadows it once it is queued. Once queued, req
 * may be answered and freed on another thread at any moment (a handle
 * call's answer drops both its references): shadowing holds one more. */
static enum enqueue_result enqueue_and_shadow(serve_request *req,
                                              const struct route_entry *route,
                                              const char *shard_key, struct event_base *timers)
{
    bool shadows = route->shadow_count > 0;
    req->route_len = 0;
    if (route->route) {
        /* "/" (or "/x/") matches "/a" as "/" + "a": the suffix keeps its slash. */
        size_t len = route->route_len;
        if (len && route->route[len - 1] == '/') len--;
        if (strncmp(req->path, route->route, len) == 0) req->route_len = (uint32_t)len;
    }
    if (shadows) request_ref(req);
    enum enqueue_result queued = enqueue(req, route, shard_key, timers);
    if (shadows) {
        if (queued == ENQUEUE_OK) dispatch_shadow(route, req);
        request_release(req);
    }
    return queued;
}

static void take_origin(serve_request *req, const struct dispatch_origin *origin)
{
    req->dispatch_origin = origin;
    req->deliver = origin->ready;
}

enum dispatch_result dispatch_submit(serve_request *req, const struct route_entry *route,
                                     const struct dispatch_origin *origin,
                                     struct event_base *timers, struct dispatch_error *err)
{
    dispatch_error_clear(err);
    take_origin(req, origin);
    req->endpoint_metrics = origin->count_endpoint ? route->metrics : NULL;
    const char *shard_key = serve_request_header(req, "X-Serve-Shard-Key");
    enum enqueue_result queued = enqueue_and_shadow(req, route, shard_key, timers);
    if (queued == ENQUEUE_OK) return DISPATCH_QUEUED;
    refused_by_backend(req, queued, err);
    return DISPATCH_REFUSED;
}

/* The snapshot names resolve in. A mutex, not the HTTP threads' mailbox:
 * calls come from any thread; it is held for one reference count, and the
 * call then reads its own reference of the snapshot without a lock. */
static pthread_mutex_t router_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct routes *router_routes;

void dispatch_publish_routes(struct routes *routes)
{
    if (routes) routes_ref(routes);
    pthread_mutex_lock(&router_mutex);
    struct routes *old = router_routes;
    router_routes = routes;
    pthread_mutex_unlock(&router_mutex);
    if (old) routes_release(old);
}

static struct routes *router_snapshot(void)
{
    pthread_mutex_lock(&router_mutex);
    struct routes *routes = router_routes;
    if (routes) routes_ref(routes);
    pthread_mutex_unlock(&router_mutex);
    return routes;
}

enum dispatch_result dispatch_call(serve_request *req, const struct dispatch_origin *origin,
                                   struct dispatch_error *err)
{
    dispatch_error_clear(err);
    take_origin(req, origin);
    if (req->too_deep) {
        err->status = 508;
        snprintf(err->message, sizeof err->message,
                 "call to endpoint %s refused: over %d nested calls", req->target_endpoint,
                 SERVE_MAX_CALL_DEPTH);
        return DISPATCH_REFUSED;
    }
    const char *shard_key = serve_request_header(req, "X-Serve-Shard-Key");
    enum enqueue_result queued = ENQUEUE_CLOSED;
    for (int attempt = 0; attempt < 3 && queued == ENQUEUE_CLOSED; attempt++) {
        struct routes *routes = router_snapshot();
        const struct route_entry *route = routes_find(routes, req->target_endpoint);
        if (!route) {
            if (routes) routes_release(routes);
            err->status = 404;
            snprintf(err->message, sizeof err->message, "no endpoint named %s",
                     req->target_endpoint);
            return DISPATCH_REFUSED;
        }
        /* A call to a routed endpoint sees the route as its path. */
        if (route->route && !*req->path) {
            req->owned_path = strdup(route->route);
            if (req->owned_path) req->path = req->owned_path;
        }
        req->endpoint_metrics = origin->count_endpoint ? route->metrics : NULL;
        queued = enqueue_and_shadow(req, route, shard_key, NULL);
        routes_release(routes);
    }
    if (queued == ENQUEUE_OK) return DISPATCH_QUEUED;
    refused_by_backend(req, queued, err);
    return DISPATCH_REFUSED;
}

void dispatch_shutdown(void)
{
    dispatch_publish_routes(NULL);
    pthread_mutex_lock(&timer_mutex);
    struct event_base *base = timer_base;
    timer_base = NULL;
    pthread_mutex_unlock(&timer_mutex);
    if (!base) return;
    /* A loopbreak before the loop runs would be lost; an active event is not. */
    struct event *stop = event_new(base, -1, 0, stop_timer_loop, base);
    event_active(stop, EV_READ, 0);
    pthread_join(timer_thread, NULL);
    event_free(stop);
    event_base_free(base);
}

/* Shadows. */

static void discard_answer(serve_request *req)
{
    request_release(req); /* the execution reference */
    request_release(req); /* the shadow's own */
}

static char *copy_bytes(const void *data, size_t len)
{
    char *copy = malloc(len + 1);
    if (copy) {
        if (len) memcpy(copy, data, len);
        copy[len] = '\0';
    }
    return copy;
}

static serve_request *shadow_copy(const serve_request *primary, struct backend *backend)
{
    serve_request *req = request_new(0, NULL);
    if (!req) return NULL;
    req->method = primary->method; /* a static string */
    req->owned_path = strdup(primary->path);
    req->path = req->owned_path;
    req->route_len = primary->route_len;
    req->owned_id = strdup(primary->id);
    req->id = req->owned_id;
    req->owned_body = copy_bytes(primary->body ? primary->body : "", primary->body_len);
    req->free_owned_body = free;
    req->body = req->owned_body;
    req->body_len = primary->body_len;
    req->owns_headers = true;
    bool ok = req->path && req->id && req->owned_body;
    req->headers = calloc(2 * primary->header_count + 1, sizeof *req->headers);
    ok = ok && req->headers;
    for (size_t i = 0; ok && i < 2 * primary->header_count; i++) {
        req->headers[i] = strdup(primary->headers[i]);
        ok = req->headers[i] != NULL;
        if (ok && i % 2) req->header_count++;
    }
    req->query = calloc(2 * primary->query_count + 1, sizeof *req->query);
    ok = ok && req->query;
    for (size_t i = 0; ok && i < 2 * primary->query_count; i++) {
        req->query[i] = strdup(primary->query[i]);
        ok = req->query[i] != NULL;
        if (ok && i % 2) req->query_count++;
    }
    req->backend = backend;
    backend_ref(backend);
    req->deliver = discard_answer;
    req->received_ns = serve__now_ns();
    if (!ok) {
        request_release(req);
        return NULL;
    }
    return req;
}

void dispatch_shadow(const struct route_entry *route, const serve_request *primary)
{
    double u = route_random();
    for (size_t i = 0; i < route->shadow_count; i++) {
        if (u >= route->shadows[i].weight) continue;
        serve_request *copy = shadow_copy(primary, route->shadows[i].backend);
        /* On success the copy's own reference goes with its answer. */
        if (copy && backend_enqueue(copy->backend, copy) != ENQUEUE_OK) request_release(copy);
    }
}
