/* replica_remote.c - replicas that are another server: a remote backend
 * (`--remote URL[,URL...]`) forwards each request it is given over pooled
 * keep-alive HTTP/1.1 connections and answers with what comes back.
 *
 * Each replica is one event loop thread with its own connections; the
 * backend's limits apply as to any kind: a replica holds at most
 * max-concurrent-queries requests, each on a connection of its own (HTTP/1.1
 * without pipelining: a request whose answer is slow never holds up
 * another). run_batch only hands requests over (it may run on an I/O
 * thread: the backend's direct hand-over for max batch 1), so the path is
 * I/O thread -> this loop -> the origin's answer queue, the same number of
 * hops as a local plugin.
 *
 * What is sent twice, and what not: a request whose connection failed
 * before any of its bytes was written (a refused connect, a pooled
 * connection found closed) is tried again on the next URL, each URL once
 * at most. A request that may have reached the remote is never sent again:
 * its caller gets 502. Answers are parsed by llhttp (strict), the parser
 * the server side uses; a chunked answer is passed on as a stream, piece
 * by piece, with the stream's backpressure; any other is passed on whole. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/thread.h>
#include <llhttp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend.h"
#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "remote_url.h"
#include "replica_kind.h"

/* Idle pooled connections are closed after this, well before the 60 s a
 * serve node (and most servers) keep an idle connection: a request is then
 * hardly ever written to a connection its server is closing. */
#define IDLE_CLOSE_NS (20ull * 1000000000ull)
/* A URL whose connect failed is skipped by new requests for this long
 * (unless every URL is in the same state). */
#define URL_BACKOFF_NS (500ull * 1000000ull)
/* An answer that is not streamed is held whole; past this it is refused. */
#define ANSWER_MAX (256u << 20)
#define READ_CHUNK 65536
/* A pooled connection idle for longer is checked before reuse. */
#define PEEK_AFTER_NS (1000000ull)
/* A connect that takes longer fails (the request was not sent: next URL). */
#define CONNECT_TIMEOUT_S 5

struct remote_target {
    struct remote_url url;
    struct sockaddr_storage addr;
    socklen_t addr_len;
};

/* What a stream's writable callback holds: it may run after its replica
 * stopped (a stream outlives it, failed by the backend), so it points at
 * this, which lives as long as the group, and not at the replica. */
struct remote_waker {
    pthread_mutex_t lock;
    struct remote_replica *rr; /* NULL once the replica stopped */
    struct remote_waker *next;
};

struct remote_group {
    struct remote_target *targets;
    size_t count;
    char *name; /* the backend's */
    pthread_mutex_t lock;
    struct remote_waker *wakers; /* under lock; freed with the group */
};

struct conn;

struct header {
    char *name, *value;
};

/* One request on its way. Linked in the replica's `calls` (under its lock)
 * from the hand-over to the answer. */
struct call {
    struct call *prev, *next;
    struct call *next_incoming;
    serve_request *req;
    struct conn *conn;      /* NULL while waiting for the loop */
    size_t target;          /* the URL it goes to */
    unsigned tried;         /* how many URLs it was tried on */
    bool cancelled;         /* under the lock: its client left or it timed out */
    bool streaming;         /* its answer goes on as a stream */
    bool head_only;         /* a HEAD request: the answer has no body */
    uint64_t started_ns;
    int status;
    char *content_type;
    struct header *headers;
    size_t header_count, header_cap;
    struct evbuffer *body;  /* the whole answer, or pieces the stream refused */
    bool unprocessed;       /* the remote refused it unprocessed (a draining serve node) */
    bool fresh_conn;        /* its next try opens a connection (not from the pool) */
    bool paused;            /* the stream is full: reading waits */
    bool ended;             /* the whole answer was read while paused */
    bool keep_conn;         /* ... and its connection may be reused */
};

/* Who may touch a connection (its state is read and written under the
 * replica's lock): the loop; nobody (it is pooled); or a thread that took
 * it from the pool in run_batch and is writing a request on it. */
enum conn_owner { CONN_LOOP, CONN_POOLED, CONN_SENDER };

struct conn {
    struct remote_replica *rr;
    struct conn *next_idle;
    enum conn_owner owner;   /* under rr->lock */
    bool read_deferred;      /* under rr->lock: readable while a sender wrote */
    int send_errno;          /* a sender's write failed (0: no) */
    struct conn *next_handoff;
    size_t target;
    int fd;
    bool connected;
    bool wrote_any;         /* a byte of the current request left */
    struct event *on_read, *on_write;
    struct evbuffer *out;
    llhttp_t parser;
    struct call *call;      /* NULL when idle */
    uint64_t idle_since_ns;
    /* Header being read (llhttp hands names and values in pieces). */
    struct evbuffer *field, *value;
    bool message_done;
    bool finished;          /* the call was finished under llhttp (nobody waits) */
    size_t head_bytes;      /* of the answer's header names and values */
    char error[160];        /* why a callback refused the answer */
};

struct remote_replica {
    struct replica_base *base;
    struct remote_group *group;
    struct remote_waker *waker;
    struct event_base *loop;
    struct event *wake;
    struct event *tick;     /* idle closes */
    pthread_t thread;
    pthread_mutex_t lock;
    struct call *calls;     /* under lock */
    struct call *incoming_head, *incoming_tail; /* handed over, not started (under lock) */
    struct conn *handoffs;  /* under lock: connections a sender gives back to the loop */
    bool stopping;          /* under lock */
    bool cancels_pending;   /* under lock */
    bool resume_pending;    /* under lock: a paused stream may have room */
    struct conn **paused;   /* resume_streams' scratch (loop thread) */
    uint64_t log_second_ns; /* log_failure's (loop thread) */
    unsigned long log_suppressed;
    size_t paused_cap;
    uint64_t stop_deadline_ns;
    struct conn **idle;     /* per target: idle connections (loop thread only) */
    atomic_size_t next_target; /* round robin over the URLs; run_batch runs on many threads */
    _Atomic uint64_t *backoff_until; /* per target; read by sending threads */
    llhttp_settings_t settings;
};

