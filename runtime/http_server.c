/* http_server.c - the HTTP front end: turns each whole request that the
 * connection layer (http1_conn.c) reads into a serve request and hands it
 * to dispatch (dispatch.h), or answers it itself (built-in paths, malformed
 * paths, draining); answers in HTTP what dispatch refuses, and turns the
 * backend's answer back into HTTP. */
#include "http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h> /* evhttp_uridecode, evhttp_parse_query_str */
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "access_log.h"
#include "answer_queue.h"
#include "clock.h"
#include "crash_report.h"
#include "dispatch.h"
#include "http1_conn.h"
#include "log.h"
#include "metrics.h"
#include "oip_front.h"
#include "stream.h"

struct io_thread {
    struct http_server *server;
    struct http1 *http1;
    pthread_t thread;
    bool thread_started;
    struct event_base *base;
    /* Answered requests, pushed by any thread (a replica pushes a batch's
     * answers as one chain). Its eventfd also wakes the loop for new
     * routes, drain and stop: watched edge-triggered and never read, so a
     * wake-up costs the waker one write and the loop nothing but its
     * epoll_wait (event_active would take the base's lock and the loop
     * would read the eventfd). */
    struct answer_queue answers;
    struct evbuffer *pieces; /* a stream's pieces on their way to its connection */
    struct event *wake;
    struct routes *routes;
    atomic_size_t outstanding;
    /* Set after the fields under `mutex` changed, before the wake-up: the
     * loop takes the mutex only when there is news (answers need none). */
    atomic_bool control_pending;

    pthread_mutex_t mutex; /* guards the fields below */
    struct routes *pending_routes;
    uint64_t pending_generation;
    bool drain_pending;
    bool stop_pending;
    bool accept_pending;

    uint64_t routes_applied; /* guarded by server->ack_mutex */
};

struct http_server {
    time_t started_at;
    /* Publishing waits until every I/O thread runs the new routes, so that
     * a backend taken out of them can be stopped without losing a request. */
    pthread_mutex_t ack_mutex;
    pthread_cond_t ack_cond;
    uint64_t routes_generation;
    int listen_fd;
    int port;
    atomic_bool draining;
    _Atomic uint64_t health_last_ns;     /* the last GET /-/healthz */
    _Atomic uint64_t health_interval_ns; /* the time between the last two */
    atomic_size_t open_connections;
    int thread_count;
    struct io_thread *threads;
};

static void reply(struct http1_exchange *ex, int status, const char *request_id,
                  const char *content_type, const void *body, size_t len)
{
    struct http1_answer a = {.status = status, .content_type = content_type,
                             .request_id = request_id, .body = body, .body_len = len};
    http1_answer(ex, &a);
}

/* Answers with what `buf` holds (copied), then empties it. */
static void reply_buffer(struct http1_exchange *ex, const char *request_id,
                         const char *content_type, struct evbuffer *buf)
{
    size_t len = evbuffer_get_length(buf);
    reply(ex, 200, request_id, content_type, evbuffer_pullup(buf, -1), len);
    evbuffer_free(buf);
}

static void send_answer(struct http1_exchange *ex, serve_request *req)
{
    size_t bytes = req->response_len;
    if (access_log_on)
        access_log_request(req, "http", http1_peer(ex), req->endpoint_metrics->name, req->status, bytes);
    struct http1_answer a = {.status = req->status, .content_type = req->content_type,
                             .request_id = req->id, .headers = req->response_headers,
                             .header_count = req->response_header_count,
                             .body = req->response_body, .body_len = req->response_len,
                             .free_body = req->free_response_body};
    /* The body is handed over (zero copy) when it has a free function. */
    req->response_body = NULL;
    req->free_response_body = NULL;
    http1_answer(ex, &a);
    if (!a.free_body) request_clear_response(req);
    metrics_count_response(req->endpoint_metrics, req->status, serve__now_ns() - req->received_ns);
}

/* Any thread, after changing what t->mutex guards: tells the loop to look. */
static void io_thread_wake(struct io_thread *t)
{
    atomic_store_explicit(&t->control_pending, true, memory_order_release);
    answer_queue_wake(&t->answers);
}

/* Called from any thread with a request whose answer is ready (one at a
 * time; a replica pushes its batch's answers to req->answers itself). */
