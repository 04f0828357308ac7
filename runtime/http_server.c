/* http_server.c - the HTTP front end on libevent's evhttp. */
#include "http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h> /* the request's HTTP version */
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

#include "clock.h"
#include "handles.h"
#include "access_log.h"
#include "http_conn.h"
#include "log.h"
#include "metrics.h"


struct io_thread {
    struct http_server *server;
    struct conn_table *conns;
    pthread_t thread;
    bool thread_started;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct event *wake; /* completions, new routes, drain */
    struct routes *routes;
    atomic_size_t outstanding;

    pthread_mutex_t mutex; /* guards the fields below */
    serve_request *done_head;
    serve_request *done_tail;
    struct routes *pending_routes;
    uint64_t pending_generation;
    bool drain_pending;
    bool stop_pending;

    uint64_t routes_applied; /* guarded by server->ack_mutex */
};

struct http_server {
    size_t max_header;
    struct endpoint_metrics *unrouted; /* 404s and other answers without an endpoint */
    time_t started_at;
    /* Publishing waits until every I/O thread runs the new routes, so that
     * a backend taken out of them can be stopped without losing a request. */
    pthread_mutex_t ack_mutex;
    pthread_cond_t ack_cond;
    uint64_t routes_generation;
    int listen_fd;
    int port;
    atomic_bool draining;
    atomic_size_t open_connections;
    size_t max_connections;
    int thread_count;
    struct io_thread *threads;
};

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 508: return "Loop Detected";
    default: return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

static const char *method_name(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return "OTHER";
    }
}

/* The client's address, for the access log. */
static const char *peer_of(struct evhttp_request *ev)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(ev);
    char *address = NULL;
    ev_uint16_t port = 0;
    if (evcon) evhttp_connection_get_peer(evcon, &address, &port);
    return address ? address : "-";
}

static void reply(struct evhttp_request *ev, int status, const char *request_id,
                  const char *content_type, const void *body, size_t len)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(ev);
    evhttp_add_header(out, "Content-Type", content_type);
    if (request_id) evhttp_add_header(out, "X-Request-ID", request_id);
    if (len) evbuffer_add(evhttp_request_get_output_buffer(ev), body, len);
    evhttp_send_reply(ev, status, reason_phrase(status), NULL);
}

static void reply_error(struct evhttp_request *ev, int status,
                        const char *request_id, const char *message)
{
    size_t len = 0;
    char *body = json_error_body(message, &len);
    reply(ev, status, request_id, "application/json", body, body ? len : 0);
    free(body);
}

/* evbuffer cleanup for a body handed over with serve_respond_take. */
union free_fn_box {
    void (*fn)(void *);
    void *ptr;
};

static void free_handed_body(const void *data, size_t len, void *extra)
{
    (void)len;
    union free_fn_box box = {.ptr = extra};
    box.fn((void *)data);
}

static void send_answer(struct evhttp_request *ev, serve_request *req)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(ev);
    evhttp_add_header(out, "Content-Type", req->content_type);
    evhttp_add_header(out, "X-Request-ID", req->id);
    for (size_t i = 0; i < req->response_header_count; i++)
        evhttp_add_header(out, req->response_headers[i].name,
                          req->response_headers[i].value);
    if (req->response_len) {
        struct evbuffer *buf = evhttp_request_get_output_buffer(ev);
        if (req->free_response_body) {
            union free_fn_box box = {.fn = req->free_response_body};
            /* Zero copy: the evbuffer frees the body once written. */
            if (evbuffer_add_reference(buf, req->response_body, req->response_len,
                                       free_handed_body, box.ptr) == 0) {
                req->response_body = NULL;
                req->free_response_body = NULL;
            }
        } else {
            evbuffer_add(buf, req->response_body, req->response_len);
        }
    }
    size_t bytes = req->response_len;
    if (access_log_on)
        access_log_request(req, "http", peer_of(ev), req->endpoint_metrics->name, req->status, bytes);
    evhttp_send_reply(ev, req->status, reason_phrase(req->status), NULL);
    metrics_count_response(req->endpoint_metrics, req->status, serve__now_ns() - req->received_ns);
}

/* Called from any thread with a request whose answer is ready. */
static void deliver_to_io_thread(serve_request *req)
{
    struct io_thread *t = req->origin;
    pthread_mutex_lock(&t->mutex);
    bool was_empty = t->done_head == NULL;
    req->next = NULL;
    if (t->done_tail)
        t->done_tail->next = req;
    else
        t->done_head = req;
    t->done_tail = req;
    pthread_mutex_unlock(&t->mutex);
    if (was_empty) event_active(t->wake, EV_READ, 0);
}

