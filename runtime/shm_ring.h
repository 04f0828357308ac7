/* shm_ring.h - a one-way stream of messages between two processes, in
 * memory both have mapped (a process replica's channel, replica_channel.h).
 *
 * One ring carries bytes from the threads of one process (the writers,
 * serialised by a lock of that process) to one thread of the other (the
 * reader). Head and tail are byte counts that only grow; the writer owns
 * the head, the reader the tail, so the only thing shared under contention
 * is two counters, and neither side ever waits on a lock the other holds:
 * a peer that dies mid-message can leave the ring half written, never
 * locked.
 *
 * Messages are a header (type, length) and a payload of any length: one
 * larger than the ring streams through it, the writer waiting for room as
 * the reader consumes. A message is published (head moved, reader woken)
 * when it is complete, or when the ring is full and the writer must wait,
 * so a reader is woken once per message at most, and only when it said it
 * sleeps: a batch of answers written back to back costs one wake-up.
 *
 * Waiting: the reader sleeps on a futex in the ring (the replica process)
 * or, when the ring has an eventfd, on whatever it polls with that fd (the
 * server's monitor thread, which also polls the child's pidfd). The writer
 * sleeps on a futex when the ring is full, in slices, asking `peer_gone`
 * between them so that a dead reader never blocks it for ever. */
#ifndef SERVE_RUNTIME_SHM_RING_H
#define SERVE_RUNTIME_SHM_RING_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "park.h"

/* The part in shared memory. Zeroed, then shm_ring_init, by the process
 * that creates the mapping. */
struct shm_ring {
    alignas(64) _Atomic uint64_t head; /* bytes published by the writer */
    atomic_uint reader_sleeps;
    struct park data;                  /* the reader's, without an eventfd */
    alignas(64) _Atomic uint64_t tail; /* bytes consumed by the reader */
    atomic_uint writer_sleeps;
    struct park room;
    uint32_t capacity;                 /* a power of two */
    alignas(64) unsigned char bytes[];
};

/* Bytes a ring of `capacity` (a power of two) takes in the mapping. */
size_t shm_ring_size(uint32_t capacity);
void shm_ring_init(struct shm_ring *ring, uint32_t capacity);

struct shm_ring_header {
    uint32_t type;
    uint32_t len; /* payload bytes that follow */
};

/* One process's end of a ring. */
struct shm_ring_end {
    struct shm_ring *ring;
    int wake_fd;             /* reader's eventfd (written by the writer), or -1 */
    /* Writer side: */
    pthread_mutex_t lock;    /* one message at a time */
    uint64_t pending;        /* bytes written, not yet published */
    /* Reader side: the tail is published (and a waiting writer woken) when
     * the ring runs dry or a quarter of it was read, not per read: one
     * fence per batch of messages instead of several per message. */
    uint64_t consumed;       /* bytes read */
    uint64_t released;       /* ... of which published as the tail */
    /* Asked while waiting; true ends the wait with failure. */
    bool (*peer_gone)(void *arg);
    void *peer_arg;
};

void shm_ring_end_init(struct shm_ring_end *end, struct shm_ring *ring, int wake_fd,
                       bool (*peer_gone)(void *), void *peer_arg);
void shm_ring_end_destroy(struct shm_ring_end *end);

/* Writer: under end->lock (shm_ring_lock), begin, write the payload in
 * pieces whose lengths add up to len, then end. Each returns false once the
 * peer is gone; the message is then lost, and so is the ring. */
void shm_ring_lock(struct shm_ring_end *end);
void shm_ring_unlock(struct shm_ring_end *end);
bool shm_ring_begin(struct shm_ring_end *end, uint32_t type, uint32_t len);
bool shm_ring_write(struct shm_ring_end *end, const void *data, size_t len);
bool shm_ring_end_message(struct shm_ring_end *end);

/* Writer, under the lock: bytes that can be written now without waiting. */
size_t shm_ring_room(const struct shm_ring_end *end);
/* Writes a whole message (lock, begin, pieces, end, unlock). */
bool shm_ring_send(struct shm_ring_end *end, uint32_t type, const void *data, uint32_t len);

/* Reader: bytes readable now. */
size_t shm_ring_readable(const struct shm_ring_end *end);

/* Reader: copies exactly len bytes out, waiting for them with `wait` when
 * the ring runs dry (see shm_ring_reader_sleep). Returns false when `wait`
 * did. */
bool shm_ring_read(struct shm_ring_end *end, void *out, size_t len,
                   bool (*wait)(struct shm_ring_end *end, void *arg), void *arg);

/* Reader, before sleeping: says so, then checks again. Returns true when
 * the caller may sleep (nothing readable; the writer will wake it), false
 * when bytes arrived meanwhile (the caller reads instead). */
bool shm_ring_reader_sleep(struct shm_ring_end *end);
/* Reader, after waking for any reason: no longer asleep. */
void shm_ring_reader_awake(struct shm_ring_end *end);

/* A `wait` for shm_ring_read that sleeps on the ring's futex until the
 * writer wakes it; never fails. */
bool shm_ring_wait_futex(struct shm_ring_end *end, void *unused);

#endif