static void deliver_to_io_thread(serve_request *req)
{
    if (stream_piecewise(req))
        stream_deliver_end(req);
    else
        answer_queue_push(req->answers, req);
}

/* A stream has news (stream.h): its request goes on the answer queue. */
static void stream_to_io_thread(serve_request *req)
{
    struct io_thread *t = req->origin;
    answer_queue_push(&t->answers, req);
}

static void finish(struct io_thread *t, serve_request *req)
{
    atomic_fetch_sub_explicit(&t->outstanding, 1, memory_order_relaxed);
    request_release(req);
}

/* One look at a streamed answer: the head the first time, what was
 * written since as one chunk, and at the end the last chunk (or, for a
 * failed stream, a closed connection). */
static void stream_step(struct io_thread *t, serve_request *req)
{
    struct stream_look look;
    stream_look(req, t->pieces, &look);
    if (atomic_load(&req->state) == REQ_CANCELLED) {
        /* The client went (on_abandon, on this thread, has finished the
         * exchange): what the plugin wrote goes nowhere. */
        evbuffer_drain(t->pieces, evbuffer_get_length(t->pieces));
        request_release(req); /* the look's */
        return;
    }
    struct http1_exchange *ex = req->origin_request;
    if (look.first) {
        dispatch_disarm(req);
        struct http1_answer head = {.status = req->status, .content_type = req->content_type,
                                    .request_id = req->id, .headers = req->response_headers,
                                    .header_count = req->response_header_count};
        http1_stream_begin(ex, &head);
    }
    /* Writing (the head, then the pieces) may find the client gone: the
     * connection closes, and on_abandon, on this thread, finishes the
     * exchange; nothing may touch it after. */
    if (look.bytes && atomic_load(&req->state) != REQ_CANCELLED) http1_stream_write(ex, t->pieces);
    if (atomic_load(&req->state) == REQ_CANCELLED) {
        evbuffer_drain(t->pieces, evbuffer_get_length(t->pieces));
        request_release(req); /* the look's */
        return;
    }
    if (!look.final) {
        stream_sent(req, http1_stream_unsent(ex));
        request_release(req); /* the look's */
        return;
    }
    if (look.failed)
        LOG_WARN("endpoint=%s request=%s: the stream failed after its head was sent: %s; "
                 "connection closed without the last chunk",
                 req->endpoint_metrics->name, req->id, look.fail_message);
    if (access_log_on)
        access_log_request(req, "http", http1_peer(ex), req->endpoint_metrics->name, req->status,
                           stream_bytes(req));
    http1_stream_end(ex, look.failed);
    metrics_count_stream(req->endpoint_metrics, stream_bytes(req),
                         stream_first_byte_ns(req), req->received_ns);
    metrics_count_response(req->endpoint_metrics, req->status, serve__now_ns() - req->received_ns);
    request_release(req); /* the execution reference, handed over */
    finish(t, req);       /* the origin's */
    request_release(req); /* the look's */
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct io_thread *t = arg;
    serve_request *done = answer_queue_take(&t->answers);
    struct routes *routes = NULL;
    uint64_t generation = 0;
    bool drain = false, stop = false, accept = false;
    if (atomic_exchange_explicit(&t->control_pending, false, memory_order_acquire)) {
        pthread_mutex_lock(&t->mutex);
        routes = t->pending_routes;
        generation = t->pending_generation;
        t->pending_routes = NULL;
        drain = t->drain_pending;
        t->drain_pending = false;
        stop = t->stop_pending;
        accept = t->accept_pending;
        t->accept_pending = false;
        pthread_mutex_unlock(&t->mutex);
    }

    while (done) {
        serve_request *req = done;
        done = req->next;
        if (stream_piecewise(req)) {
            stream_step(t, req);
            continue;
        }
        dispatch_disarm(req);
        send_answer(req->origin_request, req);
        request_release(req); /* the execution reference, handed over */
        finish(t, req);       /* the origin's reference */
    }
    if (routes) {
        if (t->routes) routes_release(t->routes);
        t->routes = routes;
        pthread_mutex_lock(&t->server->ack_mutex);
        t->routes_applied = generation;
        pthread_cond_broadcast(&t->server->ack_cond);
        pthread_mutex_unlock(&t->server->ack_mutex);
    }
    /* A drain goes on accepting: a connection made meanwhile (a balancer's
     * health check, a request) is answered at once, 503 and unprocessed,
     * instead of waiting unread in the listen queue until the stop ends
     * and resets it, which a balancer cannot tell from a lost request. */
    (void)drain;
    if (accept && !http1_start_accepting(t->http1))
        LOG_ERROR("HTTP thread cannot watch the listening socket");
    if (stop) event_base_loopbreak(t->base);
}

