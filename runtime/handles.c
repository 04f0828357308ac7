/* handles.c - handle calls: requests whose origin is a callback instead of
 * an HTTP connection (see handles.h and the SDK header). */
#include "handles.h"

#include <event2/buffer.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "access_log.h"
#include "dispatch.h"
#include "log.h"
#include "metrics.h"
#include "replica_context.h"
#include "backend.h"
#include "stream.h"

struct serve_handle {
    struct serve_handle *next;
    atomic_ulong *calls; /* counted per backend and target, beyond this replica's life */
    char endpoint[];
};


SERVE_EXPORT serve_handle *serve_replica_handle(serve_replica *replica, const char *endpoint)
{
    if (!replica || !endpoint || !*endpoint) return NULL;
    /* One handle per target and replica: asking again returns it. */
    for (serve_handle *h = atomic_load(&replica->handles); h; h = h->next)
        if (strcmp(h->endpoint, endpoint) == 0) return h;
    size_t n = strlen(endpoint) + 1;
    serve_handle *h = malloc(sizeof *h + n);
    if (!h) return NULL;
    memcpy(h->endpoint, endpoint, n);
    h->calls = metrics_handle_calls(replica->metrics, endpoint);
    if (!h->calls) {
        free(h);
        return NULL;
    }
    h->next = atomic_load(&replica->handles);
    while (!atomic_compare_exchange_weak(&replica->handles, &h->next, h)) {
    }
    return h;
}

void replica_free_handles(serve_replica *replica)
{
    serve_handle *h = atomic_exchange(&replica->handles, NULL);
    while (h) {
        serve_handle *next = h->next;
        free(h);
        h = next;
    }
}

serve_call *handles_call_new(const char *endpoint, const serve_request *parent)
{
    serve_request *req = request_new(0, NULL);
    if (!req) return NULL;
    req->target_endpoint = strdup(endpoint);
    req->method = "POST";
    req->path = "";
    req->owns_headers = true;
    if (parent && parent->id) {
        req->owned_id = strdup(parent->id);
        req->id = req->owned_id;
    } else {
        request_id_generate(req->id_buf);
        req->id = req->id_buf;
    }
    req->parent_slot = parent ? parent->slot : UINT32_MAX;
    /* Linked at send, in the server (a process replica's server links its
     * own copy of the parent: handles_set_parent). */
    req->call_parent = (serve_request *)parent;
    if (parent) {
        req->call_depth = parent->call_depth + 1;
        req->callers = malloc(req->call_depth * sizeof *req->callers);
        if (req->callers) {
            /* A process replica's requests know their depth, not the
             * server's backends above them: its server fills those in. */
            if (parent->call_depth && parent->callers)
                memcpy(req->callers, parent->callers, parent->call_depth * sizeof *req->callers);
            else
                memset(req->callers, 0, parent->call_depth * sizeof *req->callers);
            req->callers[parent->call_depth] = parent->backend;
        }
        if (req->call_depth > SERVE_MAX_CALL_DEPTH) {
            req->too_deep = true;
            char what[300];
            snprintf(what, sizeof what, "call to endpoint %s refused: over %d nested calls "
                     "(does a plugin call its own endpoint without end?)", endpoint,
                     SERVE_MAX_CALL_DEPTH);
            request_report_bug(parent, what);
        }
    }
    /* Without a parent (`serve call`, a plugin's own thread) the call is a
     * root, like an HTTP request: depth 0, no callers. */
    if (!req->target_endpoint || !req->id || (parent && !req->callers)) {
        request_release(req);
        return NULL;
    }
    return (serve_call *)req;
}

SERVE_EXPORT serve_call *serve_call_new(serve_handle *handle, const serve_request *parent)
{
    if (!handle) return NULL;
    atomic_fetch_add_explicit(handle->calls, 1, memory_order_relaxed);
    return handles_call_new(handle->endpoint, parent);
}

SERVE_EXPORT int serve_call_take_body(serve_call *call, void *body, size_t len,
                                      void (*free_body)(void *))
{
    serve_request *req = (serve_request *)call;
    if (!req || (!body && len)) {
        if (free_body && body) free_body(body);
        return SERVE_EINVAL;
    }
    if (req->free_owned_body && req->owned_body) req->free_owned_body(req->owned_body);
    req->owned_body = body;
    req->free_owned_body = free_body;
    req->body = body;
    req->body_len = len;
    return SERVE_OK;
}

SERVE_EXPORT int serve_call_set_body(serve_call *call, const void *body, size_t len)
{
    if (!call || (!body && len)) return SERVE_EINVAL;
    void *copy = malloc(len ? len : 1);
    if (!copy) return SERVE_ENOMEM;
    if (len) memcpy(copy, body, len);
    return serve_call_take_body(call, copy, len, free);
}

