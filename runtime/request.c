/* request.c - request lifetime, the SDK's request accessors and the answer
 * functions (see request.h for the ownership rules). */
#include "request.h"
#include "stream.h"

#include <event2/buffer.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "backend.h"
#include "clock.h"
#include "handles.h"
#include "log.h"
#include "tensor.h"

/* A request is made and freed once per HTTP request, nearly always on the
 * same I/O thread: each thread keeps a few blocks of one size for them, so
 * the common request costs no malloc. A block freed on another thread joins
 * that thread's stack (any block fits any stack), and a thread's blocks are
 * freed when it exits. Sanitizer builds skip the cache, so that a use after
 * free stays visible to them. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define REQUEST_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define REQUEST_CACHE 0
#endif
#endif
#ifndef REQUEST_CACHE
#define REQUEST_CACHE 1
#endif
#define REQUEST_BLOCK 2048u /* the request and its header strings */
#define REQUEST_CACHE_MAX 64

struct request_cache {
    void *blocks[REQUEST_CACHE_MAX];
    int count;
};

static _Thread_local struct request_cache *request_cache;
static pthread_key_t request_cache_key;
static pthread_once_t request_cache_once = PTHREAD_ONCE_INIT;

static void request_cache_free(void *arg)
{
    struct request_cache *cache = arg;
    for (int i = 0; i < cache->count; i++) free(cache->blocks[i]);
    free(cache);
}

static void request_cache_key_create(void) { pthread_key_create(&request_cache_key, request_cache_free); }

static struct request_cache *request_cache_get(void)
{
    if (!REQUEST_CACHE) return NULL;
    if (!request_cache) {
        pthread_once(&request_cache_once, request_cache_key_create);
        request_cache = calloc(1, sizeof *request_cache);
        if (request_cache) pthread_setspecific(request_cache_key, request_cache);
    }
    return request_cache;
}

static void request_block_free(serve_request *req)
{
    struct request_cache *cache = req->pooled ? request_cache_get() : NULL;
    if (cache && cache->count < REQUEST_CACHE_MAX)
        cache->blocks[cache->count++] = req;
    else
        free(req);
}

serve_request *request_new(size_t extra, char **extra_out)
{
    serve_request *req;
    bool pooled = REQUEST_CACHE && sizeof *req + extra <= REQUEST_BLOCK;
    if (pooled) {
        struct request_cache *cache = request_cache_get();
        req = cache && cache->count ? cache->blocks[--cache->count] : malloc(REQUEST_BLOCK);
        if (req) memset(req, 0, sizeof *req);
    } else {
        req = calloc(1, sizeof *req + extra);
    }
    if (!req) return NULL;
    req->pooled = pooled;
    atomic_init(&req->state, REQ_PENDING);
    atomic_init(&req->refs, 1);
    if (extra_out) *extra_out = (char *)(req + 1);
    return req;
}

void request_ref(serve_request *req)
{
    atomic_fetch_add_explicit(&req->refs, 1, memory_order_relaxed);
}

void request_clear_response(serve_request *req)
{
    if (req->free_response_body && req->response_body)
        req->free_response_body(req->response_body);
    req->response_body = NULL;
    req->free_response_body = NULL;
    req->response_len = 0;
    free(req->content_type);
    req->content_type = NULL;
    for (size_t i = 0; i < req->response_header_count; i++) {
        free(req->response_headers[i].name);
        free(req->response_headers[i].value);
    }
    free(req->response_headers);
    req->response_headers = NULL;
    req->response_header_count = 0;
}

void request_release(serve_request *req)
{
    if (atomic_fetch_sub_explicit(&req->refs, 1, memory_order_acq_rel) != 1)
        return;
    request_clear_response(req);
    if (req->body_buf) evbuffer_free(req->body_buf);
    if (req->free_owned_body && req->owned_body) req->free_owned_body(req->owned_body);
    if (req->owns_headers) {
        for (size_t i = 0; i < req->header_count * 2; i++) free((char *)req->headers[i]);
        free(req->headers);
    }
    /* Calls always, parents that made some: the links are another
     * thread's to change until unlinked under their lock. */
    if (req->target_endpoint || atomic_load_explicit(&req->had_calls, memory_order_acquire))
        handles_unlink(req);
    if (req->stream) stream_free(req->stream);
    tensor_set_free(req->tensors);
    free(req->owned_id);
    free(req->callers);
    free(req->target_endpoint);
    free(req->owned_path);
    for (size_t i = 0; i < req->query_count * 2; i++) free(req->query[i]);
    free(req->query);
    if (req->backend) backend_release(req->backend);
    request_block_free(req);
}

static uint32_t id_prefix;
static atomic_ulong id_counter;
static pthread_once_t id_prefix_once = PTHREAD_ONCE_INIT;