/* On this I/O thread, whose base holds the request's timer: it timed out. */
static void http_failed(serve_request *req, int status, const char *message)
{
    struct http1_exchange *ex = req->origin_request;
    if (access_log_on)
        access_log_request(req, "http", http1_peer(ex), req->endpoint_metrics->name, status, 0);
    http1_answer_error(ex, status, req->id, message, false);
    finish(req->origin, req);
}

static const struct dispatch_origin http_origin = {.ready = deliver_to_io_thread,
                                                   .failed = http_failed,
                                                   .count_endpoint = true};

/* Answers what dispatch refused, with an Allow header for 405 and 501. */
static void answer_refusal(struct http1_exchange *ex, const char *request_id,
                           const struct dispatch_error *err, bool close)
{
    if (!err->allow[0]) {
        http1_answer_error(ex, err->status, request_id, err->message, close);
        return;
    }
    size_t len = 0;
    char *body = json_error_body(err->message, &len);
    struct http1_answer a = {.status = err->status, .content_type = "application/json",
                             .request_id = request_id, .allow = err->allow, .body = body,
                             .body_len = body ? len : 0, .free_body = free, .close = close};
    http1_answer(ex, &a);
}

static void serve_routes_listing(struct io_thread *t, struct http1_exchange *ex,
                                 const char *request_id)
{
    struct evbuffer *buf = evbuffer_new();
    if (!buf) {
        http1_answer_error(ex, 500, request_id, "out of memory", false);
        return;
    }
    evbuffer_add(buf, "{", 1);
    bool first = true;
    for (size_t i = 0; t->routes && i < t->routes->count; i++) {
        const struct route_entry *e = &t->routes->entries[i];
        if (!e->route) continue;
        /* Routes and names are validated to printable ASCII without quotes
         * or backslashes that need escaping, except '"' and '\' in routes. */
        evbuffer_add_printf(buf, "%s\"", first ? "" : ", ");
        for (const char *p = e->route; *p; p++) {
            if (*p == '"' || *p == '\\') evbuffer_add(buf, "\\", 1);
            evbuffer_add(buf, p, 1);
        }
        evbuffer_add_printf(buf, "\": \"%s\"", e->endpoint);
        first = false;
    }
    evbuffer_add(buf, "}", 1);
    reply_buffer(ex, request_id, "application/json", buf);
}

static long resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
        fclose(f);
    }
    return resident * sysconf(_SC_PAGESIZE);
}