static int add_pair(char ***array, size_t *count, const char *a, const char *b)
{
    char **grown = realloc(*array, (*count + 1) * 2 * sizeof *grown);
    if (!grown) return SERVE_ENOMEM;
    *array = grown;
    char *x = strdup(a), *y = strdup(b);
    if (!x || !y) {
        free(x);
        free(y);
        return SERVE_ENOMEM;
    }
    grown[2 * *count] = x;
    grown[2 * *count + 1] = y;
    (*count)++;
    return SERVE_OK;
}

SERVE_EXPORT int serve_call_add_query(serve_call *call, const char *key, const char *value)
{
    serve_request *req = (serve_request *)call;
    if (!req || !key || !value) return SERVE_EINVAL;
    return add_pair(&req->query, &req->query_count, key, value);
}

SERVE_EXPORT int serve_call_add_header(serve_call *call, const char *name, const char *value)
{
    serve_request *req = (serve_request *)call;
    if (!req || !name || !value || !*name) return SERVE_EINVAL;
    char **headers = (char **)req->headers;
    int rc = add_pair(&headers, &req->header_count, name, value);
    req->headers = (const char **)headers;
    return rc;
}

/* ---- Calls and their parents ---- */

/* Guards every call_parent / calls_head / call_prev / call_next. Taken
 * twice per call (sent, done) and never around a callback. */
static pthread_mutex_t links_lock = PTHREAD_MUTEX_INITIALIZER;

/* Under links_lock. The call is done with its parent's list for good:
 * one that finished before serve_call_send linked it is never linked. */
static void unlink_locked(serve_request *call)
{
    call->call_unlinked = true;
    serve_request *parent = call->call_parent;
    if (!parent) return;
    if (call->call_prev)
        call->call_prev->call_next = call->call_next;
    else if (parent->calls_head == call)
        parent->calls_head = call->call_next;
    if (call->call_next) call->call_next->call_prev = call->call_prev;
    call->call_prev = call->call_next = NULL;
    call->call_parent = NULL;
}

/* A call leaves its parent's list: done, or never sent. */
static void call_unlink(serve_request *call)
{
    pthread_mutex_lock(&links_lock);
    unlink_locked(call);
    pthread_mutex_unlock(&links_lock);
}

/* The call is in flight: on its parent's list (in the server). `parent`
 * was read before the hand-over: from then on the call's end may clear
 * call->call_parent on another thread. False when the call has already
 * ended (it answered before this ran), and is then not linked. */
static bool call_link(serve_request *call, serve_request *parent)
{
    if (!parent) return false;
    pthread_mutex_lock(&links_lock);
    if (call->call_unlinked) {
        pthread_mutex_unlock(&links_lock);
        return false;
    }
    atomic_store_explicit(&parent->had_calls, true, memory_order_release);
    call->call_prev = NULL;
    call->call_next = parent->calls_head;
    if (parent->calls_head) parent->calls_head->call_prev = call;
    parent->calls_head = call;
    pthread_mutex_unlock(&links_lock);
    return true;
}

void handles_set_parent(serve_request *call, serve_request *parent) { call->call_parent = parent; }

void handles_unlink(serve_request *req)
{
    pthread_mutex_lock(&links_lock);
    unlink_locked(req);
    /* A parent freed before its calls ended: they stay in flight, alone. */
    for (serve_request *c = req->calls_head, *next; c; c = next) {
        next = c->call_next;
        c->call_parent = NULL;
        c->call_prev = c->call_next = NULL;
    }
    req->calls_head = NULL;
    pthread_mutex_unlock(&links_lock);
}

/* Runs the caller's callback with a result made of a status and message. */
static void complete_with_error(serve_request *req, int status, const char *message)
{
    size_t len = 0;
    char *body = json_error_body(message, &len);
    if (access_log_on) access_log_request(req, "handle", NULL, req->target_endpoint, status, len);
    serve_result result = {.status = status, .content_type = "application/json",
                           .body = body ? body : "", .len = body ? len : 0};
    req->call_done(&result, req->call_arg);
    free(body);
}

/* A streamed call: the callback side's lock, so that a cancel and the
 * pieces never reach the caller at once, nor anything after its result. */
