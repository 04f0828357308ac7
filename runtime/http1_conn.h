/* http1_conn.h - serve's HTTP/1.1 connection layer: one I/O thread's
 * listening socket and client connections, on libevent's event loop, with
 * llhttp (strict: no lenient flag is ever set) parsing every byte.
 *
 * What it owns, so that the front end above it (http_server.c) only turns
 * a whole request into an answer:
 *   - accepting, with a pause (and one log line) when the process is out of
 *     file descriptors instead of a busy loop;
 *   - framing: every request body is read by its Content-Length or chunked
 *     encoding, whatever the method (HEAD and GET bodies included), so the
 *     next request starts exactly where the body ends;
 *   - keep-alive and pipelining with answers written in request order; a
 *     connection is not read further while `pipeline_depth` answers are
 *     pending or its unsent output is large, so a client that does not read
 *     its answers cannot make the server buffer without bound;
 *   - bounds: head size (431), body size (413), and one budget for every
 *     request body held in memory by the process (503 past it);
 *   - timeouts: the read timeout runs from a request's first byte to its
 *     last, for every request (pipelined ones too); the idle timeout closes a
 *     connection with nothing to read or answer; a client that reads nothing
 *     for the idle timeout while answers wait is closed too;
 *   - the refusals of the protocol itself, as serve's JSON errors:
 *     400 (malformed), 505 (version), 501 (CONNECT, transfer codings other
 *     than chunked), 417 (an Expect other than 100-continue), with
 *     `Connection: close` whenever the framing of what follows may be off;
 *   - HEAD answers with headers only.
 *
 * Threading: every function runs on the layer's own I/O thread, except
 * the counters' readers and http1_body_memory_*. */
#ifndef SERVE_RUNTIME_HTTP1_CONN_H
#define SERVE_RUNTIME_HTTP1_CONN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct evbuffer;
struct response_header;

/* One request on a connection, from its first byte until its answer has
 * been handed over for writing. The front end answers it exactly once with
 * http1_answer (or http1_answer_error). An exchange whose connection has
 * closed is still answered: the answer is then dropped. */
struct http1_exchange;

/* What a front end does with requests. */
struct http1_handler {
    /* The head of a request that sent `Expect: 100-continue` is whole.
     * Returns true when the request would be taken (so that `100 Continue`
     * is sent and the client sends its body); false after answering it
     * (the answer closes the connection: the body is never read). */
    bool (*check_expect)(void *ctx, struct http1_exchange *ex);
    /* A request is whole, body included. */
    void (*on_request)(void *ctx, struct http1_exchange *ex);
    /* The client went away (its connection closed, or it sent EOF) while
     * this request, read whole, had no answer: the front end may cancel
     * its work. The exchange stays valid until answered (http1_answer,
     * which then only frees it). Optional. */
    void (*on_abandon)(void *ctx, struct http1_exchange *ex);
    /* Some of the output of a streamed answer (next in order) has been
     * written to the socket: http1_stream_unsent says what is left.
     * Optional. */
    void (*on_drain)(void *ctx, struct http1_exchange *ex);
};

struct http1_limits {
    size_t max_body;          /* one request's body (413 past it) */
    size_t max_header;        /* request line and headers (431 past it) */
    int idle_timeout_s;
    int read_timeout_s;       /* from a request's first byte to its last */
    size_t max_connections;   /* over it, a connection's request gets 503; 0: none */
    atomic_size_t *open;      /* shared by every thread's layer */
};

struct http1;

/* Serves connections accepted on `listen_fd` (non-blocking; the layer owns
 * it from now on and closes it when freed). */
struct http1 *http1_new(struct event_base *base, int listen_fd, const struct http1_limits *limits,
                        const struct http1_handler *handler, void *ctx);

/* Starts taking connections from the listening socket (http1_new does not:
 * its owner first makes ready what they will be routed to). This thread. */
bool http1_start_accepting(struct http1 *h);

/* Stops accepting; open connections stay. */
void http1_stop_accepting(struct http1 *h);