/* A random prefix per process keeps ids of restarted servers apart. */
static void choose_id_prefix(void)
{
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, 0) != sizeof r) r = 0x5e7e5e7e;
    id_prefix = r;
}

void request_id_generate(char out[32])
{
    pthread_once(&id_prefix_once, choose_id_prefix);
    unsigned long n = atomic_fetch_add_explicit(&id_counter, 1, memory_order_relaxed);
    static const char hex[] = "0123456789abcdef";
    char *p = out;
    for (int shift = 28; shift >= 0; shift -= 4) *p++ = hex[(id_prefix >> shift) & 15];
    for (int shift = 44; shift >= 0; shift -= 4) *p++ = hex[(n >> shift) & 15];
    *p = '\0';
}

bool request_cancel(serve_request *req, bool *was_streaming)
{
    int expected = REQ_PENDING;
    *was_streaming = false;
    if (atomic_compare_exchange_strong(&req->state, &expected, REQ_CANCELLED)) return true;
    expected = REQ_STREAMING;
    return *was_streaming = atomic_compare_exchange_strong(&req->state, &expected, REQ_CANCELLED);
}

bool request_time_out(serve_request *req)
{
    int expected = REQ_PENDING;
    return atomic_compare_exchange_strong(&req->state, &expected, REQ_TIMED_OUT);
}

char *json_error_body(const char *message, size_t *len)
{
    if (!message) message = "error";
    size_t cap = strlen(message) * 6 + 16;
    char *out = malloc(cap);
    if (!out) return NULL;
    size_t n = (size_t)sprintf(out, "{\"error\": \"");
    for (const unsigned char *p = (const unsigned char *)message; *p; p++) {
        if (*p == '"' || *p == '\\') {
            out[n++] = '\\';
            out[n++] = (char)*p;
        } else if (*p < 0x20) {
            n += (size_t)sprintf(out + n, "\\u%04x", *p);
        } else {
            out[n++] = (char)*p;
        }
    }
    memcpy(out + n, "\"}", 3);
    *len = n + 2;
    return out;
}

/* Stores an answer and settles the race with the timeout. Takes ownership
 * of body in every case. Returns SERVE_OK when this answer won. */
int request_store_answer(serve_request *req, int status, const char *content_type, void *body,
                         size_t len, void (*free_body)(void *))
{
    char *ctype = strdup(content_type ? content_type : "application/octet-stream");
    if (!ctype) {
        if (free_body && body) free_body(body);
        return SERVE_ENOMEM;
    }
    /* The response fields are ours alone until the CAS publishes them: the
     * timeout path never reads them. */
    req->status = status;
    req->content_type = ctype;
    req->response_body = body;
    req->response_len = len;
    req->free_response_body = free_body;
    req->answered_ns = serve__now_ns();
    int expected = REQ_PENDING;
    if (atomic_compare_exchange_strong(&req->state, &expected, REQ_ANSWERED))
        return SERVE_OK;
    request_clear_response(req);
    return SERVE_ETIMEDOUT;
}

bool request_answer_runtime(serve_request *req, int status, const char *message)
{
    size_t len = 0;
    char *body = json_error_body(message, &len);
    if (!body) return false;
    return request_store_answer(req, status, "application/json", body, len, free) == SERVE_OK;
}

static const struct request_host *host;

void request_set_host(const struct request_host *h) { host = h; }

const struct request_host *request_host_get(void) { return host; }

void request_report_bug(const serve_request *req, const char *what)
{
    if (host)
        host->report_bug(req, what);
    else
        backend_report_plugin_bug(req, what);
}

static int respond(serve_request *req, int status, const char *content_type,
                   void *body, size_t len, void (*free_body)(void *))
{
    if (!req || status < 100 || status > 599 || (!body && len)) {
        if (free_body && body) free_body(body);
        return SERVE_EINVAL;
    }
    if (req->answered) {
        request_report_bug(req, "answered the same request twice");
        if (free_body && body) free_body(body);
        return SERVE_EALREADY;
    }
    req->answered = true;
    int rc = request_store_answer(req, status, content_type, body, len, free_body);
    /* A request answered during handle_batch is delivered by the worker
     * once handle_batch returns; a deferred one is delivered now. */
    if (req->deferred) {
        if (host)
            host->deferred_answered(req, rc == SERVE_OK);
        else
            backend_deferred_answered(req, rc == SERVE_OK);
    }
    return rc;
}

SERVE_EXPORT int serve_respond_take(serve_request *req, int status,
                                    const char *content_type, void *body,
                                    size_t len, void (*free_body)(void *))
{
    return respond(req, status, content_type, body, len, free_body);
}

