/* stream.c - streamed answers (see stream.h) and the SDK's serve_stream_*. */
#include "stream.h"

#include <event2/buffer.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "clock.h"
#include "log.h"

struct stream {
    pthread_mutex_t lock;
    pthread_mutex_t origin_lock; /* recursive (stream_origin_lock) */
    /* Written and not taken by the origin yet (server side). */
    struct evbuffer *pending;
    /* Bytes accepted from the writer, and bytes known to have left the
     * server: their difference is what the bound limits. On the server,
     * drained = written - pending - what the origin holds unsent; in a
     * process replica, what the server last reported. */
    uint64_t written;
    uint64_t drained;
    uint64_t drained_reported; /* server, process replicas: last told */
    bool queued;       /* the origin was told and has not looked yet */
    bool looked;       /* the origin has looked once (the head is out) */
    bool ended;        /* end or fail was called */
    bool final;        /* the end was delivered: the origin's next look is the last */
    bool final_seen;
    bool failed;
    char fail_message[256];
    uint64_t first_byte_ns;
    size_t want;          /* the length of the last write refused */
    bool writer_blocked;  /* server: a process replica's writer waits for a report */
    bool blocked_told;    /* child: the server was told */
    serve_stream_writable_fn writable;
    void *writable_arg;
};

static atomic_size_t bound = STREAM_BUFFER_DEFAULT;

void stream_set_bound(size_t bytes) { atomic_store(&bound, bytes ? bytes : STREAM_BUFFER_DEFAULT); }
size_t stream_bound(void) { return atomic_load_explicit(&bound, memory_order_relaxed); }

static struct stream *stream_new(void)
{
    struct stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    if (!(s->pending = evbuffer_new())) {
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutexattr_t recursive;
    pthread_mutexattr_init(&recursive);
    pthread_mutexattr_settype(&recursive, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&s->origin_lock, &recursive);
    pthread_mutexattr_destroy(&recursive);
    return s;
}

void stream_free(struct stream *s)
{
    if (!s) return;
    evbuffer_free(s->pending);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->origin_lock);
    free(s);
}

void stream_origin_lock(serve_request *req) { pthread_mutex_lock(&req->stream->origin_lock); }
void stream_origin_unlock(serve_request *req) { pthread_mutex_unlock(&req->stream->origin_lock); }

bool stream_attach(serve_request *req)
{
    if (!req->stream) req->stream = stream_new();
    return req->stream != NULL;
}

bool stream_piecewise(const serve_request *req) { return req->stream && req->stream_ready; }

/* Under s->lock: whether a write of len fits. One piece larger than the
 * whole bound goes only into an empty buffer, or it could never go. */
static bool fits(const struct stream *s, size_t len)
{
    uint64_t unsent = s->written - s->drained;
    return unsent == 0 || unsent + len <= stream_bound();
}

/* Under s->lock: room enough to call a waiting writer back: the write it
 * was refused fits now. */
static bool has_room(const struct stream *s) { return fits(s, s->want); }

/* Tells the origin there is news, unless it was told and has not looked. */
static void notify_origin(serve_request *req)
{
    struct stream *s = req->stream;
    pthread_mutex_lock(&s->lock);
    bool tell = !s->queued;
    s->queued = true;
    pthread_mutex_unlock(&s->lock);
    if (!tell) return;
    request_ref(req); /* the origin's look drops it */
    req->stream_ready(req);
}

int stream_begin_local(serve_request *req, int status, const char *content_type)
{
    char *ctype = strdup(content_type ? content_type : "application/octet-stream");
    if (!ctype || !stream_attach(req)) {
        free(ctype);
        return SERVE_ENOMEM;
    }
    req->status = status;
    free(req->content_type);
    req->content_type = ctype;
    int expected = REQ_PENDING;
    if (!atomic_compare_exchange_strong(&req->state, &expected, REQ_STREAMING))
        return SERVE_ETIMEDOUT;
    /* Pieces and the end go to the origin's own deliver, not to an answer
     * queue's chain (backend.c pushes chains only for plain answers). */
    if (req->stream_ready) {
        req->answers = NULL;
        notify_origin(req);
    }
    return SERVE_OK;
}

static void drained_now(serve_request *req);

/* evbuffer's cleanup for a piece handed over (stream_write_local_take). */
static void free_piece(const void *data, size_t len, void *extra)
{
    (void)len;
    union {
        void (*fn)(void *);
        void *ptr;
    } box = {.ptr = extra};
    if (box.fn) box.fn((void *)data);
}

