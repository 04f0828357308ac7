/* stream.h - a streamed answer: what a plugin writes piece by piece
 * (serve_stream_* in the SDK) on its way to the request's origin.
 *
 * The stream sits between two sides that never wait for each other:
 *   - the writer (a plugin thread; for a process replica, the server's
 *     monitor thread relaying what the child wrote) appends to `pending`
 *     and tells the origin there is news, at most once until the origin
 *     has looked (the `queued` flag), so that a burst of writes costs the
 *     origin one wake-up;
 *   - the origin (an HTTP I/O thread; a handle call's chunk callback)
 *     takes what is pending, sends it, and reports how much it still holds
 *     unsent (stream_sent), which may make the stream writable again.
 * What is written and not yet sent is bounded (--stream-buffer): a write
 * that would pass the bound is refused (SERVE_EAGAIN), never queued, so a
 * slow client costs at most the bound, and never blocks the writer.
 *
 * An origin that cannot take pieces (an HTTP/1.0 client, a HEAD request, a
 * handle call without a chunk callback: req->stream_ready is NULL) gets
 * the stream whole, as one ordinary answer at the end; no bound applies
 * then, as none applies to an ordinary answer.
 *
 * References: each time the origin is told, it gets a reference of its
 * own (dropped once it has looked). The end of a stream is the request's
 * answer, delivered as any answer (backend_deferred_answered, then
 * req->deliver); an origin that streams turns that delivery into
 * stream_deliver_end, and the look that sees `final` consumes the
 * execution reference as an ordinary answer's delivery would. */
#ifndef SERVE_RUNTIME_STREAM_H
#define SERVE_RUNTIME_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "request.h"

struct evbuffer;

#define STREAM_BUFFER_DEFAULT (256u * 1024)

/* The bound of every stream's buffer (serve start --stream-buffer). Set
 * once before the first stream. */
void stream_set_bound(size_t bytes);
size_t stream_bound(void);

/* The server's side of a stream (thread replicas' plugins, and the monitor
 * relaying a child's stream). begin: PENDING -> STREAMING; SERVE_ETIMEDOUT
 * when the request was cancelled or timed out first. The status, content
 * type and headers are the request's response fields. */
int stream_begin_local(serve_request *req, int status, const char *content_type);
/* Appends; `bounded`: refuse with SERVE_EAGAIN what passes the bound. */
int stream_write_local(serve_request *req, const void *data, size_t len, bool bounded);
/* The same without a copy: on SERVE_OK the stream owns data and frees it
 * with free_data (NULL: nothing to free) once it is sent or dropped. */
int stream_write_local_take(serve_request *req, void *data, size_t len,
                            void (*free_data)(void *));
/* Ends (fail_message NULL) or fails the stream, and delivers it as the
 * request's answer (backend_deferred_answered_many). SERVE_ETIMEDOUT when
 * nobody waits any more. */
int stream_finish_local(serve_request *req, const char *fail_message);

/* What one look of the origin found. */
struct stream_look {
    size_t bytes;              /* moved into the origin's buffer */
    bool first;                /* the first look: the head goes first */
    bool final;                /* the stream ended: the last look */
    bool failed;               /* ...with an error (message below) */
    char fail_message[256];
};

/* The origin's look (its thread): moves what is pending into `into`. */
void stream_look(serve_request *req, struct evbuffer *into, struct stream_look *look);

/* The origin holds `unsent` bytes of the stream not yet sent: may call the
 * plugin's writable callback (thread replicas) or tell a process replica
 * how much has drained. Any thread. */
void stream_sent(serve_request *req, size_t unsent);

/* The origin's deliver for a streamed request: the end is there. */
void stream_deliver_end(serve_request *req);

/* True when `req` is answered as a stream the origin takes piecewise. */
bool stream_piecewise(const serve_request *req);

/* The client went away: a writer waiting for room is told. Any thread. */
void stream_cancelled(serve_request *req);

/* For the access log and metrics: bytes written and the time of the first
 * piece (0: none). */
uint64_t stream_bytes(const serve_request *req);
uint64_t stream_first_byte_ns(const serve_request *req);

/* The child's side (replica_host.c): the drained count the server
 * reported; fires the writable callback when there is room. */
void stream_drained_update(serve_request *req, uint64_t drained);
/* The child's write check: SERVE_OK after counting len as written, or
 * SERVE_EAGAIN, with *tell_blocked when the server must now be told that
 * the writer waits (MSG_STREAM_BLOCKED), once per wait. */
int stream_reserve(serve_request *req, size_t len, bool *tell_blocked);
/* The server's side: a process replica's writer waits for room: the next
 * drain (or this one, if some is unreported) is reported at once. */
void stream_writer_blocked(serve_request *req);

/* An origin that runs callbacks of the caller's (a handle call) holds
 * this around each, so that pieces, the result and a cancel never
 * overlap. Recursive. */
void stream_origin_lock(serve_request *req);
void stream_origin_unlock(serve_request *req);

/* Gives req a stream (req->stream); false when out of memory. */
bool stream_attach(serve_request *req);
void stream_free(struct stream *s);

#endif