/* Prometheus text format, version 0.0.4. */
static void serve_metrics(struct io_thread *t, struct http1_exchange *ex, const char *request_id)
{
    struct evbuffer *buf = evbuffer_new();
    if (!buf) {
        http1_answer_error(ex, 500, request_id, "out of memory", false);
        return;
    }
    metrics_write_endpoints(buf);
    /* Every backend the current routes reach, once. */
    size_t count = 0, cap = 0;
    struct backend **backends = NULL;
    for (size_t i = 0; t->routes && i < t->routes->count; i++) {
        const struct route_entry *e = &t->routes->entries[i];
        for (size_t k = 0; k < e->target_count + e->shadow_count; k++) {
            struct backend *b = k < e->target_count ? e->targets[k].backend
                                                    : e->shadows[k - e->target_count].backend;
            size_t j = 0;
            while (j < count && backends[j] != b) j++;
            if (j < count) continue;
            if (count == cap) {
                cap = cap ? cap * 2 : 16;
                struct backend **grown = realloc(backends, cap * sizeof *grown);
                if (!grown) break;
                backends = grown;
            }
            backends[count++] = b;
        }
    }
    backend_write_metrics(backends, count, buf);
    free(backends);
    evbuffer_add_printf(buf,
                        "# HELP serve_process_start_time_seconds Start time of the server, Unix epoch.\n"
                        "# TYPE serve_process_start_time_seconds gauge\n"
                        "serve_process_start_time_seconds %ld\n"
                        "# HELP serve_process_resident_memory_bytes Resident memory of the server.\n"
                        "# TYPE serve_process_resident_memory_bytes gauge\n"
                        "serve_process_resident_memory_bytes %ld\n"
                        "# HELP serve_http_open_connections Client connections open.\n"
                        "# TYPE serve_http_open_connections gauge\n"
                        "serve_http_open_connections %zu\n"
                        "# HELP serve_http_body_memory_bytes Request bodies held in memory.\n"
                        "# TYPE serve_http_body_memory_bytes gauge\n"
                        "serve_http_body_memory_bytes %zu\n"
                        "# HELP serve_http_body_memory_limit_bytes --max-body-memory.\n"
                        "# TYPE serve_http_body_memory_limit_bytes gauge\n"
                        "serve_http_body_memory_limit_bytes %zu\n"
                        "# HELP serve_http_connections_closed_total Connections closed by serve, by reason.\n"
                        "# TYPE serve_http_connections_closed_total counter\n"
                        "serve_http_connections_closed_total{reason=\"read_timeout\"} %zu\n"
                        "serve_http_connections_closed_total{reason=\"connection_limit\"} %zu\n",
                        (long)t->server->started_at, resident_bytes(),
                        http_server_open_connections(t->server), http1_body_memory_in_use(),
                        http1_body_memory_limit(),
                        http_server_read_timeouts(t->server), http_server_refused(t->server));
    /* A thread with far more connections than the others does far more of
     * the work: how the listening socket's connections were spread. */
    evbuffer_add_printf(buf, "# HELP serve_http_thread_open_connections Client connections open, "
                             "by I/O thread.\n"
                             "# TYPE serve_http_thread_open_connections gauge\n");
    for (int i = 0; i < t->server->thread_count; i++)
        evbuffer_add_printf(buf, "serve_http_thread_open_connections{thread=\"%d\"} %zu\n", i,
                            http1_open_connections(t->server->threads[i].http1));
    reply_buffer(ex, request_id, "text/plain; version=0.0.4; charset=utf-8", buf);
}

/* Copies what the plugin may read out of the exchange, so that the plugin
 * never touches the connection layer's memory. */
static serve_request *build_request(struct http1_exchange *ex, const char *path,
                                    const char *client_id, const char *id)
{
    size_t header_count = http1_header_count(ex), strings = strlen(path) + 1;
    for (size_t i = 0; i < header_count; i++) {
        const char *name, *value;
        http1_header(ex, i, &name, &value);
        strings += strlen(name) + strlen(value) + 2;
    }
    size_t pointers = 2 * header_count * sizeof(char *);
    char *extra;
    serve_request *req = request_new(pointers + strings, &extra);
    if (!req) return NULL;
    req->headers = (const char **)(void *)extra;
    char *p = extra + pointers;
    for (size_t i = 0; i < header_count; i++) {
        const char *name, *value;
        http1_header(ex, i, &name, &value);
        size_t klen = strlen(name) + 1, vlen = strlen(value) + 1;
        memcpy(p, name, klen);
        req->headers[2 * i] = p;
        p += klen;
        memcpy(p, value, vlen);
        req->headers[2 * i + 1] = p;
        if (client_id && value == client_id) req->id = p;
        p += vlen;
    }
    req->header_count = header_count;
    size_t plen = strlen(path) + 1;
    memcpy(p, path, plen);
    req->path = p;
    req->method = http1_method(ex);
    if (!req->id) {
        snprintf(req->id_buf, sizeof req->id_buf, "%s", id);
        req->id = req->id_buf;
    }
    return req;
}

static bool parse_query(serve_request *req, const char *query)
{
    struct evkeyvalq kv;
    kv.tqh_first = NULL;
    kv.tqh_last = &kv.tqh_first;
    if (evhttp_parse_query_str(query, &kv) != 0) {
        evhttp_clear_headers(&kv);
        return false;
    }
    size_t n = 0;
    for (struct evkeyval *h = kv.tqh_first; h; h = h->next.tqe_next) n++;
    req->query = calloc(2 * n + 1, sizeof *req->query);
    bool ok = req->query != NULL;
    for (struct evkeyval *h = kv.tqh_first; ok && h; h = h->next.tqe_next) {
        req->query[2 * req->query_count] = strdup(h->key);
        req->query[2 * req->query_count + 1] = strdup(h->value);
        req->query_count++;
        ok = req->query[2 * req->query_count - 2] && req->query[2 * req->query_count - 1];
    }
    evhttp_clear_headers(&kv);
    return ok;
}