static int write_piece(serve_request *req, const void *data, size_t len, bool bounded,
                       void (*free_data)(void *), bool take)
{
    struct stream *s = req->stream;
    if (request_abandoned(req)) return SERVE_ETIMEDOUT;
    if (len == 0) {
        if (take && free_data) free_data((void *)data);
        return SERVE_OK;
    }
    pthread_mutex_lock(&s->lock);
    if (s->ended) {
        pthread_mutex_unlock(&s->lock);
        return SERVE_ESTATE;
    }
    /* Whole-answer origins take no bound: the body is the answer. */
    if (bounded && req->stream_ready && !fits(s, len)) {
        s->want = len;
        pthread_mutex_unlock(&s->lock);
        return SERVE_EAGAIN;
    }
    union {
        void (*fn)(void *);
        void *ptr;
    } box = {.fn = free_data};
    int added = take ? evbuffer_add_reference(s->pending, data, len, free_piece, box.ptr)
                     : evbuffer_add(s->pending, data, len);
    if (added != 0) {
        pthread_mutex_unlock(&s->lock);
        return SERVE_ENOMEM;
    }
    if (!s->first_byte_ns) s->first_byte_ns = serve__now_ns();
    s->written += len;
    if (!req->stream_ready) {
        /* A whole answer is unbounded, like any answer: what is written
         * counts as gone at once (a process replica, which applies the
         * bound itself, is told as it goes). */
        s->drained = s->written;
        drained_now(req);
        return SERVE_OK;
    }
    pthread_mutex_unlock(&s->lock);
    notify_origin(req);
    return SERVE_OK;
}

int stream_write_local(serve_request *req, const void *data, size_t len, bool bounded)
{
    return write_piece(req, data, len, bounded, NULL, false);
}

int stream_write_local_take(serve_request *req, void *data, size_t len, void (*free_data)(void *))
{
    return write_piece(req, data, len, true, free_data, true);
}

int stream_finish_local(serve_request *req, const char *fail_message)
{
    struct stream *s = req->stream;
    pthread_mutex_lock(&s->lock);
    s->ended = true;
    if (fail_message) {
        s->failed = true;
        snprintf(s->fail_message, sizeof s->fail_message, "%s", fail_message);
    }
    pthread_mutex_unlock(&s->lock);
    if (!req->stream_ready) {
        /* The origin takes it whole: the stream becomes an ordinary answer
         * (a failed one a 500, since no head has gone out). */
        if (fail_message) {
            size_t len = 0;
            char *body = json_error_body(fail_message, &len);
            req->status = 500;
            free(req->content_type);
            req->content_type = strdup("application/json");
            req->response_body = body;
            req->response_len = body ? len : 0;
        } else {
            size_t len = evbuffer_get_length(s->pending);
            void *body = len ? malloc(len) : NULL;
            if (len && !body) return SERVE_ENOMEM;
            evbuffer_remove(s->pending, body, len);
            req->response_body = body;
            req->response_len = len;
        }
        req->free_response_body = free;
    }
    req->answered_ns = serve__now_ns();
    int expected = REQ_STREAMING;
    bool won = atomic_compare_exchange_strong(&req->state, &expected, REQ_ANSWERED);
    bool w = won;
    backend_deferred_answered_many(&req, &w, 1);
    return won ? SERVE_OK : SERVE_ETIMEDOUT;
}

void stream_deliver_end(serve_request *req)
{
    struct stream *s = req->stream;
    pthread_mutex_lock(&s->lock);
    s->final = true;
    bool tell = !s->queued;
    s->queued = true;
    pthread_mutex_unlock(&s->lock);
    /* The execution reference rides along; the look that sees `final`
     * drops it. */
    if (tell) {
        request_ref(req);
        req->stream_ready(req);
    }
}

void stream_look(serve_request *req, struct evbuffer *into, struct stream_look *look)
{
    struct stream *s = req->stream;
    memset(look, 0, sizeof *look);
    pthread_mutex_lock(&s->lock);
    s->queued = false;
    look->first = !s->looked;
    s->looked = true;
    look->bytes = evbuffer_get_length(s->pending);
    if (look->bytes) evbuffer_add_buffer(into, s->pending);
    if (s->final && !s->final_seen) {
        s->final_seen = true;
        look->final = true;
        look->failed = s->failed;
        memcpy(look->fail_message, s->fail_message, sizeof look->fail_message);
    }
    pthread_mutex_unlock(&s->lock);
}