static void call_stream_ready(serve_request *req)
{
    stream_origin_lock(req);
    struct evbuffer *buf = evbuffer_new();
    struct stream_look look;
    stream_look(req, buf, &look);
    if (!req->call_completed && atomic_load(&req->state) != REQ_CANCELLED && buf) {
        if (look.bytes) req->call_chunk(evbuffer_pullup(buf, -1), look.bytes, req->call_arg);
        if (look.final) {
            dispatch_disarm(req);
            req->call_completed = true;
            call_unlink(req);
            if (access_log_on)
                access_log_request(req, "handle", NULL, req->target_endpoint, req->status,
                                   stream_bytes(req));
            size_t len = 0;
            char *error = look.failed ? json_error_body(look.fail_message, &len) : NULL;
            serve_result result = {.status = look.failed ? 500 : req->status,
                                   .content_type = error ? "application/json" : req->content_type,
                                   .body = error ? error : "", .len = len,
                                   .headers = req->response_headers,
                                   .header_count = req->response_header_count};
            req->call_done(&result, req->call_arg);
            free(error);
        }
    }
    if (buf) evbuffer_free(buf);
    stream_origin_unlock(req);
    /* The callback took the pieces: they have left the stream's bound. */
    if (!look.final && look.bytes) stream_sent(req, 0);
    if (look.final) {
        request_release(req); /* the execution reference, handed over */
        request_release(req); /* the caller's */
    }
    request_release(req); /* the look's */
}

/* Any thread: the target answered and won the race with the timeout. */
static void deliver_to_caller(serve_request *req)
{
    if (stream_piecewise(req)) {
        stream_deliver_end(req);
        return;
    }
    call_unlink(req);
    dispatch_disarm(req);
    if (access_log_on)
        access_log_request(req, "handle", NULL, req->target_endpoint, req->status, req->response_len);
    serve_result result = {.status = req->status, .content_type = req->content_type,
                           .body = req->response_body ? req->response_body : "",
                           .len = req->response_len, .headers = req->response_headers,
                           .header_count = req->response_header_count};
    req->call_done(&result, req->call_arg);
    request_release(req); /* the execution reference, handed over */
    request_release(req); /* the caller's */
}

/* On dispatch's timer thread: the call timed out. */
static void call_failed(serve_request *req, int status, const char *message)
{
    call_unlink(req);
    complete_with_error(req, status, message);
    request_release(req); /* the caller's */
}

static const struct dispatch_origin call_origin = {.ready = deliver_to_caller,
                                                   .failed = call_failed};

static void cancel_call(serve_request *call);

static int (*forwarder)(serve_request *call);

void handles_set_forwarder(int (*forward)(serve_request *call)) { forwarder = forward; }

void handles_complete_forwarded(serve_request *req, const serve_result *result)
{
    req->call_done(result, req->call_arg);
    request_release(req); /* the caller's */
}

void handles_fail_forwarded(serve_request *req, int status, const char *message)
{
    complete_with_error(req, status, message);
    request_release(req);
}

SERVE_EXPORT int serve_call_send(serve_call *call, serve_call_done_fn done, void *arg)
{
    serve_request *req = (serve_request *)call;
    if (!req || !done) {
        if (req) request_release(req);
        return SERVE_EINVAL;
    }
    req->call_done = done;
    req->call_arg = arg;
    req->received_ns = serve__now_ns();
    if (forwarder) {
        req->call_parent = NULL; /* the server links its own copy */
        return forwarder(req);
    }
    if (req->call_chunk) req->stream_ready = call_stream_ready;
    struct dispatch_error err;
    /* Held across the hand-over: the call may be answered, and its
     * caller's reference dropped, before dispatch_call returns. */
    request_ref(req);
    serve_request *parent = req->call_parent;
    if (dispatch_call(req, &call_origin, &err) != DISPATCH_QUEUED) {
        complete_with_error(req, err.status, err.message);
        request_release(req);
        request_release(req);
        return SERVE_OK;
    }
    /* Linked once routed (a cancel reads what routing wrote). A parent
     * cancelled before the link never saw this call: it goes now. */
    if (call_link(req, parent) && request_abandoned(parent)) cancel_call(req);
    request_release(req);
    return SERVE_OK;
}

SERVE_EXPORT int serve_call_on_chunk(serve_call *call, serve_call_chunk_fn chunk)
{
    serve_request *req = (serve_request *)call;
    if (!req || !chunk) return SERVE_EINVAL;
    req->call_chunk = chunk;
    return SERVE_OK;
}

/* The caller's callback gets 499 (the caller's reference goes with it);
 * the target drops or is told; the call's own calls go the same way. */
static void cancel_call(serve_request *call)
{
    bool streaming;
    if (!request_cancel(call, &streaming)) return; /* its result is on its way */
    dispatch_disarm(call);
    backend_request_cancelled(call); /* the target's replica, and the call's calls */
    if (streaming) stream_cancelled(call);
    if (streaming) stream_origin_lock(call);
    bool run = !call->call_completed;
    call->call_completed = true;
    call_unlink(call);
    if (run) complete_with_error(call, 499, "the call was cancelled");
    if (streaming) stream_origin_unlock(call);
    request_release(call); /* the caller's */
}

