/* park.c - futex-based parking (see park.h). */
#include "park.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

void park_wait(struct park *p, unsigned seq, uint64_t deadline_ns)
{
    struct timespec deadline = serve__ns_to_timespec(deadline_ns);
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline. */
    syscall(SYS_futex, &p->seq, p->shared ? FUTEX_WAIT_BITSET : FUTEX_WAIT_BITSET_PRIVATE, seq,
            deadline_ns ? &deadline : NULL, NULL, FUTEX_BITSET_MATCH_ANY);
}

void park_wake(struct park *p)
{
    atomic_fetch_add_explicit(&p->seq, 1, memory_order_release);
    syscall(SYS_futex, &p->seq, p->shared ? FUTEX_WAKE : FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}