/* What routing decides for a request before its body matters. */
struct routing {
    const char *id;         /* the request id of the answer */
    const char *client_id;  /* the client's own, when acceptable */
    char generated_id[32];
    const char *path;       /* decoded */
    const char *query;
    char *decoded;          /* owned, when the path had escapes */
    const struct route_entry *route; /* NULL: a built-in path */
};

/* Decodes and checks the path, and finds who serves it. Returns false
 * after answering the request itself (an error); `close` asks for the
 * connection to close with such an answer. */
static bool route_request(struct io_thread *t, struct http1_exchange *ex, struct routing *r,
                          bool close)
{
    struct http_server *s = t->server;
    const char *found = http1_find_header(ex, "X-Request-ID");
    r->id = http1_request_id(ex, r->generated_id);
    r->client_id = r->id == found ? found : NULL;
    const char *raw_path = http1_path(ex, &r->query);
    r->path = raw_path;
    if (strchr(raw_path, '%')) {
        size_t decoded_len = 0;
        r->decoded = evhttp_uridecode(raw_path, 0, &decoded_len);
        if (!r->decoded || decoded_len == 0 || strlen(r->decoded) != decoded_len) {
            http1_answer_error(ex, 400, r->id, "malformed path: bad or NUL percent-encoding", close);
            return false;
        }
        r->path = r->decoded;
    }
    for (const unsigned char *p = (const unsigned char *)r->path; *p; p++)
        if (*p < 0x20 || *p == 0x7f) {
            http1_answer_error(ex, 400, r->id, "control character in the path", close);
            return false;
        }
    if (atomic_load(&s->draining)) {
        /* Refused before any routing: the header says so, and a client (a
         * remote backend of another node, a proxy) may send the request
         * elsewhere without fear of running it twice. */
        static const struct response_header unprocessed = {"X-Serve-Unprocessed", "draining"};
        size_t len = 0;
        char *body = json_error_body("server is shutting down", &len);
        struct http1_answer a = {.status = 503, .content_type = "application/json",
                                 .request_id = r->id, .headers = &unprocessed, .header_count = 1,
                                 .body = body, .body_len = body ? len : 0, .free_body = free,
                                 .close = true};
        http1_answer(ex, &a);
        return false;
    }
    if (strcmp(r->path, "/metrics") == 0 || strncmp(r->path, "/-/", 3) == 0) return true;
    const char *method = http1_method(ex);
    if (strncmp(r->path, "/v2", 3) == 0) {
        enum oip_outcome o = oip_front_route(t->routes, ex, r->path, method, r->id, close, &r->route);
        if (o == OIP_INFER) return true;
        if (o == OIP_ANSWERED) return false; /* as the built-in paths: not logged */
    }
    struct dispatch_error err;
    r->route = dispatch_route_path(t->routes, r->path, method, &err);
    if (!r->route) {
        answer_refusal(ex, r->id, &err, close);
        if (access_log_on) access_log_plain(http1_peer(ex), method, r->path, r->id, err.status, 0);
        return false;
    }
    return true;
}

/* Expect: 100-continue: the body is asked for only when the request would
 * be taken; any refusal closes the connection (its body is never read). */
static bool check_expect(void *ctx, struct http1_exchange *ex)
{
    struct routing r = {0};
    bool taken = route_request(ctx, ex, &r, true);
    free(r.decoded);
    return taken;
}

/* A balancer's health checks: when the last came, and how often they come. */
static void note_health_check(struct http_server *s)
{
    uint64_t now = serve__now_ns();
    uint64_t last = atomic_exchange(&s->health_last_ns, now);
    if (last && now > last) atomic_store(&s->health_interval_ns, now - last);
}

uint64_t http_server_drain_linger_ns(struct http_server *s)
{
    uint64_t last = atomic_load(&s->health_last_ns);
    uint64_t interval = atomic_load(&s->health_interval_ns);
    if (!last || !interval) return 0;
    /* Not polled lately: nobody is looking. */
    if (serve__now_ns() - last > 3 * interval + 1000000000ull) return 0;
    uint64_t linger = 2 * interval + 200000000ull;
    return linger < 10000000000ull ? linger : 10000000000ull;
}