static void conn_close(struct conn *c);
static void take_handoffs(struct remote_replica *rr);
static void call_start(struct remote_replica *rr, struct call *call);
static void call_finish_error(struct remote_replica *rr, struct call *call, int status,
                              const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* ---- calls ---- */

static void call_free(struct call *call)
{
    free(call->content_type);
    for (size_t i = 0; i < call->header_count; i++) {
        free(call->headers[i].name);
        free(call->headers[i].value);
    }
    free(call->headers);
    if (call->body) evbuffer_free(call->body);
    free(call);
}

/* Takes the call off the list: nothing can cancel it any more. true when
 * it was still there (the caller then answers it). */
static bool call_unlink(struct remote_replica *rr, struct call *call)
{
    pthread_mutex_lock(&rr->lock);
    bool linked = call->prev || call->next || rr->calls == call;
    if (linked) {
        if (call->prev) call->prev->next = call->next;
        else rr->calls = call->next;
        if (call->next) call->next->prev = call->prev;
        call->prev = call->next = NULL;
    }
    pthread_mutex_unlock(&rr->lock);
    return linked;
}

static void count_answer(struct remote_replica *rr, struct call *call, int status)
{
    struct backend_metrics *m = rr->base->metrics;
    if (status >= 100 && status <= 599)
        atomic_fetch_add_explicit(&m->remote_by_status[status - 100], 1, memory_order_relaxed);
    uint64_t took = serve__now_ns() - call->started_ns;
    histogram_observe(&m->remote_seconds, took);
    backend_replica_batch_ran(rr->base, 1, took);
}

static void call_detach_conn(struct call *call)
{
    if (call->conn) call->conn->call = NULL;
    call->conn = NULL;
}

/* A failed request, in the log: the first of each second with its
 * request id, then how many more that second had (a dead remote under
 * load must not flood the log). Loop thread. */
static void log_failure(struct remote_replica *rr, const struct call *call, const char *msg)
{
    uint64_t now = serve__now_ns();
    if (now - rr->log_second_ns >= 1000000000ull) {
        if (rr->log_suppressed)
            LOG_WARN("backend=%s replica=%d: %lu more remote request(s) failed in that second",
                     rr->group->name, rr->base->index, rr->log_suppressed);
        rr->log_second_ns = now;
        rr->log_suppressed = 0;
        LOG_WARN("backend=%s replica=%d: request %s failed: %s", rr->group->name, rr->base->index,
                 call->req->id, msg);
    } else {
        rr->log_suppressed++;
    }
}

static void call_finish_error(struct remote_replica *rr, struct call *call, int status,
                              const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    call_detach_conn(call);
    if (call_unlink(rr, call)) {
        if (!call->streaming) count_answer(rr, call, status);
        if (status != 499) log_failure(rr, call, msg);
        if (call->streaming)
            serve_stream_fail(call->req, msg);
        else
            serve_respond_error(call->req, status, msg);
    }
    call_free(call);
}

/* Forgets what was read of an answer, before the call goes elsewhere. */
static void call_reset_answer(struct call *call)
{
    free(call->content_type);
    call->content_type = NULL;
    for (size_t i = 0; i < call->header_count; i++) {
        free(call->headers[i].name);
        free(call->headers[i].value);
    }
    call->header_count = 0;
    call->status = 0;
    call->unprocessed = false;
    evbuffer_drain(call->body, evbuffer_get_length(call->body));
}

/* The connection failed. Before any byte of the request left, the call
 * goes to the next URL it was not tried on; otherwise it fails. */
static void call_conn_failed(struct remote_replica *rr, struct call *call, bool unsent,
                             const char *why)
{
    struct remote_group *g = rr->group;
    call_detach_conn(call);
    bool cancelled;
    pthread_mutex_lock(&rr->lock);
    cancelled = call->cancelled;
    pthread_mutex_unlock(&rr->lock);
    /* Each URL once, and one more try: with one URL (a Service, a
     * balancer) a new connection reaches another node. */
    if (unsent && !cancelled && call->tried < g->count + 1) {
        call->target = (call->target + 1) % g->count;
        call_start(rr, call);
        return;
    }
    call_finish_error(rr, call, 502, "remote backend %s unreachable: %s", g->name, why);
}

/* ---- the answer, as llhttp reads it ---- */

static struct conn *conn_of(llhttp_t *p) { return p->data; }

/* The most an answer's headers may hold, as the server's --max-header. */
#define HEAD_MAX 65536

static int header_piece(llhttp_t *p, struct evbuffer *into, const char *at, size_t len)
{
    struct conn *c = conn_of(p);
    c->head_bytes += len;
    if (c->head_bytes > HEAD_MAX) {
        snprintf(c->error, sizeof c->error, "headers over %d bytes", HEAD_MAX);
        return -1;
    }
    return evbuffer_add(into, at, len) == 0 ? 0 : -1;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    return header_piece(p, conn_of(p)->field, at, len);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    return header_piece(p, conn_of(p)->value, at, len);
}

static char *take_string(struct evbuffer *b)
{
    size_t len = evbuffer_get_length(b);
    char *s = malloc(len + 1);
    if (!s) return NULL;
    evbuffer_remove(b, s, len);
    s[len] = '\0';
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t')) s[--len] = '\0';
    return s;
}

/* Hop-by-hop and framing headers, and those serve sets itself. */
static bool header_is_own(const char *name)
{
    static const char *const own[] = {"Connection", "Keep-Alive", "Transfer-Encoding",
                                      "Content-Length", "Content-Type", "X-Request-ID",
                                      "TE", "Trailer", "Upgrade", "Proxy-Connection",
                                      "Proxy-Authenticate", "Date", "Server"};
    for (size_t i = 0; i < sizeof own / sizeof *own; i++)
        if (strcasecmp(name, own[i]) == 0) return true;
    return false;
}

static int on_header_value_complete(llhttp_t *p)
{
    struct conn *c = conn_of(p);
    struct call *call = c->call;
    char *name = take_string(c->field);
    char *value = take_string(c->value);
    if (!name || !value || !call) goto drop;
    if (strcasecmp(name, "Content-Type") == 0) {
        free(call->content_type);
        call->content_type = value;
        free(name);
        return 0;
    }
    if (header_is_own(name)) goto drop;
    if (strcasecmp(name, "X-Serve-Unprocessed") == 0) call->unprocessed = true;
    if (call->header_count == call->header_cap) {
        size_t cap = call->header_cap ? 2 * call->header_cap : 8;
        struct header *grown = realloc(call->headers, cap * sizeof *grown);
        if (!grown) goto drop;
        call->headers = grown;
        call->header_cap = cap;
    }
    call->headers[call->header_count++] = (struct header){name, value};
    return 0;
drop:
    free(name);
    free(value);
    return 0;
}

static void add_headers(struct call *call)
{
    for (size_t i = 0; i < call->header_count; i++)
        serve_response_add_header(call->req, call->headers[i].name, call->headers[i].value);
}

static void stream_writable(serve_request *req, void *arg);

static int on_headers_complete(llhttp_t *p)
{
    struct conn *c = conn_of(p);
    struct call *call = c->call;
    if (!call) return 0;
    c->head_bytes = 0;
    int status = llhttp_get_status_code(p);
    if (status < 100 || status > 599) {
        snprintf(c->error, sizeof c->error, "status %d", status);
        return -1;
    }
    if (status < 200) { /* an interim answer: the real one follows */
        call_reset_answer(call);
        return 0;
    }
    call->status = status;
    /* A chunked answer goes on as it comes, anything else whole. */
    if ((p->flags & F_CHUNKED) && !call->head_only) {
        add_headers(call);
        int rc = serve_stream_begin(call->req, call->status, call->content_type);
        if (rc == SERVE_ETIMEDOUT) {
            /* Nobody waits any more, and the request is finished: stop. */
            call_detach_conn(call);
            call_unlink(c->rr, call);
            call_free(call);
            c->finished = true;
            return -1;
        }
        if (rc != SERVE_OK) {
            snprintf(c->error, sizeof c->error, "cannot begin its stream: %s", serve_strerror(rc));
            return -1;
        }
        call->streaming = true;
        count_answer(c->rr, call, call->status); /* a stream is timed to its head */
    }
    return call->head_only ? 1 : 0; /* 1: no body follows (HEAD) */
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = conn_of(p);
    struct call *call = c->call;
    if (!call) return 0;
    if (!call->streaming) {
        if (evbuffer_get_length(call->body) + len > ANSWER_MAX) {
            snprintf(c->error, sizeof c->error, "answer over %u MiB", ANSWER_MAX >> 20);
            return -1;
        }
        return evbuffer_add(call->body, at, len) == 0 ? 0 : -1;
    }
    if (!call->paused) {
        int rc = serve_stream_write(call->req, at, len);
        if (rc == SERVE_OK || rc == SERVE_ETIMEDOUT) return 0; /* gone: end it anyway */
        if (rc != SERVE_EAGAIN) {
            snprintf(c->error, sizeof c->error, "stream write failed: %s", serve_strerror(rc));
            return -1;
        }
        call->paused = true;
    }
    /* Held until the stream has room; reading waits meanwhile. */
    return evbuffer_add(call->body, at, len) == 0 ? 0 : -1;
}

static int on_message_complete(llhttp_t *p)
{
    struct conn *c = conn_of(p);
    if (c->call && c->call->status < 200) return 0;
    c->message_done = true;
    return HPE_PAUSED; /* the rest of the read, if any, is not ours */
}

/* ---- connections ---- */

static void conn_free(struct conn *c)
{
    if (c->on_read) event_free(c->on_read);
    if (c->on_write) event_free(c->on_write);
    if (c->out) evbuffer_free(c->out);
    if (c->field) evbuffer_free(c->field);
    if (c->value) evbuffer_free(c->value);
    if (c->fd >= 0) close(c->fd);
    free(c);
}

/* Off the idle list, if there. */
/* Out of the pool, if there: the loop's. Under rr->lock. */
static void conn_unpool_locked(struct conn *c)
{
    if (c->owner == CONN_POOLED)
        for (struct conn **link = &c->rr->idle[c->target]; *link; link = &(*link)->next_idle)
            if (*link == c) {
                *link = c->next_idle;
                c->next_idle = NULL;
                break;
            }
    c->owner = CONN_LOOP;
}

static void conn_unidle(struct conn *c)
{
    pthread_mutex_lock(&c->rr->lock);
    conn_unpool_locked(c);
    pthread_mutex_unlock(&c->rr->lock);
}

static void conn_close(struct conn *c)
{
    conn_unidle(c);
    if (c->call) c->call->conn = NULL;
    conn_free(c);
}

static void conn_make_idle(struct conn *c)
{
    struct remote_replica *rr = c->rr;
    event_add(c->on_read, NULL); /* a close (or junk) while idle ends it */
    pthread_mutex_lock(&rr->lock);
    c->call = NULL;
    c->idle_since_ns = serve__now_ns();
    c->owner = CONN_POOLED;
    c->next_idle = rr->idle[c->target];
    rr->idle[c->target] = c;
    pthread_mutex_unlock(&rr->lock);
}

/* The whole answer is in: pass it on. */
static void call_complete(struct remote_replica *rr, struct call *call)
{
    call_detach_conn(call);
    if (call_unlink(rr, call)) {
        if (!call->streaming) count_answer(rr, call, call->status);
        if (call->streaming) {
            serve_stream_end(call->req);
        } else {
            add_headers(call);
            size_t len = evbuffer_get_length(call->body);
            void *body = len ? malloc(len) : NULL;
            if (len && !body) {
                serve_respond_error(call->req, 500, "out of memory for the remote's answer");
            } else {
                if (len) evbuffer_remove(call->body, body, len);
                serve_respond_take(call->req, call->status, call->content_type, body, len, free);
            }
        }
    }
    call_free(call);
}

static void conn_read(struct conn *c);


/* A stream had room again (any thread): the loop goes on reading. */
static void stream_writable(serve_request *req, void *arg)
{
    (void)req;
    struct remote_waker *w = arg;
    pthread_mutex_lock(&w->lock);
    struct remote_replica *rr = w->rr;
    if (rr) {
        pthread_mutex_lock(&rr->lock);
        bool wake = !rr->resume_pending;
        rr->resume_pending = true;
        pthread_mutex_unlock(&rr->lock);
        if (wake) event_active(rr->wake, EV_READ, 0);
    }
    pthread_mutex_unlock(&w->lock);
}

/* Loop thread: writes what the stream refused, then reads on. */
static bool flush_paused(struct conn *c)
{
    struct call *call = c->call;
    while (evbuffer_get_length(call->body)) {
        struct evbuffer_iovec v;
        evbuffer_peek(call->body, -1, NULL, &v, 1);
        int rc = serve_stream_write(call->req, v.iov_base, v.iov_len);
        if (rc == SERVE_EAGAIN) {
            event_del(c->on_read); /* level-triggered: it would fire on and on */
            serve_stream_on_writable(call->req, stream_writable, c->rr->waker);
            return false;
        }
        evbuffer_drain(call->body, v.iov_len);
        if (rc != SERVE_OK) evbuffer_drain(call->body, evbuffer_get_length(call->body));
    }
    call->paused = false;
    event_add(c->on_read, NULL);
    return true;
}

static void answer_failed(struct conn *c, const char *why)
{
    struct remote_replica *rr = c->rr;
    struct call *call = c->call;
    char reason[sizeof c->error];
    snprintf(reason, sizeof reason, "%s", why); /* why may be c's */
    conn_close(c);
    if (call)
        call_finish_error(rr, call, 502, "remote backend %s answered garbage: %s", rr->group->name,
                          reason);
}

/* The answer is whole and passed on: the connection goes back to the
 * pool, or closes. */
static void message_done(struct conn *c, bool keep)
{
    struct remote_replica *rr = c->rr;
    struct call *call = c->call;
    if (call && call->status == 503 && call->unprocessed && !call->streaming &&
        call->tried < rr->group->count + 1) {
        /* A serve node that drains refused it before routing it: not run
         * there, so it goes elsewhere, on a new connection (behind a
         * Service or balancer, one that reaches another node). */
        conn_close(c);
        call_reset_answer(call);
        call->fresh_conn = true; /* a pooled one may go to the same node */
        call_conn_failed(rr, call, true, "the remote is draining");
        return;
    }
    c->call = NULL;
    if (call) call_complete(rr, call);
    if (keep) {
        llhttp_init(&c->parser, HTTP_RESPONSE, &rr->settings);
        c->parser.data = c;
        conn_make_idle(c);
    } else {
        conn_close(c);
    }
}

/* After a read: what llhttp made of it. */
static void conn_parsed(struct conn *c, llhttp_errno_t rc, bool eof)
{
    struct remote_replica *rr = c->rr;
    struct call *call = c->call;
    if (c->message_done) {
        c->message_done = false;
        /* Reused only when the request went out whole: an early answer
         * (a 413 on a large body) leaves the rest unsent, and the next
         * request must not follow it on the same connection. */
        bool keep = llhttp_should_keep_alive(&c->parser) && !eof &&
                    evbuffer_get_length(c->out) == 0;
        if (rc == HPE_PAUSED) llhttp_resume(&c->parser);
        if (call && call->paused) { /* the stream takes the rest first */
            call->ended = true;
            call->keep_conn = keep;
            if (flush_paused(c)) message_done(c, keep);
            return;
        }
        message_done(c, keep);
        return;
    }
    if (c->finished) { /* the request was finished under llhttp */
        c->call = NULL;
        conn_close(c);
        return;
    }
    if (rc != HPE_OK) {
        const char *reason = llhttp_get_error_reason(&c->parser);
        answer_failed(c, c->error[0] ? c->error : reason ? reason : llhttp_errno_name(rc));
        return;
    }
    if (eof) {
        conn_close(c);
        if (call)
            call_finish_error(rr, call, 502,
                              "remote backend %s unreachable: the connection closed before the "
                              "whole answer",
                              rr->group->name);
    }
}

static void conn_read(struct conn *c)
{
    char buf[READ_CHUNK];
    for (;;) {
        if (c->call && c->call->paused) { /* the stream's room first */
            if (!flush_paused(c)) return;
            if (c->call->ended) {
                message_done(c, c->call->keep_conn);
                return;
            }
        }
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        struct call *call = c->call;
        if (!call) { /* idle: the remote closed, or sent what nobody asked */
            conn_close(c);
            return;
        }
        if (n <= 0) {
            bool nothing = llhttp_get_type(&c->parser) == HTTP_RESPONSE &&
                           c->parser.status_code == 0 && evbuffer_get_length(call->body) == 0;
            if (nothing && !c->wrote_any) { /* a pooled connection, closed before our bytes */
                struct remote_replica *rr = c->rr;
                conn_close(c);
                call_conn_failed(rr, call, true, "connection closed");
                return;
            }
            if (nothing) {
                struct remote_replica *rr = c->rr;
                const char *why = n < 0 ? strerror(errno) : "connection closed";
                char reason[200];
                snprintf(reason, sizeof reason, "%s after the request was sent (not retried)", why);
                conn_close(c);
                call_finish_error(rr, call, 502, "remote backend %s unreachable: %s",
                                  rr->group->name, reason);
                return;
            }
            llhttp_errno_t rc = n < 0 ? HPE_OK : llhttp_finish(&c->parser);
            conn_parsed(c, rc, true);
            return;
        }
        llhttp_errno_t rc = llhttp_execute(&c->parser, buf, (size_t)n);
        bool done = c->message_done;
        if (done && rc == HPE_PAUSED && llhttp_get_error_pos(&c->parser) != buf + n) {
            /* bytes past the answer: the connection is not reusable */
            c->message_done = true;
            llhttp_resume(&c->parser);
            c->parser.flags &= ~F_CONNECTION_KEEP_ALIVE;
            c->parser.flags |= F_CONNECTION_CLOSE;
        }
        conn_parsed(c, rc, false);
        if (done || rc != HPE_OK) return; /* c may be gone or idle */
    }
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    struct remote_replica *rr = c->rr;
    pthread_mutex_lock(&rr->lock);
    if (c->owner == CONN_SENDER) {
        /* The answer (or a close) came before its sender was done: the
         * sender hands the connection back, and the loop reads then. */
        c->read_deferred = true;
        event_del(c->on_read);
        pthread_mutex_unlock(&rr->lock);
        return;
    }
    conn_unpool_locked(c); /* a pooled one: a close, or junk, so conn_read closes it */
    pthread_mutex_unlock(&rr->lock);
    conn_read(c);
}

static void conn_write(struct conn *c)
{
    while (evbuffer_get_length(c->out)) {
        int n = evbuffer_write(c->out, c->fd);
        if (n > 0) {
            c->wrote_any = true;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            event_add(c->on_write, NULL);
            return;
        }
        if (n < 0 && errno == EINTR) continue;
        struct remote_replica *rr = c->rr;
        struct call *call = c->call;
        bool unsent = !c->wrote_any;
        char why[200];
        snprintf(why, sizeof why, "%s%s", strerror(errno), unsent ? "" : " while sending the request");
        conn_close(c);
        if (call) call_conn_failed(rr, call, unsent, why);
        return;
    }
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    if (!c->connected) {
        int error = 0;
        socklen_t len = sizeof error;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &len);
        if (!error && (what & EV_TIMEOUT)) error = ETIMEDOUT;
        if (error) {
            struct remote_replica *rr = c->rr;
            struct call *call = c->call;
            atomic_store_explicit(&rr->backoff_until[c->target], serve__now_ns() + URL_BACKOFF_NS,
                                  memory_order_relaxed);
            char why[200];
            snprintf(why, sizeof why, "connect to %s failed: %s",
                     rr->group->targets[c->target].url.host_header, strerror(error));
            conn_close(c);
            if (call) call_conn_failed(rr, call, true, why);
            return;
        }
        c->connected = true;
    }
    conn_write(c);
}

