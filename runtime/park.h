/* park.h - where a thread sleeps until another wakes it: a futex word.
 *
 * A condition variable would do, but glibc's marks its mutex contended on
 * every wake-up, so the woken thread's next unlock costs a futex syscall
 * even with no one waiting; at one request per wake-up that is a third of
 * the hand-off's syscalls. A park costs exactly one wake and one wait.
 *
 * Use, with the caller's own lock guarding what the sleeper waits for:
 *   sleeper, under the lock: seq = park_prepare(p); mark itself parked;
 *           unlock; park_wait(p, seq, deadline); lock again.
 *   waker, under the lock: see the sleeper marked parked, unmark it;
 *           then (under the lock or after it) park_wake(p).
 * A wake between prepare and wait is never lost: it changes the word, and
 * the wait then returns at once. The word is all there is: a park works
 * between processes too, in shared memory (see `shared`). */
#ifndef SERVE_RUNTIME_PARK_H
#define SERVE_RUNTIME_PARK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct park {
    atomic_uint seq;
    /* Set once, before first use, for a park in memory shared between
     * processes (a process replica's, in a MAP_SHARED region): its
     * futex operations are then the shared ones, which the kernel keys by
     * the page rather than by this process's address space. */
    bool shared;
};

static inline unsigned park_prepare(struct park *p)
{
    return atomic_load_explicit(&p->seq, memory_order_acquire);
}

/* Sleeps until woken after `seq` was read, or until `deadline_ns`
 * (CLOCK_MONOTONIC; 0: no deadline). May return early (a signal); callers
 * check their condition again. */
void park_wait(struct park *p, unsigned seq, uint64_t deadline_ns);

/* Wakes the one thread parked on p (or makes its next wait return). */
void park_wake(struct park *p);

#endif
