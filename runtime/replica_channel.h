/* replica_channel.h - what a process replica and its server share: one
 * memfd mapping holding a small shared header and three rings (shm_ring.h):
 *
 *   work     server -> replica  requests, "run the batch", reconfigure, stop
 *   results  server -> replica  results of the replica's handle calls
 *   answers  replica -> server  answers, batch ends, handle calls, hello
 *
 * Results have a ring of their own because the replica's thread that reads
 * work may be inside handle_batch, waiting on a handle call whose result
 * must reach it meanwhile.
 *
 * Every message is a prefix {head_len, body_len, count}, a head of small
 * fields (u32, u64, strings) and a body of bytes. The body is the part
 * that can be large (a request's or an answer's body): readers copy it
 * once, straight into the memory that keeps it (the request's allocation,
 * the answer's buffer). */
#ifndef SERVE_RUNTIME_REPLICA_CHANNEL_H
#define SERVE_RUNTIME_REPLICA_CHANNEL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm_ring.h"

enum replica_msg {
    /* server -> replica, work ring */
    MSG_INIT = 1,     /* head: backend, plugin, index, max batch, config pairs (count) */
    MSG_REQUEST,      /* head: slot, depth, times, method, path, id, header pairs (count), query pairs; body */
    MSG_RUN_BATCH,    /* head: n; the n requests just before it */
    MSG_RECONFIGURE,  /* head: config pairs (count) */
    MSG_STOP,
    /* server -> replica, results ring */
    MSG_CALL_RESULT,  /* head: call id, status, content type, header pairs (count); body */
    MSG_CALL_CHUNK,   /* head: call id; body: a piece of the target's stream */
    MSG_CANCEL,       /* head: slot: its request was cancelled (the cancel callback) */
    MSG_STREAM_DRAINED, /* head: slot, bytes of its stream sent to the client in all */
    /* replica -> server */
    MSG_READY,        /* head: plugin name, can reconfigure */
    MSG_INIT_FAILED,  /* head: message */
    MSG_ANSWER,       /* head: slot, status, content type, header pairs (count); body */
    MSG_BATCH_DONE,   /* head: n, ns in handle_batch; after the answers it gave */
    MSG_RECONFIGURED, /* head: rc */
    MSG_CALL,         /* head: call id, parent slot, endpoint, header pairs (count), query pairs,
                         wants chunks; body */
    MSG_STREAM_BEGIN, /* head: slot, status, content type, header pairs (count) */
    MSG_STREAM_DATA,  /* head: slot; body: the piece */
    MSG_STREAM_END,   /* head: slot, failed, message */
    MSG_STREAM_BLOCKED, /* head: slot: its writer waits for room (report what drains) */
    MSG_CONTINUOUS,   /* the plugin asked for continuous batching (once) */
    MSG_CANCEL_CALLS, /* head: slot: cancel the calls made for its request */
};

#define REPLICA_NO_SLOT UINT32_MAX

#define CHANNEL_CANCEL_SLOTS 16384

/* The shared header, first in the mapping. */
struct replica_shared {
    /* CLOCK_MONOTONIC ns at which the running handle_batch began; 0 when
     * none runs. Written by the replica, read by the server's hang check. */
    _Atomic uint64_t batch_started_ns;
    /* A bit per slot: its request was cancelled (the client went away, or
     * it timed out). Set by the server under its slot lock while the
     * request holds the slot, cleared when the slot is given again; read
     * by serve_request_cancelled in the replica. Slots past the bitmap are
     * never reported. */
    _Atomic uint64_t cancelled[CHANNEL_CANCEL_SLOTS / 64];
};

struct replica_channel {
    int memfd;
    void *map;
    size_t map_len;
    struct replica_shared *shared;
    struct shm_ring *work, *results, *answers;
};

/* Server: a fresh mapping on a new memfd (close-on-exec; the spawner
 * passes it on explicitly). On failure false, errno set. */
bool replica_channel_create(struct replica_channel *c);
/* Replica: maps the memfd it was given. */
bool replica_channel_attach(struct replica_channel *c, int memfd);
void replica_channel_unmap(struct replica_channel *c); /* closes the memfd too */

/* Building a head. */
struct wire_out {
    char *buf;
    size_t len, cap;
    bool failed; /* out of memory: the message must not be sent */
};
void wire_reset(struct wire_out *w);
void wire_free(struct wire_out *w);
void wire_u32(struct wire_out *w, uint32_t v);
void wire_u64(struct wire_out *w, uint64_t v);
void wire_str(struct wire_out *w, const char *s); /* NULL is sent as "" */

/* Reading a head in place: strings point into it, NUL-terminated. */
struct wire_in {
    const char *p, *end;
    bool bad;
};
/* A reader over what w holds (nothing, when w never grew). */
struct wire_in wire_in_of(const struct wire_out *w);
uint32_t wire_get_u32(struct wire_in *r);
uint64_t wire_get_u64(struct wire_in *r);
const char *wire_get_str(struct wire_in *r);

struct wire_prefix {
    uint32_t head_len, body_len, count;
};

/* Writer, under shm_ring_lock: one whole message. */
bool channel_put(struct shm_ring_end *end, uint32_t type, const struct wire_out *head,
                 uint32_t count, const void *body, size_t body_len);

/* Reader: the next message's type and prefix, then its head into *head
 * (grown as needed); the body is left in the ring for the caller to read
 * with shm_ring_read (prefix.body_len bytes). */
typedef bool (*ring_wait_fn)(struct shm_ring_end *end, void *arg);
bool channel_get(struct shm_ring_end *end, ring_wait_fn wait, void *arg, uint32_t *type,
                 struct wire_prefix *prefix, struct wire_out *head);

/* Reads and drops n bytes (a body nobody wants). */
bool channel_skip(struct shm_ring_end *end, size_t n, ring_wait_fn wait, void *arg);

#endif