static struct conn *conn_open(struct remote_replica *rr, size_t target, char *why, size_t whylen)
{
    const struct remote_target *t = &rr->group->targets[target];
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    c->rr = rr;
    c->target = target;
    c->fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    c->out = evbuffer_new();
    c->field = evbuffer_new();
    c->value = evbuffer_new();
    if (c->fd < 0 || !c->out || !c->field || !c->value) {
        snprintf(why, whylen, "cannot open a socket: %s", strerror(errno));
        conn_free(c);
        return NULL;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->on_read = event_new(rr->loop, c->fd, EV_READ | EV_PERSIST, on_readable, c);
    c->on_write = event_new(rr->loop, c->fd, EV_WRITE, on_writable, c);
    if (!c->on_read || !c->on_write) {
        snprintf(why, whylen, "out of memory");
        conn_free(c);
        return NULL;
    }
    llhttp_init(&c->parser, HTTP_RESPONSE, &rr->settings);
    c->parser.data = c;
    if (connect(c->fd, (const struct sockaddr *)&t->addr, t->addr_len) == 0) {
        c->connected = true;
    } else if (errno != EINPROGRESS) {
        atomic_store_explicit(&rr->backoff_until[target], serve__now_ns() + URL_BACKOFF_NS,
                              memory_order_relaxed);
        snprintf(why, whylen, "connect to %s failed: %s", t->url.host_header, strerror(errno));
        conn_free(c);
        return NULL;
    }
    event_add(c->on_read, NULL);
    return c;
}

/* ---- sending ---- */

/* Request headers that are the connection's, not the request's. */
static bool request_header_is_hop(const char *name)
{
    static const char *const hop[] = {"Host", "Connection", "Keep-Alive", "Content-Length",
                                      "Transfer-Encoding", "TE", "Trailer", "Upgrade",
                                      "Proxy-Connection", "Expect", "X-Request-ID"};
    for (size_t i = 0; i < sizeof hop / sizeof *hop; i++)
        if (strcasecmp(name, hop[i]) == 0) return true;
    return false;
}

/* A header a handle call added goes on only when it is one HTTP allows. */
static bool header_sendable(const char *name, const char *value)
{
    if (!*name) return false;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p <= ' ' || *p >= 127 || strchr("()<>@,;:\\\"/[]?={}", *p)) return false;
    for (const unsigned char *p = (const unsigned char *)value; *p; p++)
        if ((*p < ' ' && *p != '\t') || *p == 127) return false;
    return true;
}