/* Closes every connection (pending exchanges are left to be answered and
 * dropped) and frees the layer. */
void http1_free(struct http1 *h);

/* Counters since start; any thread. */
size_t http1_read_timeouts(const struct http1 *h);
size_t http1_refused(const struct http1 *h);
/* Connections of this I/O thread open now; any thread. */
size_t http1_open_connections(const struct http1 *h);

/* The request-body budget of the whole process: bytes of request bodies
 * held in memory at once, over all connections and until each request is
 * freed. Set before the first connection. */
void http1_body_memory_set_limit(size_t bytes);
size_t http1_body_memory_in_use(void);
size_t http1_body_memory_limit(void); /* 0: none */

/* ---- The request, for the front end ---- */

const char *http1_method(const struct http1_exchange *ex);       /* "GET", ... */
/* The path of the target (origin form, or absolute form: what follows the
 * authority, "/" when nothing does) and its query (NULL: none). Any other
 * target llhttp takes ("*") is returned as it is, and routes nowhere. */
const char *http1_path(struct http1_exchange *ex, const char **query);
size_t http1_header_count(const struct http1_exchange *ex);
/* The i-th header as sent (names keep their case). */
void http1_header(const struct http1_exchange *ex, size_t i, const char **name, const char **value);
/* The first value of a header by name (case-insensitive), or NULL. */
const char *http1_find_header(const struct http1_exchange *ex, const char *name);
/* The client's address, for logs ("-" when unknown). */
const char *http1_peer(struct http1_exchange *ex);
/* The front end's object for the exchange (its request), for on_abandon. */
void http1_set_owner(struct http1_exchange *ex, void *owner);
void *http1_owner(const struct http1_exchange *ex);
/* The client's X-Request-ID when it is acceptable (1 to 128 printable
 * bytes, no spaces), else a fresh id written into `generated`. */
const char *http1_request_id(const struct http1_exchange *ex, char generated[32]);

/* Takes the body: *len bytes, to be freed with http1_body_free, which also
 * gives its bytes back to the budget. NULL (and 0) for no body. */
void *http1_take_body(struct http1_exchange *ex, size_t *len);
void http1_body_free(void *body);

/* ---- Answering ---- */

struct http1_answer {
    int status;
    const char *content_type;
    const char *request_id;
    const struct response_header *headers; /* extra headers, may be NULL */
    size_t header_count;
    const char *allow;                     /* an Allow header, may be NULL */
    const void *body;
    size_t body_len;
    /* When set, the layer owns `body` from now on and frees it with this
     * once written (zero copy); else the body is copied. */
    void (*free_body)(void *body);
    bool close;                            /* close after this answer */
};

/* Answers the exchange (once). */
void http1_answer(struct http1_exchange *ex, const struct http1_answer *answer);
/* A streamed answer: the head now (Transfer-Encoding: chunked; `head`'s
 * body is ignored), then any number of pieces, each sent as one chunk, then
 * the end: the last chunk, or for a failed stream none, and the connection
 * closes after what was sent (so the client sees the answer is cut). Only
 * for an exchange that http1_can_stream (HTTP/1.1, not HEAD); answers after
 * it on the connection wait their turn as usual. After the connection has
 * gone every call only drops what it is given; http1_stream_end then frees
 * the exchange. */
bool http1_can_stream(const struct http1_exchange *ex);
void http1_stream_begin(struct http1_exchange *ex, const struct http1_answer *head);
/* Sends what `data` holds as one chunk and empties it. */
void http1_stream_write(struct http1_exchange *ex, struct evbuffer *data);
void http1_stream_end(struct http1_exchange *ex, bool failed);
/* Bytes of this exchange's answer held by the layer, not yet written. */
size_t http1_stream_unsent(const struct http1_exchange *ex);

/* Answers {"error": message} as JSON. */
void http1_answer_error(struct http1_exchange *ex, int status, const char *request_id,
                        const char *message, bool close);

#endif