void handles_cancel_calls(serve_request *parent)
{
    /* A callback may answer the parent: it stays until the loop is done. */
    request_ref(parent);
    for (;;) {
        pthread_mutex_lock(&links_lock);
        serve_request *call = parent->calls_head;
        if (call) {
            unlink_locked(call);
            request_ref(call);
        }
        pthread_mutex_unlock(&links_lock);
        if (!call) break;
        cancel_call(call);
        request_release(call);
    }
    request_release(parent);
}

SERVE_EXPORT int serve_request_cancel_calls(serve_request *req)
{
    if (!req) return SERVE_EINVAL;
    const struct request_host *host = request_host_get();
    if (host) return host->cancel_calls(req);
    handles_cancel_calls(req);
    return SERVE_OK;
}

SERVE_EXPORT int serve_call_set_shard_key(serve_call *call, const char *key)
{
    return serve_call_add_header(call, "X-Serve-Shard-Key", key);
}

struct serve_future {
    pthread_mutex_t mutex;
    pthread_cond_t ready;
    bool done;
    serve_result result;
    char *content_type;
    void *body;
    struct response_header *headers;
};

static void future_done(const serve_result *r, void *arg)
{
    serve_future *f = arg;
    char *ctype = strdup(r->content_type ? r->content_type : "");
    void *body = malloc(r->len ? r->len : 1);
    struct response_header *headers = calloc(r->header_count + 1, sizeof *headers);
    size_t copied = 0;
    if (body && r->len) memcpy(body, r->body, r->len);
    for (; headers && copied < r->header_count; copied++) {
        headers[copied].name = strdup(r->headers[copied].name);
        headers[copied].value = strdup(r->headers[copied].value);
    }
    pthread_mutex_lock(&f->mutex);
    f->content_type = ctype;
    f->body = body;
    f->headers = headers;
    if (!ctype || !body || !headers) {
        f->result = (serve_result){.status = 500, .content_type = "text/plain",
                                   .body = "out of memory", .len = 13};
    } else {
        f->result = (serve_result){.status = r->status, .content_type = ctype, .body = body,
                                   .len = r->len, .headers = headers, .header_count = copied};
    }
    f->done = true;
    pthread_cond_broadcast(&f->ready);
    pthread_mutex_unlock(&f->mutex);
}

SERVE_EXPORT serve_future *serve_call_send_future(serve_call *call)
{
    serve_future *f = calloc(1, sizeof *f);
    if (!f) {
        if (call) request_release((serve_request *)call);
        return NULL;
    }
    pthread_mutex_init(&f->mutex, NULL);
    pthread_cond_init(&f->ready, NULL);
    if (serve_call_send(call, future_done, f) != SERVE_OK) {
        pthread_mutex_destroy(&f->mutex);
        pthread_cond_destroy(&f->ready);
        free(f);
        return NULL;
    }
    return f;
}

SERVE_EXPORT const serve_result *serve_future_wait(serve_future *f)
{
    if (!f) return NULL;
    pthread_mutex_lock(&f->mutex);
    while (!f->done) pthread_cond_wait(&f->ready, &f->mutex);
    pthread_mutex_unlock(&f->mutex);
    return &f->result;
}

SERVE_EXPORT void serve_future_free(serve_future *f)
{
    if (!f) return;
    serve_future_wait(f);
    for (size_t i = 0; i < f->result.header_count; i++) {
        free(f->headers[i].name);
        free(f->headers[i].value);
    }
    free(f->headers);
    free(f->content_type);
    free(f->body);
    pthread_mutex_destroy(&f->mutex);
    pthread_cond_destroy(&f->ready);
    free(f);
}

SERVE_EXPORT int serve_result_status(const serve_result *r) { return r ? r->status : 0; }

SERVE_EXPORT const char *serve_result_content_type(const serve_result *r)
{
    return r ? r->content_type : NULL;
}

SERVE_EXPORT const void *serve_result_body(const serve_result *r, size_t *len)
{
    if (len) *len = r ? r->len : 0;
    return r ? r->body : NULL;
}

SERVE_EXPORT const char *serve_result_header(const serve_result *r, const char *name)
{
    if (!r || !name) return NULL;
    for (size_t i = 0; i < r->header_count; i++)
        if (strcasecmp(r->headers[i].name, name) == 0) return r->headers[i].value;
    return NULL;
}