static void finish(struct io_thread *t, serve_request *req)
{
    atomic_fetch_sub_explicit(&t->outstanding, 1, memory_order_relaxed);
    request_release(req);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct io_thread *t = arg;
    pthread_mutex_lock(&t->mutex);
    serve_request *done = t->done_head;
    t->done_head = t->done_tail = NULL;
    struct routes *routes = t->pending_routes;
    uint64_t generation = t->pending_generation;
    t->pending_routes = NULL;
    bool drain = t->drain_pending;
    t->drain_pending = false;
    bool stop = t->stop_pending;
    pthread_mutex_unlock(&t->mutex);

    while (done) {
        serve_request *req = done;
        done = req->next;
        if (req->has_timeout) evtimer_del(&req->timeout_event);
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
    if (drain && t->bound) {
        evhttp_del_accept_socket(t->http, t->bound);
        t->bound = NULL;
    }
    if (stop) event_base_loopbreak(t->base);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    serve_request *req = arg;
    if (!request_time_out(req)) return; /* the answer won; it is on its way */
    char msg[256];
    backend_timed_out(req->backend, req, msg, sizeof msg);
    if (access_log_on)
        access_log_request(req, "http", peer_of(req->origin_request), req->endpoint_metrics->name, 504, 0);
    reply_error(req->origin_request, 504, req->id, msg);
    metrics_count_response(req->endpoint_metrics, 504, serve__now_ns() - req->received_ns);
    finish(req->origin, req);
}

static void serve_routes_listing(struct io_thread *t, struct evhttp_request *ev,
                                 const char *request_id)
{
    struct evbuffer *buf = evhttp_request_get_output_buffer(ev);
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
    struct evkeyvalq *out = evhttp_request_get_output_headers(ev);
    evhttp_add_header(out, "Content-Type", "application/json");
    evhttp_add_header(out, "X-Request-ID", request_id);
    evhttp_send_reply(ev, 200, "OK", NULL);
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
static void serve_metrics(struct io_thread *t, struct evhttp_request *ev, const char *request_id)
{
    struct evbuffer *buf = evhttp_request_get_output_buffer(ev);
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
                        "# HELP serve_http_connections_closed_total Connections closed by serve, by reason.\n"
                        "# TYPE serve_http_connections_closed_total counter\n"
                        "serve_http_connections_closed_total{reason=\"read_timeout\"} %zu\n"
                        "serve_http_connections_closed_total{reason=\"connection_limit\"} %zu\n",
                        (long)t->server->started_at, resident_bytes(),
                        http_server_open_connections(t->server),
                        http_server_read_timeouts(t->server), http_server_refused(t->server));
    struct evkeyvalq *out = evhttp_request_get_output_headers(ev);
    evhttp_add_header(out, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    evhttp_add_header(out, "X-Request-ID", request_id);
    evhttp_send_reply(ev, 200, "OK", NULL);
}

static bool is_token_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", c);
}

/* What evhttp lets through but a server must not: framing that two parsers
 * could read differently (request smuggling), and bytes no header may hold.
 * Returns the 400 (or 501) message, or NULL when the head is sound. */
static const char *head_problem(struct evhttp_request *ev, int *status)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(ev);
    const char *length = NULL, *host = NULL;
    int hosts = 0;
    *status = 400;
    for (struct evkeyval *h = in->tqh_first; h; h = h->next.tqe_next) {
        if (!*h->key) return "empty header name";
        for (const unsigned char *p = (const unsigned char *)h->key; *p; p++)
            if (!is_token_char(*p)) return "invalid character in a header name";
        for (const unsigned char *p = (const unsigned char *)h->value; *p; p++)
            if ((*p < 0x20 && *p != '\t') || *p == 0x7f) return "control character in a header value";
        if (strcasecmp(h->key, "Content-Length") == 0) {
            if (length && strcmp(length, h->value) != 0) return "conflicting Content-Length headers";
            length = h->value;
            for (const char *p = h->value; *p; p++)
                if (*p < '0' || *p > '9') return "Content-Length must be digits only";
        } else if (strcasecmp(h->key, "Transfer-Encoding") == 0) {
            if (ev->major == 1 && ev->minor == 0) return "Transfer-Encoding in an HTTP/1.0 request";
            if (strcasecmp(h->value, "chunked") != 0) {
                *status = 501;
                return "only Transfer-Encoding: chunked is supported";
            }
        } else if (strcasecmp(h->key, "Host") == 0) {
            host = h->value;
            hosts++;
        }
    }
    if (hosts > 1) return "more than one Host header";
    if (ev->major == 1 && ev->minor >= 1 && !host) return "HTTP/1.1 request without a Host header";
    return NULL;
}

