/* answer_queue.h - where answered requests wait for the thread that sends
 * them: many producers (replica workers, handle-call and timer threads, any
 * thread), one consumer (an HTTP I/O thread), which takes everything queued
 * at once.
 *
 * The queue is one atomic word (the newest request; older ones follow
 * through `req->next`) and an eventfd. A push is one compare-and-swap, so
 * producers never sleep on a lock the consumer holds and no push costs a
 * syscall, except the one that makes the queue non-empty: that one writes
 * the eventfd, once. A chain of requests (a replica's batch, say) is
 * pushed with the same single compare-and-swap and at most one write.
 *
 * The consumer watches the eventfd edge-triggered (libevent's EV_ET,
 * epoll's EPOLLET) and never reads it: each write is a new edge, so the
 * counter's value does not matter (2^64 writes would fill it). After an
 * edge it calls answer_queue_take. No wake-up is lost: a request is
 * published before the write that announces it, and every non-empty queue
 * has had a push that found it empty and writes after that push; a write
 * that finds the items already taken costs one empty take, nothing more.
 *
 * Between processes: the word and the eventfd would do as they are (an
 * atomic in shared memory, an inherited eventfd); the links would need
 * to be offsets into the shared region rather than pointers. Requests
 * live in the server's own process, so a process replica's answers come
 * back through a reader thread there, which pushes them here.
 *
 * No allocation: the link is the request's own `next` field, which the
 * request does not use for anything else while it is answered (it left
 * the backend queue before it was run). */
#ifndef SERVE_RUNTIME_ANSWER_QUEUE_H
#define SERVE_RUNTIME_ANSWER_QUEUE_H

#include <stdatomic.h>
#include <stdbool.h>

#include "serve/plugin.h"

struct answer_queue {
    _Atomic(serve_request *) newest; /* the requests pushed, newest first */
    /* Pushes under way. A push's request can be taken (and the consumer
     * stopped) before that push has written the eventfd; destroy waits
     * for this to reach zero, so that no write meets a closed (or reused)
     * fd number. */
    atomic_uint pushing;
    int wake_fd;                     /* eventfd; -1 before init */
};

/* Creates the eventfd (non-blocking, close-on-exec). Returns false with
 * errno set when it cannot. Call answer_queue_destroy even then. */
bool answer_queue_init(struct answer_queue *q);

/* Closes the eventfd, after waiting for pushes under way to finish
 * their write. Requests still queued are the caller's: take them first.
 * No push may start after this is called. NULL is a harmless no-op. */
void answer_queue_destroy(struct answer_queue *q);

/* The eventfd to watch edge-triggered for reading; never read it. */
static inline int answer_queue_fd(const struct answer_queue *q) { return q->wake_fd; }

/* Queues one request (its `next` is overwritten); wakes the consumer when
 * the queue was empty. Any thread. The request now belongs to the
 * consumer: the caller must not touch it again, not even its reference
 * count, unless it holds a reference of its own. */
void answer_queue_push(struct answer_queue *q, serve_request *req);

/* Queues the chain first -> ... -> last, linked through `next` in the
 * order the consumer shall see them (last->next is ignored), with one
 * compare-and-swap and at most one wake-up. Any thread. Ownership as for
 * answer_queue_push. */
void answer_queue_push_chain(struct answer_queue *q, serve_request *first, serve_request *last);

/* Takes every request queued, oldest first, linked through `next`
 * (NULL-terminated); NULL when none is. One consumer at a time: the
 * consumer's thread, or any thread once that one has stopped. */
serve_request *answer_queue_take(struct answer_queue *q);

/* Makes the consumer's eventfd fire without queueing anything: for the
 * consumer's other messages (new routes, drain, stop). Any thread. */
void answer_queue_wake(struct answer_queue *q);

#endif