static void serve_builtin(struct io_thread *t, struct http1_exchange *ex, const struct routing *r)
{
    if (strcmp(r->path, "/metrics") == 0)
        serve_metrics(t, ex, r->id);
    else if (strcmp(r->path, "/-/healthz") == 0) {
        note_health_check(t->server);
        reply(ex, 200, r->id, "text/plain", "ok\n", 3);
    }
    else if (strcmp(r->path, "/-/routes") == 0)
        serve_routes_listing(t, ex, r->id);
    else
        http1_answer_error(ex, 404, r->id, "unknown server path; GET /-/routes lists the routes", false);
}

static void on_request(void *ctx, struct http1_exchange *ex)
{
    struct io_thread *t = ctx;
    struct routing r = {0};
    if (!route_request(t, ex, &r, false)) goto done;
    if (!r.route) {
        serve_builtin(t, ex, &r);
        goto done;
    }
    const struct route_entry *route = r.route;
    serve_request *req = build_request(ex, r.path, r.client_id, r.id);
    if (!req || (r.query && *r.query && !parse_query(req, r.query))) {
        if (req) request_release(req);
        http1_answer_error(ex, req ? 400 : 500, r.id, req ? "malformed query string" : "out of memory", false);
        goto done;
    }
    size_t body_len = 0;
    void *body = http1_take_body(ex, &body_len);
    if (body) {
        req->owned_body = body;
        req->free_owned_body = http1_body_free;
        req->body = body;
        req->body_len = body_len;
    }
    req->received_ns = serve__now_ns();
    req->answers = &t->answers; /* a replica hands back a batch's answers at once */
    if (http1_can_stream(ex)) req->stream_ready = stream_to_io_thread;
    req->origin = t;
    req->origin_request = ex;
    atomic_fetch_add_explicit(&t->outstanding, 1, memory_order_relaxed);
    struct dispatch_error err;
    if (dispatch_submit(req, route, &http_origin, t->base, &err) != DISPATCH_QUEUED) {
        if (access_log_on)
            access_log_request(req, "http", http1_peer(ex), route->endpoint, err.status, 0);
        answer_refusal(ex, req->id, &err, false);
        finish(t, req);
    } else {
        http1_set_owner(ex, req); /* for on_abandon: valid until finish */
    }
done:
    free(r.decoded);
}

/* The client of a queued or running request went away. If the request
 * had no answer yet it never will: a queued one is dropped before it runs
 * (serve_backend_cancelled_total), a running one's answer is dropped. The
 * access log says 499, as nginx does for a client that closed first. */
static void on_abandon(void *ctx, struct http1_exchange *ex)
{
    struct io_thread *t = ctx;
    serve_request *req = http1_owner(ex);
    bool streaming;
    if (!req || !request_cancel(req, &streaming)) return; /* its answer is on its way */
    dispatch_disarm(req);
    backend_request_cancelled(req); /* serve_request_cancelled, where it runs */
    if (streaming) stream_cancelled(req); /* a writer waiting for room is told */
    if (access_log_on)
        access_log_request(req, "http", http1_peer(ex), req->endpoint_metrics->name, 499, 0);
    http1_answer_error(ex, 499, req->id, "the client closed the connection", true);
    finish(t, req);
}

/* Part of a stream's output was written: its writer may have room. */
static void on_drain(void *ctx, struct http1_exchange *ex)
{
    (void)ctx;
    serve_request *req = http1_owner(ex);
    if (req && req->stream && atomic_load(&req->state) != REQ_CANCELLED)
        stream_sent(req, http1_stream_unsent(ex));
}

static const struct http1_handler front_end = {.check_expect = check_expect,
                                               .on_request = on_request,
                                               .on_abandon = on_abandon,
                                               .on_drain = on_drain};

/* One pass of the loop at a time: the replicas the pass's requests woke
 * are woken once it ends, so that each takes what the pass read as one
 * batch (backend_hold_wakeups). */
static void *io_thread_main(void *arg)
{
    struct io_thread *t = arg;
    crash_report_thread_start();
    backend_hold_wakeups(true);
    while (!event_base_got_break(t->base)) {
        event_base_loop(t->base, EVLOOP_ONCE | EVLOOP_NO_EXIT_ON_EMPTY);
        backend_flush_wakeups();
    }
    return NULL;
}