/* The request, into c->out. false, with why, when it cannot be sent. */
static bool write_request(struct conn *c, struct call *call, const char **why)
{
    const serve_request *req = call->req;
    const struct remote_target *t = &c->rr->group->targets[c->target];
    struct evbuffer *out = c->out;
    char path[8192];
    const char *suffix = req->path ? req->path + req->route_len : "";
    if (!remote_target_path(&t->url, suffix, path, sizeof path, why)) return false;
    evbuffer_add_printf(out, "%s %s", req->method, path);
    for (size_t i = 0; i < req->query_count; i++) {
        char *k = evhttp_uriencode(req->query[2 * i], -1, 0);
        char *v = evhttp_uriencode(req->query[2 * i + 1], -1, 0);
        if (k && v) evbuffer_add_printf(out, "%c%s=%s", i ? '&' : '?', k, v);
        free(k);
        free(v);
    }
    evbuffer_add_printf(out, " HTTP/1.1\r\nHost: %s\r\nX-Request-ID: %s\r\n", t->url.host_header,
                        req->id);
    for (size_t i = 0; i < req->header_count; i++) {
        const char *name = req->headers[2 * i], *value = req->headers[2 * i + 1];
        if (!request_header_is_hop(name) && header_sendable(name, value))
            evbuffer_add_printf(out, "%s: %s\r\n", name, value);
    }
    evbuffer_add_printf(out, "Content-Length: %zu\r\n\r\n", req->body_len);
    if (req->body_len) evbuffer_add(out, req->body, req->body_len);
    return true;
}