static bool request_id_acceptable(const char *id)
{
    size_t n = 0;
    for (; id[n]; n++)
        if (n >= 128 || id[n] <= ' ' || id[n] >= 127) return false;
    return n > 0;
}

/* Copies what the plugin may read out of the evhttp request, so the plugin
 * never touches evhttp's objects (which the I/O thread frees on a 504). */
static serve_request *build_request(struct evhttp_request *ev, const char *path,
                                    const char *client_id, const char *id)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(ev);
    size_t header_count = 0, strings = strlen(path) + 1;
    for (struct evkeyval *h = in->tqh_first; h; h = h->next.tqe_next) {
        header_count++;
        strings += strlen(h->key) + strlen(h->value) + 2;
    }
    size_t pointers = 2 * header_count * sizeof(char *);
    char *extra;
    serve_request *req = request_new(pointers + strings, &extra);
    if (!req) return NULL;
    req->headers = (const char **)(void *)extra;
    char *p = extra + pointers;
    for (struct evkeyval *h = in->tqh_first; h; h = h->next.tqe_next) {
        size_t klen = strlen(h->key) + 1, vlen = strlen(h->value) + 1;
        memcpy(p, h->key, klen);
        req->headers[2 * req->header_count] = p;
        p += klen;
        memcpy(p, h->value, vlen);
        req->headers[2 * req->header_count + 1] = p;
        if (client_id && h->value == client_id) req->id = p;
        p += vlen;
        req->header_count++;
    }
    size_t plen = strlen(path) + 1;
    memcpy(p, path, plen);
    req->path = p;
    req->method = method_name(evhttp_request_get_command(ev));
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