/* The port a listening socket is bound to. */
static int bound_port(int fd)
{
    struct sockaddr_storage addr;
    socklen_t len = sizeof addr;
    if (getsockname(fd, (struct sockaddr *)&addr, &len) != 0) return 0;
    return ntohs(addr.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&addr)->sin6_port
                                            : ((struct sockaddr_in *)&addr)->sin_port);
}

static int open_listener(const struct http_options *o, int *port, char *err,
                         size_t errlen)
{
    if (o->use_listen_fd) {
        /* Our own copy: http_server_stop closes it, the caller's stays. */
        int fd = fcntl(o->listen_fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0) {
            snprintf(err, errlen, "listening socket %d: %s", o->listen_fd, strerror(errno));
            return -1;
        }
        evutil_make_socket_nonblocking(fd);
        *port = bound_port(fd);
        return fd;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char service[16];
    snprintf(service, sizeof service, "%d", o->port);
    int rc = getaddrinfo(o->host, service, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "--http %s:%d: %s", o->host, o->port, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", o->host, o->port, strerror(errno));
        if (fd >= 0) close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    *port = bound_port(fd);
    evutil_make_socket_nonblocking(fd);
    return fd;
}

int http_listen(const char *host, int port, int *bound, char *err, size_t errlen)
{
    struct http_options o = {.host = host, .port = port};
    return open_listener(&o, bound, err, errlen);
}

static bool io_thread_init(struct io_thread *t, struct http_server *s,
                           const struct http_options *o)
{
    t->server = s;
    pthread_mutex_init(&t->mutex, NULL);
    t->base = event_base_new();
    if (!(t->pieces = evbuffer_new())) return false;
    bool queue_ok = answer_queue_init(&t->answers);
    t->wake = t->base && queue_ok ? event_new(t->base, answer_queue_fd(&t->answers),
                                              EV_READ | EV_PERSIST | EV_ET, on_wake, t)
                                  : NULL;
    if (!t->wake || event_add(t->wake, NULL) != 0) return false;
    int fd = dup(s->listen_fd);
    if (fd < 0) return false;
    struct http1_limits limits = {.max_body = o->max_body, .max_header = o->max_header,
                                  .idle_timeout_s = o->idle_timeout_s,
                                  .read_timeout_s = o->read_timeout_s,
                                  .max_connections = o->max_connections,
                                  .open = &s->open_connections};
    t->http1 = http1_new(t->base, fd, &limits, &front_end, t);
    if (!t->http1) {
        close(fd);
        return false;
    }
    return true;
}

static pthread_once_t threads_once = PTHREAD_ONCE_INIT;
static void enable_libevent_threads(void) { evthread_use_pthreads(); }

struct http_server *http_server_start(const struct http_options *o, char *err,
                                      size_t errlen)
{
    pthread_once(&threads_once, enable_libevent_threads);
    struct http_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&s->ack_mutex, NULL);
    pthread_cond_init(&s->ack_cond, NULL);
    /* The series of answers without an endpoint (dispatch counts its 404s
     * there) is listed from the start, not from the first 404. */
    metrics_endpoint("");
    http1_body_memory_set_limit(o->max_body_memory);
    s->started_at = time(NULL);
    s->listen_fd = open_listener(o, &s->port, err, errlen);
    if (s->listen_fd < 0) {
        free(s);
        return NULL;
    }
    s->thread_count = o->threads > 0 ? o->threads : 1;
    s->threads = calloc((size_t)s->thread_count, sizeof *s->threads);
    for (int i = 0; s->threads && i < s->thread_count; i++) s->threads[i].answers.wake_fd = -1;
    for (int i = 0; s->threads && i < s->thread_count; i++) {
        struct io_thread *t = &s->threads[i];
        if (!io_thread_init(t, s, o) ||
            pthread_create(&t->thread, NULL, io_thread_main, t) != 0) {
            snprintf(err, errlen, "cannot start HTTP thread %d", i);
            http_server_stop(s);
            return NULL;
        }
        t->thread_started = true;
    }
    if (!s->threads) {
        snprintf(err, errlen, "out of memory");
        http_server_stop(s);
        return NULL;
    }
    return s;
}

int http_server_port(const struct http_server *s) { return s->port; }

void http_server_accept(struct http_server *s)
{
    for (int i = 0; i < s->thread_count; i++) {
        struct io_thread *t = &s->threads[i];
        pthread_mutex_lock(&t->mutex);
        t->accept_pending = true;
        pthread_mutex_unlock(&t->mutex);
        io_thread_wake(t);
    }
}

void http_server_publish_routes(struct http_server *s, struct routes *routes)
{
    pthread_mutex_lock(&s->ack_mutex);
    uint64_t generation = ++s->routes_generation;
    pthread_mutex_unlock(&s->ack_mutex);
    for (int i = 0; i < s->thread_count; i++) {
        struct io_thread *t = &s->threads[i];
        routes_ref(routes);
        pthread_mutex_lock(&t->mutex);
        struct routes *unused = t->pending_routes;
        t->pending_routes = routes;
        t->pending_generation = generation;
        pthread_mutex_unlock(&t->mutex);
        if (unused) routes_release(unused);
        io_thread_wake(t);
    }
    /* A thread stuck in a callback for this long is not worth a hang. */
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&s->ack_mutex);
    for (int i = 0; i < s->thread_count; i++)
        while (s->threads[i].routes_applied < generation)
            if (pthread_cond_timedwait(&s->ack_cond, &s->ack_mutex, &deadline) != 0) {
                LOG_WARN("HTTP thread %d did not take new routes within 10 s", i);
                break;
            }
    pthread_mutex_unlock(&s->ack_mutex);
}