/* A URL for a call's next try: its own if not in backoff, else the next
 * one that is not (or its own when all are). */
static size_t pick_target(struct remote_replica *rr, struct call *call)
{
    size_t n = rr->group->count;
    uint64_t now = serve__now_ns();
    for (size_t k = 0; call->tried < n && k < n - call->tried; k++) {
        size_t t = (call->target + k) % n;
        if (atomic_load_explicit(&rr->backoff_until[t], memory_order_relaxed) <= now) return t;
    }
    return call->target;
}

/* An idle connection to target that is still open, or NULL. One idle for
 * a while is looked at first: a close its server sent may wait unread
 * (this loop had not run since), and a request written to it would be
 * lost without a retry. */
static struct conn *pooled_conn(struct remote_replica *rr, size_t target)
{
    uint64_t now = serve__now_ns();
    for (;;) {
        pthread_mutex_lock(&rr->lock);
        struct conn *c = rr->idle[target];
        if (c) {
            rr->idle[target] = c->next_idle;
            c->next_idle = NULL;
            c->owner = CONN_LOOP;
        }
        pthread_mutex_unlock(&rr->lock);
        if (!c) break;
        if (now - c->idle_since_ns < PEEK_AFTER_NS) return c;
        char byte;
        ssize_t n = recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return c;
        conn_free(c); /* closed, or sent what nobody asked for */
    }
    return NULL;
}

