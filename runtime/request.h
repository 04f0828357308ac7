/* request.h - the runtime side of serve_request: one client request from
 * the moment a front end (HTTP today) creates it until its answer is sent.
 *
 * Ownership is shared through a reference count:
 *   - the origin's reference (the HTTP connection side), dropped once the
 *     origin has sent an answer (the plugin's, a 504, or a 503);
 *   - the execution reference, taken when the request enters a backend queue
 *     and dropped when the execution side is finished with it: handed to the
 *     origin together with the plugin's answer, or dropped when the answer
 *     came too late;
 *   - a batch reference, held by a replica's worker across handle_batch so
 *     the request outlives an asynchronous answer given before it returns.
 *
 * The answer race (plugin answer vs. request timeout) is settled by one
 * compare-and-swap on `state`: whoever moves it off REQ_PENDING answers. */
#ifndef SERVE_RUNTIME_REQUEST_H
#define SERVE_RUNTIME_REQUEST_H

#include <event2/event_struct.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "serve/plugin.h"

struct answer_queue;
struct backend;
struct dispatch_origin;
struct replica;
struct evbuffer;

/* PENDING until one of three wins the answer: the answer (ANSWERED), the
 * request timeout (TIMED_OUT) or the client going away (CANCELLED). */
enum request_state { REQ_PENDING, REQ_ANSWERED, REQ_TIMED_OUT, REQ_CANCELLED, REQ_STREAMING };
/* REQ_STREAMING: the answer has begun as a stream (stream.h). The timeout
 * no longer applies (the client has its head); the client going away still
 * does (STREAMING -> CANCELLED), and the stream's end moves it to ANSWERED. */

struct stream;
struct tensor_set;

struct response_header {
    char *name;
    char *value;
};

struct serve_request {
    serve_request *next;          /* backend queue, then answer queue */
    serve_request *deferred_prev; /* replica's list of deferred requests */
    serve_request *deferred_next;
    atomic_int state;             /* enum request_state */
    atomic_int refs;

    struct backend *backend;      /* referenced; set when routed */
    struct endpoint_metrics *endpoint_metrics; /* HTTP requests: counted here (set by dispatch) */
    struct replica *replica;      /* set when dispatched */
    uint64_t received_ns;
    uint64_t enqueued_ns;
    uint64_t dispatched_ns;       /* handed to handle_batch */
    uint64_t answered_ns;         /* the answer was stored */
    uint32_t batch_size;

    /* Called once with the answer (status and body below) when the plugin
     * or the runtime answered and the origin must send it. Any thread. */
    void (*deliver)(serve_request *req);
    const struct dispatch_origin *dispatch_origin; /* the front end (dispatch.h) */
    /* Where `deliver` puts the answer, when it only pushes the request on
     * an answer queue (HTTP requests: their I/O thread's): a replica then
     * pushes the answers of one batch that go to the same queue as one
     * chain, with one wake-up, instead of calling `deliver` for each.
     * NULL: `deliver` does more (handle calls, shadows). */
    struct answer_queue *answers;
    void *origin;                 /* the front end's own data */
    void *origin_request;         /* e.g. the evhttp request to answer */

    /* A streamed answer (stream.h), once begun; and how its origin takes
     * pieces: called (any thread) when news is pending and the origin was
     * not told yet. NULL: the origin takes the stream whole at the end. */
    struct stream *stream;
    void (*stream_ready)(serve_request *req);

    /* Handle calls in flight for this request (it is their parent), and a
     * call's parent and siblings, linked under handles.c's lock, so that a
     * cancelled request cancels its calls, transitively. NULL when none. */
    serve_request *call_parent;
    serve_request *calls_head, *call_prev, *call_next;
    /* A call that takes the target's stream piece by piece (serve_call_on_chunk). */
    void (*call_chunk)(const void *data, size_t len, void *arg);
    bool call_completed;          /* its callback has run (streamed calls) */
    bool call_unlinked;           /* off its parent's list for good (under handles.c's lock) */
    atomic_bool had_calls;        /* a call was ever linked under it (freeing unlinks) */

    /* Handle calls (handles.c): the caller's callback, and what the call
     * owns instead of an HTTP connection. */
    void (*call_done)(const serve_result *result, void *arg);
    void *call_arg;
    char *target_endpoint;
    char *owned_path;
    char *owned_id;
    void *owned_body;
    void (*free_owned_body)(void *);
    bool owns_headers;            /* headers[] and its strings are malloc'd */
    /* The backends working on this call's ancestors, outermost first
     * (malloc'd; identity only, no references), and whether the target is
     * one of them: such a call borrows its ancestor's concurrency slot, so
     * that a backend calling itself cannot wait on itself for ever. */
    struct backend **callers;
    uint32_t call_depth;          /* 0 for HTTP requests */
    bool reentrant;
    bool too_deep;                /* refused at send: over SERVE_MAX_CALL_DEPTH */
    struct event timeout_event;   /* dispatch's (dispatch.c); used when timeout > 0 */
    bool has_timeout;