void http_server_drain(struct http_server *s)
{
    atomic_store(&s->draining, true);
    for (int i = 0; i < s->thread_count; i++) {
        struct io_thread *t = &s->threads[i];
        pthread_mutex_lock(&t->mutex);
        t->drain_pending = true;
        pthread_mutex_unlock(&t->mutex);
        io_thread_wake(t);
    }
}

size_t http_server_open_connections(struct http_server *s)
{
    return atomic_load_explicit(&s->open_connections, memory_order_relaxed);
}

size_t http_server_read_timeouts(struct http_server *s)
{
    size_t n = 0;
    for (int i = 0; i < s->thread_count; i++) n += http1_read_timeouts(s->threads[i].http1);
    return n;
}

size_t http_server_refused(struct http_server *s)
{
    size_t n = 0;
    for (int i = 0; i < s->thread_count; i++) n += http1_refused(s->threads[i].http1);
    return n;
}

size_t http_server_outstanding(struct http_server *s)
{
    size_t n = 0;
    for (int i = 0; i < s->thread_count; i++) n += atomic_load(&s->threads[i].outstanding);
    return n;
}

void http_server_stop(struct http_server *s)
{
    if (!s) return;
    for (int i = 0; s->threads && i < s->thread_count; i++) {
        struct io_thread *t = &s->threads[i];
        if (t->thread_started) {
            /* Not event_base_loopbreak from here: a loop that has not
             * started yet would forget it. The wake event stays active
             * until the loop runs it. */
            pthread_mutex_lock(&t->mutex);
            t->stop_pending = true;
            pthread_mutex_unlock(&t->mutex);
            io_thread_wake(t);
            pthread_join(t->thread, NULL);
        }
    }
    for (int i = 0; s->threads && i < s->thread_count; i++) {
        struct io_thread *t = &s->threads[i];
        if (t->http1) http1_free(t->http1);
        if (t->wake) event_free(t->wake);
        /* Answers that arrived after the loop stopped: nobody to send them
         * to any more. */
        for (serve_request *req = answer_queue_take(&t->answers), *next; req; req = next) {
            next = req->next;
            http1_answer_error(req->origin_request, 503, req->id, "server is shutting down", true);
            request_release(req);
            request_release(req);
        }
        if (t->routes) routes_release(t->routes);
        if (t->pending_routes) routes_release(t->pending_routes);
        if (t->pieces) evbuffer_free(t->pieces);
        if (t->base) event_base_free(t->base);
        answer_queue_destroy(&t->answers);
        pthread_mutex_destroy(&t->mutex);
    }
    if (s->listen_fd >= 0) close(s->listen_fd);
    pthread_mutex_destroy(&s->ack_mutex);
    pthread_cond_destroy(&s->ack_cond);
    free(s->threads);
    free(s);
}