static void call_start(struct remote_replica *rr, struct call *call)
{
    call->target = pick_target(rr, call);
    call->tried++;
    struct conn *c = call->fresh_conn ? NULL : pooled_conn(rr, call->target);
    call->fresh_conn = false;
    if (!c) {
        char why[300];
        c = conn_open(rr, call->target, why, sizeof why);
        if (!c) {
            call_conn_failed(rr, call, true, why);
            return;
        }
    }
    c->call = call;
    c->wrote_any = false;
    call->conn = c;
    evbuffer_drain(c->out, evbuffer_get_length(c->out));
    const char *why = NULL;
    if (!write_request(c, call, &why)) {
        evbuffer_drain(c->out, evbuffer_get_length(c->out));
        c->call = NULL;
        call->conn = NULL;
        conn_make_idle(c);
        call_finish_error(rr, call, 400, "not forwarded to remote backend %s: %s",
                          rr->group->name, why);
        return;
    }
    if (c->connected) {
        conn_write(c);
    } else {
        struct timeval limit = {CONNECT_TIMEOUT_S, 0};
        event_add(c->on_write, &limit);
    }
}

/* ---- the loop ---- */

static void handle_cancels(struct remote_replica *rr)
{
    for (;;) {
        struct call *found = NULL;
        pthread_mutex_lock(&rr->lock);
        for (struct call *call = rr->calls; call; call = call->next)
            if (call->cancelled && call->conn && call->conn->owner == CONN_LOOP) {
                found = call; /* (one a sender still writes is handed back first) */
                break;
            }
        if (!found) rr->cancels_pending = false;
        pthread_mutex_unlock(&rr->lock);
        if (!found) return;
        /* An HTTP/1.1 request cannot be called back but by closing its
         * connection; the remote sees its client gone, as serve would. */
        conn_close(found->conn);
        call_finish_error(rr, found, 499, "request cancelled");
    }
}

static bool stop_now(struct remote_replica *rr)
{
    pthread_mutex_lock(&rr->lock);
    bool stop = rr->stopping && (!rr->calls || serve__now_ns() >= rr->stop_deadline_ns);
    pthread_mutex_unlock(&rr->lock);
    return stop;
}

/* Connections whose stream was full read on, if it has room now. Only
 * connections with a call are looked at: idle ones have nothing paused. */
static void resume_streams(struct remote_replica *rr)
{
    size_t n = 0;
    pthread_mutex_lock(&rr->lock);
    for (struct call *call = rr->calls; call; call = call->next)
        if (call->paused && call->conn) {
            if (n == rr->paused_cap) {
                size_t cap = n ? 2 * n : 16;
                struct conn **grown = realloc(rr->paused, cap * sizeof *grown);
                if (!grown) break; /* the others wait for their next writable */
                rr->paused = grown;
                rr->paused_cap = cap;
            }
            rr->paused[n++] = call->conn;
        }
    pthread_mutex_unlock(&rr->lock);
    /* Only this thread frees connections: those listed are alive. */
    for (size_t i = 0; i < n; i++) conn_read(rr->paused[i]);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct remote_replica *rr = arg;
    pthread_mutex_lock(&rr->lock);
    struct call *incoming = rr->incoming_head;
    rr->incoming_head = rr->incoming_tail = NULL;
    bool cancels = rr->cancels_pending;
    bool resume = rr->resume_pending;
    rr->resume_pending = false;
    bool handoffs = rr->handoffs != NULL;
    pthread_mutex_unlock(&rr->lock);
    if (handoffs) take_handoffs(rr);
    if (resume) resume_streams(rr);
    while (incoming) {
        struct call *call = incoming;
        incoming = call->next_incoming;
        call->next_incoming = NULL;
        pthread_mutex_lock(&rr->lock);
        /* A cancel before the call was linked found nothing: seen here. */
        bool cancelled = call->cancelled || request_abandoned(call->req);
        pthread_mutex_unlock(&rr->lock);
        if (cancelled)
            call_finish_error(rr, call, 499, "request cancelled");
        else
            call_start(rr, call);
    }
    if (cancels) handle_cancels(rr);
    if (stop_now(rr)) event_base_loopbreak(rr->loop);
}

/* Once a second: pooled connections idle for too long are closed, and a
 * stop past its grace ends the loop. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct remote_replica *rr = arg;
    uint64_t now = serve__now_ns();
    struct conn *expired = NULL;
    pthread_mutex_lock(&rr->lock);
    for (size_t t = 0; t < rr->group->count; t++) {
        struct conn **link = &rr->idle[t];
        while (*link) {
            struct conn *c = *link;
            if (now - c->idle_since_ns > IDLE_CLOSE_NS) {
                *link = c->next_idle;
                c->owner = CONN_LOOP;
                c->next_idle = expired;
                expired = c;
            } else {
                link = &c->next_idle;
            }
        }
    }
    pthread_mutex_unlock(&rr->lock);
    while (expired) {
        struct conn *c = expired;
        expired = c->next_idle;
        conn_free(c);
    }
    if (stop_now(rr)) event_base_loopbreak(rr->loop);
}

static void *remote_main(void *arg)
{
    struct remote_replica *rr = arg;
    event_base_dispatch(rr->loop);
    return NULL;
}

/* ---- the kind ---- */

static void targets_free(struct remote_target *targets, size_t count)
{
    for (size_t i = 0; targets && i < count; i++) {
        struct remote_url *u = &targets[i].url;
        free(u->text);
        free(u->host);
        free(u->path);
        free(u->host_header);
    }
    free(targets);
}

static bool remote_open(const struct backend_spec *spec, struct replica_group *group, char *err,
                        size_t errlen)
{
    struct remote_url *urls;
    size_t count;
    if (!remote_urls_parse(spec->remote, &urls, &count, err, errlen)) return false;
    struct remote_group *g = calloc(1, sizeof *g);
    struct remote_target *targets = calloc(count, sizeof *targets);
    char *label = malloc(strlen(spec->remote) + 8);
    char *name = strdup(spec->name);
    /* The URLs move into targets, one by one. */
    for (size_t i = 0; targets && i < count; i++) {
        targets[i].url = urls[i];
        memset(&urls[i], 0, sizeof urls[i]);
    }
    remote_urls_free(urls, count);
    if (!g || !targets || !label || !name) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < count; i++) {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
        struct addrinfo *found = NULL;
        char port[8];
        snprintf(port, sizeof port, "%u", targets[i].url.port);
        int rc = getaddrinfo(targets[i].url.host, port, &hints, &found);
        if (rc != 0 || !found) {
            snprintf(err, errlen, "remote URL %s: cannot resolve %s: %s", targets[i].url.text,
                     targets[i].url.host, rc ? gai_strerror(rc) : "no address");
            if (found) freeaddrinfo(found);
            goto fail;
        }
        memcpy(&targets[i].addr, found->ai_addr, found->ai_addrlen);
        targets[i].addr_len = found->ai_addrlen;
        freeaddrinfo(found);
    }
    g->targets = targets;
    g->count = count;
    g->name = name;
    pthread_mutex_init(&g->lock, NULL);
    sprintf(label, "remote %s", spec->remote);
    group->data = g;
    group->label = label;
    group->can_reconfigure = false;
    return true;