    /* What the plugin reads. Strings live in this allocation or in body_buf
     * and stay unchanged until the request is freed. */
    const char *method;
    const char *path;
    /* How much of path is its endpoint's route (set by dispatch): a remote
     * backend forwards what follows to its URL's path. */
    uint32_t route_len;
    const char *id;
    size_t header_count;
    const char **headers;         /* name, value, name, value ... */
    size_t query_count;
    char **query;                 /* decoded key, value, ... (malloc'd) */
    struct evbuffer *body_buf;    /* owned; NULL for an empty body */
    struct tensor_set *tensors;   /* decoded on first use (tensor.h); owned */
    const void *body;
    size_t body_len;

    /* The answer, written by whoever wins the state race. */
    int status;
    char *content_type;           /* malloc'd */
    void *response_body;
    size_t response_len;
    void (*free_response_body)(void *);
    struct response_header *response_headers;
    size_t response_header_count;

    /* Plugin-side flags: touched only by the thread that runs handle_batch
     * and, after serve_request_defer, by the thread that answers. */
    bool in_batch;
    bool deferred;
    bool answered;
    bool pooled;                  /* a block of the per-thread cache (request.c) */
    /* Process replicas: the request's slot in its replica's table (both
     * sides of the channel), and a handle call's parent's slot. */
    uint32_t slot;
    uint32_t parent_slot;
    char id_buf[32];
};

/* Allocates a request with room for `extra` bytes of strings after it
 * (returned in *extra_out). refs starts at 1 (the origin's). */
serve_request *request_new(size_t extra, char **extra_out);
void request_ref(serve_request *req);
void request_release(serve_request *req);

/* Writes a fresh 24-hex-digit request id (NUL-terminated) into out. */
void request_id_generate(char out[32]);

/* The runtime answers for a plugin (a 500 for a missed answer, a 503 on
 * shutdown): the same race as a plugin answer, without the plugin-side
 * double-answer check. Returns true when this answer won. */
bool request_answer_runtime(serve_request *req, int status, const char *message);

/* The client is gone (the front end's call): true when this won the race,
 * so that nothing else answers and the request, if still queued, is never
 * executed. *was_streaming: it had begun a stream (req->stream is then
 * set, and safe to read). */
bool request_cancel(serve_request *req, bool *was_streaming);

/* Nobody waits for the answer any more: timed out, or cancelled. */
static inline bool request_abandoned(serve_request *req)
{
    int state = atomic_load(&req->state);
    return state == REQ_TIMED_OUT || state == REQ_CANCELLED;
}

/* Stores an answer and settles the race with the timeout, without
 * delivering it (the caller does: backend_deferred_answered_many). Takes
 * ownership of body in every case. SERVE_OK when this answer won. */
int request_store_answer(serve_request *req, int status, const char *content_type, void *body,
                         size_t len, void (*free_body)(void *));

/* Moves PENDING to TIMED_OUT; true when the timeout won the race. */
bool request_time_out(serve_request *req);

/* Builds {"error": "<message>"} in a malloc'd buffer. */
char *json_error_body(const char *message, size_t *len);

/* Where the SDK's deferred answers and plugin-bug reports go. In the
 * server, the backend (backend_deferred_answered, backend_report_plugin_bug);
 * in a process replica, the replica host, which sends answers to the
 * server. Set once, before any request exists. */
struct request_host {
    void (*defer)(serve_request *req); /* sets req->deferred */
    void (*deferred_answered)(serve_request *req, bool answer_won);
    void (*report_bug)(const serve_request *req, const char *what);
    bool (*cancelled)(const serve_request *req); /* serve_request_cancelled */
    /* Streams (a process replica sends them to the server). */
    int (*stream_begin)(serve_request *req, int status, const char *content_type);
    int (*stream_write)(serve_request *req, const void *data, size_t len);
    int (*stream_finish)(serve_request *req, const char *fail_message);
    /* serve_request_cancel_calls */
    int (*cancel_calls)(serve_request *req);
};
/* The host in effect (NULL in the server). */
const struct request_host *request_host_get(void);
void request_set_host(const struct request_host *host);

/* A plugin bug about req, reported where request_set_host says. */
void request_report_bug(const serve_request *req, const char *what);

/* Drops the answer's body (calling its free function) and headers. */
void request_clear_response(serve_request *req);

#endif