/* Under s->lock, which it releases: what has left the stream changed. */
static void drained_now(serve_request *req)
{
    struct stream *s = req->stream;
    serve_stream_writable_fn fn = NULL;
    void *arg = NULL;
    uint64_t report = 0;
    if (s->writable && has_room(s)) {
        fn = s->writable;
        arg = s->writable_arg;
        s->writable = NULL;
    }
    /* A process replica keeps its own count of what is unsent: told every
     * half bound drained, it never sees more than half a bound too much.
     * While its writer waits it is told of every drain, until nothing is
     * left unsent (the refused piece may only fit an empty buffer); the
     * writer sent all it had before it said it waits, so `written` here is
     * what it counts too. */
    if (s->drained - s->drained_reported >= stream_bound() / 2 ||
        (s->writer_blocked && s->drained > s->drained_reported)) {
        report = s->drained;
        s->drained_reported = report;
    }
    if (s->drained_reported == s->written) s->writer_blocked = false; /* it knows all */
    pthread_mutex_unlock(&s->lock);
    if (fn) fn(req, arg);
    if (report) backend_stream_drained(req, report);
}

void stream_sent(serve_request *req, size_t unsent)
{
    struct stream *s = req->stream;
    pthread_mutex_lock(&s->lock);
    s->drained = s->written - evbuffer_get_length(s->pending) - unsent;
    drained_now(req);
}

void stream_writer_blocked(serve_request *req)
{
    struct stream *s = req->stream;
    if (!s) return;
    pthread_mutex_lock(&s->lock);
    /* Every drain is reported from now until nothing is left unsent,
     * starting with what drained already. */
    s->writer_blocked = true;
    drained_now(req);
}

void stream_cancelled(serve_request *req)
{
    struct stream *s = req->stream;
    if (!s) return;
    pthread_mutex_lock(&s->lock);
    serve_stream_writable_fn fn = s->writable;
    void *arg = s->writable_arg;
    s->writable = NULL;
    pthread_mutex_unlock(&s->lock);
    if (fn) fn(req, arg);
}

uint64_t stream_bytes(const serve_request *req)
{
    struct stream *s = req->stream;
    if (!s) return 0;
    pthread_mutex_lock(&s->lock);
    uint64_t n = s->written;
    pthread_mutex_unlock(&s->lock);
    return n;
}

uint64_t stream_first_byte_ns(const serve_request *req)
{
    struct stream *s = req->stream;
    if (!s) return 0;
    pthread_mutex_lock(&s->lock);
    uint64_t t = s->first_byte_ns;
    pthread_mutex_unlock(&s->lock);
    return t;
}