fail:
    targets_free(targets, count);
    free(g);
    free(label);
    free(name);
    return false;
}

static void remote_close(struct replica_group *group)
{
    struct remote_group *g = group->data;
    if (g) {
        /* No request is alive any more, so no stream calls a waker. */
        while (g->wakers) {
            struct remote_waker *w = g->wakers;
            g->wakers = w->next;
            pthread_mutex_destroy(&w->lock);
            free(w);
        }
        pthread_mutex_destroy(&g->lock);
        targets_free(g->targets, g->count);
        free(g->name);
        free(g);
    }
    free((char *)group->label);
    group->data = NULL;
}

static void enable_libevent_threads(void) { evthread_use_pthreads(); }

static void replica_free(struct remote_replica *rr)
{
    /* A stream's writable callback may come later: it finds no replica. */
    pthread_mutex_lock(&rr->waker->lock);
    rr->waker->rr = NULL;
    pthread_mutex_unlock(&rr->waker->lock);
    if (rr->wake) event_free(rr->wake);
    if (rr->tick) event_free(rr->tick);
    if (rr->loop) event_base_free(rr->loop);
    free(rr->idle);
    free(rr->paused);
    free(rr->backoff_until);
    pthread_mutex_destroy(&rr->lock);
    free(rr);
}

static bool remote_start(struct replica_base *r, char *err, size_t errlen)
{
    struct remote_replica *rr = calloc(1, sizeof *rr);
    if (!rr) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    pthread_mutex_init(&rr->lock, NULL);
    rr->base = r;
    rr->group = r->group->data;
    atomic_init(&rr->next_target, (size_t)r->index);
    rr->waker = calloc(1, sizeof *rr->waker);
    if (!rr->waker) {
        snprintf(err, errlen, "out of memory");
        pthread_mutex_destroy(&rr->lock);
        free(rr);
        return false;
    }
    pthread_mutex_init(&rr->waker->lock, NULL);
    rr->waker->rr = rr;
    pthread_mutex_lock(&rr->group->lock);
    rr->waker->next = rr->group->wakers;
    rr->group->wakers = rr->waker;
    pthread_mutex_unlock(&rr->group->lock);
    rr->idle = calloc(rr->group->count, sizeof *rr->idle);
    rr->backoff_until = calloc(rr->group->count, sizeof *rr->backoff_until);
    /* Other threads wake this loop (event_active): libevent must be set up
     * for threads before the base exists, whoever made the first base. */
    static pthread_once_t threads_once = PTHREAD_ONCE_INIT;
    pthread_once(&threads_once, enable_libevent_threads);
    rr->loop = event_base_new();
    if (rr->loop) {
        rr->wake = event_new(rr->loop, -1, EV_PERSIST, on_wake, rr);
        rr->tick = event_new(rr->loop, -1, EV_PERSIST, on_tick, rr);
    }
    if (!rr->idle || !rr->backoff_until || !rr->wake || !rr->tick) {
        snprintf(err, errlen, "remote backend %s: out of memory", r->spec->name);
        replica_free(rr);
        return false;
    }
    llhttp_settings_init(&rr->settings);
    rr->settings.on_header_field = on_header_field;
    rr->settings.on_header_value = on_header_value;
    rr->settings.on_header_value_complete = on_header_value_complete;
    rr->settings.on_headers_complete = on_headers_complete;
    rr->settings.on_body = on_body;
    rr->settings.on_message_complete = on_message_complete;
    struct timeval second = {1, 0};
    event_add(rr->tick, &second);
    /* The metrics of a remote backend have remote series too. */
    atomic_store(&r->metrics->remote, true);
    if (pthread_create(&rr->thread, NULL, remote_main, rr) != 0) {
        snprintf(err, errlen, "remote backend %s: cannot start a thread", r->spec->name);
        replica_free(rr);
        return false;
    }
    r->data = rr;
    return true;
}

/* The sending thread's part: with a pooled connection to the call's URL
 * that was used within PEEK_AFTER_NS (so not one its server may be
 * closing), writes the request on it here, and the loop, which watches
 * the connection, reads the answer: no wake-up of the loop on the way
 * out. What this cannot finish (a partial write, a failed one, an answer
 * that came while it wrote) it hands back to the loop. false: not taken
 * (no such connection, a stop, a path to refuse): the loop's to send. */
static bool send_here(struct remote_replica *rr, struct call *call)
{
    uint64_t now = serve__now_ns();
    struct conn *c = NULL;
    pthread_mutex_lock(&rr->lock);
    if (!rr->stopping && !call->cancelled) {
        size_t t = pick_target(rr, call);
        c = rr->idle[t];
        if (c && now - c->idle_since_ns < PEEK_AFTER_NS) {
            rr->idle[t] = c->next_idle;
            c->next_idle = NULL;
            c->owner = CONN_SENDER;
            c->call = call;
            c->wrote_any = false;
            c->send_errno = 0;
            call->conn = c;
            call->target = t;
            call->tried = 1;
        } else {
            c = NULL;
        }
    }
    pthread_mutex_unlock(&rr->lock);
    if (!c) return false;
    evbuffer_drain(c->out, evbuffer_get_length(c->out));
    const char *why = NULL;
    bool built = write_request(c, call, &why);
    while (built && evbuffer_get_length(c->out)) {
        int n = evbuffer_write(c->out, c->fd);
        if (n > 0) {
            c->wrote_any = true;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            if (!(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))) c->send_errno = n < 0 ? errno : EPIPE;
            break;
        }
    }
    pthread_mutex_lock(&rr->lock);
    if (!built) { /* back to the pool untouched; the loop refuses the path */
        evbuffer_drain(c->out, evbuffer_get_length(c->out));
        c->call = NULL;
        call->conn = NULL;
        call->tried = 0;
        c->owner = CONN_POOLED;
        c->next_idle = rr->idle[c->target];
        rr->idle[c->target] = c;
        pthread_mutex_unlock(&rr->lock);
        return false;
    }
    c->owner = CONN_LOOP;
    bool back = c->read_deferred || c->send_errno || evbuffer_get_length(c->out) || call->cancelled;
    bool wake = false;
    if (back) {
        c->next_handoff = rr->handoffs;
        wake = rr->handoffs == NULL && rr->incoming_head == NULL;
        rr->handoffs = c;
        if (call->cancelled) rr->cancels_pending = true;
    }
    pthread_mutex_unlock(&rr->lock);
    if (wake) event_active(rr->wake, EV_READ, 0);
    return true;
}