static void on_request(struct evhttp_request *ev, void *arg)
{
    struct io_thread *t = arg;
    struct http_server *s = t->server;
    bool within_limit = conn_request_read(t->conns, ev);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(ev);
    const char *raw_path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *client_id = evhttp_find_header(evhttp_request_get_input_headers(ev),
                                               "X-Request-ID");
    if (client_id && !request_id_acceptable(client_id)) client_id = NULL;
    char generated_id[32];
    const char *id = client_id;
    if (!id) {
        request_id_generate(generated_id);
        id = generated_id;
    }
    if (ev->major != 1 || ev->minor > 1) {
        /* Before any answer: evhttp writes the status line in the request's
         * own version ("HTTP/0.9 200"). */
        ev->major = 1;
        ev->minor = 1;
        evhttp_add_header(evhttp_request_get_output_headers(ev), "Connection", "close");
        reply_error(ev, 505, id, "only HTTP/1.0 and HTTP/1.1 are supported");
        return;
    }
    if (!within_limit) {
        char why[80];
        snprintf(why, sizeof why, "server at its connection limit (%zu)", s->max_connections);
        evhttp_add_header(evhttp_request_get_output_headers(ev), "Connection", "close");
        reply_error(ev, 503, id, why);
        return;
    }
    if (!raw_path || !*raw_path) {
        reply_error(ev, 400, id, "malformed request target");
        return;
    }
    /* The head as sent, near enough: request line and header lines. */
    size_t head_size = strlen(evhttp_request_get_uri(ev)) + 16;
    struct evkeyvalq *in_headers = evhttp_request_get_input_headers(ev);
    for (struct evkeyval *h = in_headers->tqh_first; h; h = h->next.tqe_next)
        head_size += strlen(h->key) + strlen(h->value) + 4;
    if (head_size > s->max_header) {
        evhttp_add_header(evhttp_request_get_output_headers(ev), "Connection", "close");
        reply_error(ev, 431, id, "request head larger than --max-header");
        return;
    }
    int problem_status;
    const char *problem = head_problem(ev, &problem_status);
    if (problem) {
        /* The framing may be off for what follows: do not read on. */
        evhttp_add_header(evhttp_request_get_output_headers(ev), "Connection", "close");
        reply_error(ev, problem_status, id, problem);
        return;
    }
    char *decoded = NULL;
    const char *path = raw_path;
    if (strchr(raw_path, '%')) {
        size_t decoded_len = 0;
        decoded = evhttp_uridecode(raw_path, 0, &decoded_len);
        if (!decoded || decoded_len == 0 || strlen(decoded) != decoded_len) {
            free(decoded);
            reply_error(ev, 400, id, "malformed path: bad or NUL percent-encoding");
            return;
        }
        path = decoded;
    }
    for (const unsigned char *p = (const unsigned char *)path; *p; p++)
        if (*p < 0x20 || *p == 0x7f) {
            free(decoded);
            reply_error(ev, 400, id, "control character in the path");
            return;
        }
    enum evhttp_cmd_type cmd = evhttp_request_get_command(ev);

    if (atomic_load(&s->draining)) {
        evhttp_add_header(evhttp_request_get_output_headers(ev), "Connection", "close");
        reply_error(ev, 503, id, "server is shutting down");
        goto done;
    }
    if (strcmp(path, "/metrics") == 0) {
        serve_metrics(t, ev, id);
        goto done;
    }
    if (strncmp(path, "/-/", 3) == 0) {
        if (strcmp(path, "/-/healthz") == 0)
            reply(ev, 200, id, "text/plain", "ok\n", 3);
        else if (strcmp(path, "/-/routes") == 0)
            serve_routes_listing(t, ev, id);
        else
            reply_error(ev, 404, id, "unknown server path; GET /-/routes lists the routes");
        goto done;
    }
    const struct route_entry *route = routes_match(t->routes, path);
    if (!route) {
        char msg[512];
        snprintf(msg, sizeof msg, "no endpoint serves %.300s; GET /-/routes lists the routes", path);
        reply_error(ev, 404, id, msg);
        metrics_count_response(s->unrouted, 404, 0);
        if (access_log_on) access_log_plain(peer_of(ev), method_name(cmd), path, id, 404, 0);
        goto done;
    }
    const char *method = method_name(cmd);
    if (!(route->methods & method_bit(method))) {
        char allowed[128], msg[256];
        methods_format(route->methods, allowed, sizeof allowed);
        snprintf(msg, sizeof msg, "method %s not allowed on endpoint %s (allowed: %s)",
                 method, route->endpoint, allowed);
        evhttp_add_header(evhttp_request_get_output_headers(ev), "Allow", allowed);
        reply_error(ev, 405, id, msg);
        metrics_count_response(route->metrics, 405, 0);
        if (access_log_on) access_log_plain(peer_of(ev), method, path, id, 405, 0);
        goto done;
    }

    serve_request *req = build_request(ev, path, client_id, id);
    const char *query = evhttp_uri_get_query(uri);
    if (!req || (query && *query && !parse_query(req, query))) {
        if (req) request_release(req);
        reply_error(ev, req ? 400 : 500, id, req ? "malformed query string" : "out of memory");
        goto done;
    }
    struct evbuffer *input = evhttp_request_get_input_buffer(ev);
    size_t body_len = evbuffer_get_length(input);
    if (body_len) {
        req->body_buf = evbuffer_new();
        /* Moves evhttp's chains into ours: no copy unless the body arrived
         * in several pieces and must be made contiguous. */
        if (!req->body_buf || evbuffer_add_buffer(req->body_buf, input) != 0) {
            request_release(req);
            reply_error(ev, 500, id, "out of memory");
            goto done;
        }
        req->body = evbuffer_pullup(req->body_buf, -1);
        req->body_len = body_len;
    }
    req->received_ns = serve__now_ns();
    req->endpoint_metrics = route->metrics;
    req->backend = route_pick(route, serve_request_header(req, "X-Serve-Shard-Key"));
    backend_ref(req->backend);
    req->deliver = deliver_to_io_thread;
    req->origin = t;
    req->origin_request = ev;
    atomic_fetch_add_explicit(&t->outstanding, 1, memory_order_relaxed);

    double timeout_ms = backend_get_spec(req->backend)->options.request_timeout_ms;
    if (timeout_ms > 0) {
        evtimer_assign(&req->timeout_event, t->base, on_timeout, req);
        uint64_t us = (uint64_t)(timeout_ms * 1000.0);
        struct timeval tv = {(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};
        evtimer_add(&req->timeout_event, &tv);
        req->has_timeout = true;
    }
    enum enqueue_result queued = backend_enqueue(req->backend, req);
    if (queued != ENQUEUE_OK) {
        if (req->has_timeout) evtimer_del(&req->timeout_event);
        char msg[256];
        const char *name = backend_name(req->backend);
        if (queued == ENQUEUE_OVERLOADED)
            snprintf(msg, sizeof msg,
                     "request dropped: backend %s is overloaded (%u requests queued)", name,
                     backend_get_spec(req->backend)->options.max_queued_requests);
        else
            snprintf(msg, sizeof msg, "backend %s is not accepting requests", name);
        if (access_log_on) access_log_request(req, "http", peer_of(ev), route->endpoint, 503, 0);
        reply_error(ev, 503, req->id, msg);
        metrics_count_response(req->endpoint_metrics, 503, serve__now_ns() - req->received_ns);
        finish(t, req);
    } else if (route->shadow_count) {
        handles_shadow(route, req);
    }
done:
    free(decoded);
}

static void *io_thread_main(void *arg)
{
    struct io_thread *t = arg;
    event_base_loop(t->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static int open_listener(const struct http_options *o, int *port, char *err,
                         size_t errlen)
{
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
    struct sockaddr_storage addr;
    socklen_t len = sizeof addr;
    getsockname(fd, (struct sockaddr *)&addr, &len);
    *port = ntohs(addr.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&addr)->sin6_port
                                             : ((struct sockaddr_in *)&addr)->sin_port);
    evutil_make_socket_nonblocking(fd);
    return fd;
}

static bool io_thread_init(struct io_thread *t, struct http_server *s,
                           const struct http_options *o)
{
    t->server = s;
    pthread_mutex_init(&t->mutex, NULL);
    t->base = event_base_new();
    t->http = t->base ? evhttp_new(t->base) : NULL;
    t->wake = t->base ? event_new(t->base, -1, 0, on_wake, t) : NULL;
    struct conn_limits limits = {&s->open_connections, s->max_connections, o->read_timeout_s};
    t->conns = t->base ? conn_table_new(t->base, &limits) : NULL;
    if (!t->http || !t->wake || !t->conns) return false;
    evhttp_set_bevcb(t->http, conn_table_accept, t->conns);
    evhttp_set_gencb(t->http, on_request, t);
    evhttp_set_max_body_size(t->http, (ev_ssize_t)o->max_body);
    /* libevent refuses heads over its cap with its own 400 and a close; the
     * cap is twice ours so that most oversized heads get our 431 instead. */
    evhttp_set_max_headers_size(t->http, (ev_ssize_t)o->max_header * 2);
    evhttp_set_timeout(t->http, o->idle_timeout_s);
    evhttp_set_allowed_methods(t->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    int fd = dup(s->listen_fd);
    if (fd < 0) return false;
    t->bound = evhttp_accept_socket_with_handle(t->http, fd);
    if (!t->bound) {
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
    s->unrouted = metrics_endpoint("");
    s->max_header = o->max_header;
    s->max_connections = o->max_connections;
    s->started_at = time(NULL);
    s->listen_fd = open_listener(o, &s->port, err, errlen);
    if (s->listen_fd < 0) {
        free(s);
        return NULL;
    }
    s->thread_count = o->threads > 0 ? o->threads : 1;
    s->threads = calloc((size_t)s->thread_count, sizeof *s->threads);
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
        event_active(t->wake, EV_READ, 0);
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
        event_active(t->wake, EV_READ, 0);
    }
}

size_t http_server_open_connections(struct http_server *s)
{
    return atomic_load_explicit(&s->open_connections, memory_order_relaxed);
}

size_t http_server_read_timeouts(struct http_server *s)
{
    size_t n = 0;
    for (int i = 0; i < s->thread_count; i++) n += conn_table_read_timeouts(s->threads[i].conns);
    return n;
}

size_t http_server_refused(struct http_server *s)
{
    size_t n = 0;
    for (int i = 0; i < s->thread_count; i++) n += conn_table_refused(s->threads[i].conns);
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
            event_active(t->wake, EV_READ, 0);
            pthread_join(t->thread, NULL);
        }
    }
    for (int i = 0; s->threads && i < s->thread_count; i++) {
        struct io_thread *t = &s->threads[i];
        if (t->http) evhttp_free(t->http);
        conn_table_free(t->conns);
        if (t->wake) event_free(t->wake);
        /* Answers that arrived after the loop stopped: nobody to send them
         * to any more. */
        for (serve_request *req = t->done_head, *next; req; req = next) {
            next = req->next;
            request_release(req);
            request_release(req);
        }
        if (t->routes) routes_release(t->routes);
        if (t->pending_routes) routes_release(t->pending_routes);
        if (t->base) event_base_free(t->base);
        pthread_mutex_destroy(&t->mutex);
    }
    if (s->listen_fd >= 0) close(s->listen_fd);
    pthread_mutex_destroy(&s->ack_mutex);
    pthread_cond_destroy(&s->ack_cond);
    free(s->threads);
    free(s);
}