void stream_drained_update(serve_request *req, uint64_t drained)
{
    struct stream *s = req->stream;
    if (!s) return;
    serve_stream_writable_fn fn = NULL;
    void *arg = NULL;
    pthread_mutex_lock(&s->lock);
    /* A report for the slot's previous stream can arrive late: it cannot
     * have drained more than this one wrote. */
    if (drained > s->drained && drained <= s->written) s->drained = drained;
    s->blocked_told = false;
    if (s->writable && has_room(s)) {
        fn = s->writable;
        arg = s->writable_arg;
        s->writable = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    if (fn) fn(req, arg);
}

int stream_reserve(serve_request *req, size_t len, bool *tell_blocked)
{
    struct stream *s = req->stream;
    pthread_mutex_lock(&s->lock);
    int rc = SERVE_ESTATE;
    *tell_blocked = false;
    if (!s->ended) {
        rc = fits(s, len) ? SERVE_OK : SERVE_EAGAIN;
        if (rc == SERVE_OK) {
            s->written += len;
            if (!s->first_byte_ns) s->first_byte_ns = serve__now_ns();
        } else {
            s->want = len;
            *tell_blocked = !s->blocked_told;
            s->blocked_told = true;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* ---- The SDK ---- */

SERVE_EXPORT int serve_stream_begin(serve_request *req, int status, const char *content_type)
{
    if (!req || status < 100 || status > 599) return SERVE_EINVAL;
    if (req->answered || req->stream) return SERVE_EALREADY;
    /* deferred first: a deferred request's in_batch is its worker's to
     * clear, maybe at this moment, on another thread. */
    if (!req->deferred && !req->in_batch) return SERVE_ESTATE;
    if (!req->deferred) {
        int rc = serve_request_defer(req);
        if (rc != SERVE_OK) return rc;
    }
    req->answered = true; /* a later serve_respond is a second answer */
    const struct request_host *host = request_host_get();
    int rc = host ? host->stream_begin(req, status, content_type)
                  : stream_begin_local(req, status, content_type);
    if (rc == SERVE_ETIMEDOUT && !host) {
        /* Nobody waits: the request is finished here. */
        bool won = false;
        backend_deferred_answered_many(&req, &won, 1);
    } else if (rc == SERVE_ENOMEM) {
        req->answered = false; /* it may still be answered otherwise */
    }
    return rc;
}

SERVE_EXPORT int serve_stream_write(serve_request *req, const void *data, size_t len)
{
    if (!req || (!data && len)) return SERVE_EINVAL;
    if (!req->stream) return SERVE_ESTATE;
    if (serve_request_cancelled(req)) return SERVE_ETIMEDOUT;
    const struct request_host *host = request_host_get();
    return host ? host->stream_write(req, data, len) : stream_write_local(req, data, len, true);
}

SERVE_EXPORT int serve_stream_write_take(serve_request *req, void *data, size_t len,
                                         void (*free_data)(void *))
{
    if (!req || (!data && len)) return SERVE_EINVAL;
    if (!req->stream) return SERVE_ESTATE;
    if (serve_request_cancelled(req)) return SERVE_ETIMEDOUT;
    const struct request_host *host = request_host_get();
    if (!host) return stream_write_local_take(req, data, len, free_data);
    /* A process replica copies the piece into the channel anyway. */
    int rc = host->stream_write(req, data, len);
    if (rc == SERVE_OK && free_data) free_data(data);
    return rc;
}

SERVE_EXPORT int serve_stream_event(serve_request *req, const char *event, const char *data)
{
    if (!req || !data) return SERVE_EINVAL;
    if (event && strpbrk(event, "\r\n")) return SERVE_EINVAL;
    size_t cap = strlen(data) * 7 + (event ? strlen(event) : 0) + 32; /* each \n: a 7-byte line */
    char small[512];
    char *out = cap <= sizeof small ? small : malloc(cap);
    if (!out) return SERVE_ENOMEM;
    size_t n = 0;
    if (event) n += (size_t)sprintf(out, "event: %s\n", event);
    /* One data: line per line of data (a CR LF or CR ends a line too). */
    const char *p = data;
    for (;;) {
        size_t line = strcspn(p, "\r\n");
        memcpy(out + n, "data: ", 6);
        memcpy(out + n + 6, p, line);
        n += 6 + line;
        out[n++] = '\n';
        p += line;
        if (!*p) break;
        if (p[0] == '\r' && p[1] == '\n') p++;
        p++;
        if (!*p) break;
    }
    out[n++] = '\n';
    int rc = serve_stream_write(req, out, n);
    if (out != small) free(out);
    return rc;
}

SERVE_EXPORT int serve_stream_on_writable(serve_request *req, serve_stream_writable_fn fn, void *arg)
{
    if (!req || !fn) return SERVE_EINVAL;
    struct stream *s = req->stream;
    if (!s) return SERVE_ESTATE;
    pthread_mutex_lock(&s->lock);
    if (s->ended) {
        pthread_mutex_unlock(&s->lock);
        return SERVE_ESTATE;
    }
    bool now = has_room(s) || serve_request_cancelled(req);
    if (!now) {
        s->writable = fn;
        s->writable_arg = arg;
    }
    pthread_mutex_unlock(&s->lock);
    /* Room may have come between the refused write and this call. */
    if (now) fn(req, arg);
    return SERVE_OK;
}

static int finish(serve_request *req, const char *fail_message)
{
    if (!req) return SERVE_EINVAL;
    struct stream *s = req->stream;
    if (!s) return SERVE_ESTATE;
    pthread_mutex_lock(&s->lock);
    bool ended = s->ended;
    s->ended = true;      /* no write after this */
    s->writable = NULL;   /* nor anyone to tell of room */
    pthread_mutex_unlock(&s->lock);
    if (ended) {
        request_report_bug(req, "ended the same stream twice");
        return SERVE_EALREADY;
    }
    const struct request_host *host = request_host_get();
    return host ? host->stream_finish(req, fail_message) : stream_finish_local(req, fail_message);
}

SERVE_EXPORT int serve_stream_end(serve_request *req) { return finish(req, NULL); }

SERVE_EXPORT int serve_stream_fail(serve_request *req, const char *message)
{
    return finish(req, message ? message : "the plugin failed the stream");
}