SERVE_EXPORT int serve_respond(serve_request *req, int status,
                               const char *content_type, const void *body,
                               size_t len)
{
    void *copy = NULL;
    if (len) {
        copy = malloc(len);
        if (!copy) return SERVE_ENOMEM;
        memcpy(copy, body, len);
    }
    return respond(req, status, content_type, copy, len, free);
}

SERVE_EXPORT int serve_respond_error(serve_request *req, int status,
                                     const char *message)
{
    size_t len = 0;
    char *body = json_error_body(message, &len);
    if (!body) return SERVE_ENOMEM;
    return respond(req, status, "application/json", body, len, free);
}

SERVE_EXPORT int serve_request_cancelled(const serve_request *req)
{
    if (!req) return 0;
    if (host) return host->cancelled(req);
    int state = atomic_load(&req->state);
    return state == REQ_TIMED_OUT || state == REQ_CANCELLED;
}

SERVE_EXPORT int serve_request_defer(serve_request *req)
{
    if (!req) return SERVE_EINVAL;
    if (!req->in_batch || req->answered) return SERVE_ESTATE;
    if (req->deferred) return SERVE_OK;
    if (host)
        host->defer(req);
    else
        backend_defer(req);
    return SERVE_OK;
}

static bool header_value_valid(const char *s)
{
    for (; *s; s++)
        if (*s == '\r' || *s == '\n') return false;
    return true;
}

SERVE_EXPORT int serve_response_add_header(serve_request *req, const char *name,
                                           const char *value)
{
    static const char *const reserved[] = {"content-length", "content-type",
                                           "transfer-encoding", "connection",
                                           "x-request-id"};
    if (!req || !name || !value || !*name || req->answered) return SERVE_EINVAL;
    for (size_t i = 0; i < sizeof reserved / sizeof *reserved; i++)
        if (strcasecmp(name, reserved[i]) == 0) return SERVE_EINVAL;
    for (const char *p = name; *p; p++)
        if (*p <= ' ' || *p == ':' || *p >= 127) return SERVE_EINVAL;
    if (!header_value_valid(value)) return SERVE_EINVAL;
    struct response_header *h =
        realloc(req->response_headers, (req->response_header_count + 1) * sizeof *h);
    if (!h) return SERVE_ENOMEM;
    req->response_headers = h;
    h += req->response_header_count;
    h->name = strdup(name);
    h->value = strdup(value);
    if (!h->name || !h->value) {
        free(h->name);
        free(h->value);
        return SERVE_ENOMEM;
    }
    req->response_header_count++;
    return SERVE_OK;
}

SERVE_EXPORT const void *serve_request_body(const serve_request *req, size_t *len)
{
    if (len) *len = req ? req->body_len : 0;
    if (!req) return NULL;
    return req->body ? req->body : "";
}

SERVE_EXPORT const char *serve_request_method(const serve_request *req)
{
    return req ? req->method : NULL;
}

SERVE_EXPORT const char *serve_request_path(const serve_request *req)
{
    return req ? req->path : NULL;
}

SERVE_EXPORT const char *serve_request_id(const serve_request *req)
{
    return req ? req->id : NULL;
}

SERVE_EXPORT const char *serve_request_header(const serve_request *req,
                                              const char *name)
{
    if (!req || !name) return NULL;
    for (size_t i = 0; i < req->header_count; i++)
        if (strcasecmp(req->headers[2 * i], name) == 0) return req->headers[2 * i + 1];
    return NULL;
}

SERVE_EXPORT const char *serve_request_query(const serve_request *req,
                                             const char *key)
{
    if (!req || !key) return NULL;
    for (size_t i = 0; i < req->query_count; i++)
        if (strcmp(req->query[2 * i], key) == 0) return req->query[2 * i + 1];
    return NULL;
}

SERVE_EXPORT uint64_t serve_request_time_ns(const serve_request *req, int stage)
{
    if (!req) return 0;
    switch (stage) {
    case SERVE_STAGE_RECEIVED: return req->received_ns;
    case SERVE_STAGE_QUEUED: return req->enqueued_ns;
    case SERVE_STAGE_DISPATCHED: return req->dispatched_ns;
    default: return 0;
    }
}

SERVE_EXPORT const char *serve_strerror(int code)
{
    switch (code) {
    case SERVE_OK: return "success";
    case SERVE_EINVAL: return "invalid argument";
    case SERVE_EALREADY: return "request already answered";
    case SERVE_ENOMEM: return "out of memory";
    case SERVE_ESTATE: return "not allowed in this state";
    case SERVE_ETIMEDOUT: return "request timed out or its client went away; answer dropped";
    case SERVE_EAGAIN: return "stream buffer full: the client reads slower; try again when writable";
    case SERVE_EPROTO: return "the request body is not a tensor body that decodes";
    default: return "unknown error";
    }
}
