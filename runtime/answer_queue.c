/* answer_queue.c - answered requests on their way to one consumer (see
 * answer_queue.h). */
#include "answer_queue.h"

#include <sched.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "request.h"

bool answer_queue_init(struct answer_queue *q)
{
    atomic_init(&q->newest, NULL);
    atomic_init(&q->pushing, 0);
    q->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return q->wake_fd >= 0;
}

void answer_queue_destroy(struct answer_queue *q)
{
    if (!q) return;
    /* A push whose request was taken has incremented `pushing` before
     * the take saw it (the CAS comes after), so the wait covers it; the
     * decrement's release orders its write before the close. */
    while (atomic_load_explicit(&q->pushing, memory_order_acquire)) sched_yield();
    if (q->wake_fd >= 0) close(q->wake_fd);
    q->wake_fd = -1;
}

void answer_queue_wake(struct answer_queue *q)
{
    /* Every write is an edge for epoll, even while the counter is already
     * non-zero; the counter itself is never read. */
    static const uint64_t one = 1;
    ssize_t n = write(q->wake_fd, &one, sizeof one);
    (void)n; /* EAGAIN would take 2^64 - 1 unread writes */
}

/* Links newest -> ... -> oldest (oldest->next already set by the caller)
 * in front of what is queued. Push-only, so a compare-and-swap that finds
 * the same pointer it read is right whatever happened in between (no ABA:
 * nothing is popped one by one). */
static void push_newest_first(struct answer_queue *q, serve_request *newest, serve_request *oldest)
{
    atomic_fetch_add_explicit(&q->pushing, 1, memory_order_relaxed);
    serve_request *queued = atomic_load_explicit(&q->newest, memory_order_relaxed);
    do
        oldest->next = queued;
    while (!atomic_compare_exchange_weak_explicit(&q->newest, &queued, newest,
                                                  memory_order_release, memory_order_relaxed));
    /* Only the push onto an empty queue announces it: the consumer takes
     * everything after the edge this write makes. */
    if (!queued) answer_queue_wake(q);
    atomic_fetch_sub_explicit(&q->pushing, 1, memory_order_release);
}

void answer_queue_push(struct answer_queue *q, serve_request *req)
{
    push_newest_first(q, req, req);
}

void answer_queue_push_chain(struct answer_queue *q, serve_request *first, serve_request *last)
{
    /* The queue holds newest first; reverse the chain (still private). */
    serve_request *reversed = NULL;
    for (serve_request *req = first, *next;; req = next) {
        next = req->next;
        req->next = reversed;
        reversed = req;
        if (req == last) break;
    }
    push_newest_first(q, last, first);
}

serve_request *answer_queue_take(struct answer_queue *q)
{
    serve_request *newest = atomic_exchange_explicit(&q->newest, NULL, memory_order_acquire);
    serve_request *oldest_first = NULL;
    while (newest) {
        serve_request *next = newest->next;
        newest->next = oldest_first;
        oldest_first = newest;
        newest = next;
    }
    return oldest_first;
}