/* Loop thread: connections their senders handed back. */
static void take_handoffs(struct remote_replica *rr)
{
    pthread_mutex_lock(&rr->lock);
    struct conn *list = rr->handoffs;
    rr->handoffs = NULL;
    pthread_mutex_unlock(&rr->lock);
    while (list) {
        struct conn *c = list;
        list = c->next_handoff;
        c->next_handoff = NULL;
        pthread_mutex_lock(&rr->lock);
        bool read = c->read_deferred;
        c->read_deferred = false;
        pthread_mutex_unlock(&rr->lock);
        if (c->send_errno) {
            struct call *call = c->call;
            bool unsent = !c->wrote_any;
            char why[200];
            snprintf(why, sizeof why, "%s%s", strerror(c->send_errno),
                     unsent ? "" : " while sending the request");
            conn_close(c);
            if (call) call_conn_failed(rr, call, unsent, why);
            continue;
        }
        if (evbuffer_get_length(c->out)) event_add(c->on_write, NULL); /* the rest, when it fits */
        if (read) {
            event_add(c->on_read, NULL);
            conn_read(c);
        }
    }
}

/* Any thread (a worker, or an I/O thread handing over): defers each
 * request and sends it from here where a pooled connection allows, or
 * hands it to the loop, with one wake-up for the batch. */
static int remote_run_batch(struct replica_base *r, serve_request **reqs, size_t n)
{
    struct remote_replica *rr = r->data;
    if (n == 0) return 0;
    struct call *first = NULL, *last = NULL;
    uint64_t now = serve__now_ns();
    for (size_t i = 0; i < n; i++) {
        struct call *call = calloc(1, sizeof *call);
        if (call) call->body = evbuffer_new();
        if (!call || !call->body) {
            if (call) free(call);
            serve_respond_error(reqs[i], 500, "out of memory");
            continue;
        }
        serve_request_defer(reqs[i]);
        call->req = reqs[i];
        call->target = atomic_fetch_add_explicit(&rr->next_target, 1, memory_order_relaxed) %
                       rr->group->count;
        call->head_only = strcmp(reqs[i]->method, "HEAD") == 0;
        call->started_ns = now;
        if (last) last->next_incoming = call;
        else first = call;
        last = call;
    }
    if (!first) return 0;
    pthread_mutex_lock(&rr->lock);
    for (struct call *call = first; call; call = call->next_incoming) {
        call->next = rr->calls;
        if (rr->calls) rr->calls->prev = call;
        rr->calls = call;
    }
    pthread_mutex_unlock(&rr->lock);
    /* Each request this thread can send on a pooled connection goes out
     * from here; the rest is the loop's. */
    struct call *left = NULL, *left_tail = NULL;
    for (struct call *call = first, *next; call; call = next) {
        next = call->next_incoming;
        call->next_incoming = NULL;
        if (send_here(rr, call)) continue;
        if (left_tail) left_tail->next_incoming = call;
        else left = call;
        left_tail = call;
    }
    if (!left) return 0;
    first = left;
    last = left_tail;
    pthread_mutex_lock(&rr->lock);
    bool wake = rr->incoming_head == NULL;
    if (rr->incoming_tail) rr->incoming_tail->next_incoming = first;
    else rr->incoming_head = first;
    rr->incoming_tail = last;
    pthread_mutex_unlock(&rr->lock);
    if (wake) event_active(rr->wake, EV_READ, 0);
    return 0;
}

/* Requests go out as they come: the replica can always take more (the
 * backend's concurrency limit is what bounds it). */
static bool remote_idle(struct replica_base *r)
{
    (void)r;
    return true;
}

static void remote_cancelled(struct replica_base *r, serve_request *req)
{
    struct remote_replica *rr = r->data;
    if (!rr) return;
    bool wake = false;
    pthread_mutex_lock(&rr->lock);
    for (struct call *call = rr->calls; call; call = call->next)
        if (call->req == req) {
            call->cancelled = true;
            wake = !rr->cancels_pending;
            rr->cancels_pending = true;
            break;
        }
    pthread_mutex_unlock(&rr->lock);
    if (wake) event_active(rr->wake, EV_READ, 0);
}

/* Control thread, after the worker ended: what is in flight may finish
 * within the grace every kind has; then the connections close, and the
 * backend answers what is left (503). */
static void remote_stop(struct replica_base *r)
{
    struct remote_replica *rr = r->data;
    pthread_mutex_lock(&rr->lock);
    rr->stopping = true;
    rr->stop_deadline_ns = serve__now_ns() + REPLICA_STOP_STEPS_MS * 1000000ull;
    pthread_mutex_unlock(&rr->lock);
    event_active(rr->wake, EV_READ, 0);
    pthread_join(rr->thread, NULL);
    /* Left: unlinked without an answer (the backend gives it). */
    for (struct call *call = rr->calls, *next; call; call = next) {
        next = call->next;
        if (call->conn) {
            call->conn->call = NULL;
            conn_close(call->conn);
        }
        call_free(call);
    }
    for (size_t t = 0; t < rr->group->count; t++)
        while (rr->idle[t]) {
            struct conn *c = rr->idle[t];
            rr->idle[t] = c->next_idle;
            conn_free(c);
        }
    replica_free(rr);
    r->data = NULL;
}

const struct replica_kind replica_kind_remote = {
    .name = "remote",
    .open = remote_open,
    .close = remote_close,
    .start = remote_start,
    .run_batch = remote_run_batch,
    .idle = remote_idle,
    .cancelled = remote_cancelled,
    .stop = remote_stop,
};
