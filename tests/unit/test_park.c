/* test_park.c - the futex park (runtime/park.c): a wake-up is never lost,
 * whether it comes before the wait or during it; a deadline ends a wait. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "park.h"
#include "unit.h"

#define TEST_PARK_ROUNDS 20000
/* A wake-up that does not come within this is lost (the deadline only
 * keeps a failing test from hanging until the runner kills it). */
#define TEST_PARK_LOST_NS (10ull * 1000000000u)

struct test_park_pair {
    struct park parks[2];
    atomic_int turn; /* whose move it is: 0 or 1 */
    int lost;        /* the player that gave up waiting, or -1 */
};

struct test_park_player {
    struct test_park_pair *pair;
    int me;
};

/* Waits for its turn as replicas wait for work: prepare, look, wait. */
static void *test_park_play(void *arg)
{
    struct test_park_player *p = arg;
    struct test_park_pair *pair = p->pair;
    for (int round = 0; round < TEST_PARK_ROUNDS; round++) {
        uint64_t deadline = serve__now_ns() + TEST_PARK_LOST_NS;
        for (;;) {
            unsigned seq = park_prepare(&pair->parks[p->me]);
            if (atomic_load(&pair->turn) == p->me) break;
            if (serve__now_ns() >= deadline) {
                pair->lost = p->me;
                atomic_store(&pair->turn, 1 - p->me); /* let the other one end too */
                park_wake(&pair->parks[1 - p->me]);
                return NULL;
            }
            park_wait(&pair->parks[p->me], seq, deadline);
        }
        atomic_store(&pair->turn, 1 - p->me);
        park_wake(&pair->parks[1 - p->me]);
    }
    return NULL;
}

TEST_IMPL(park_ping_pong)
{
    struct test_park_pair pair = {.lost = -1};
    atomic_init(&pair.turn, 0);
    atomic_init(&pair.parks[0].seq, 0);
    atomic_init(&pair.parks[1].seq, 0);
    struct test_park_player players[2] = {{&pair, 0}, {&pair, 1}};
    pthread_t threads[2];
    uint64_t started = serve__now_ns();
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(pthread_create(&threads[i], NULL, test_park_play, &players[i]), 0);
    for (int i = 0; i < 2; i++) pthread_join(threads[i], NULL);
    if (pair.lost >= 0) UNIT_FAIL("player %d lost a wake-up", pair.lost);
    fprintf(stderr, "park_ping_pong: %d rounds in %.2f s\n", TEST_PARK_ROUNDS,
            (double)(serve__now_ns() - started) / 1e9);
    return 0;
}

TEST_IMPL(park_wake_before_wait)
{
    struct park p = {.shared = false};
    atomic_init(&p.seq, 0);
    unsigned seq = park_prepare(&p);
    park_wake(&p); /* nobody parked yet: the next wait must not sleep */
    uint64_t started = serve__now_ns();
    park_wait(&p, seq, started + TEST_PARK_LOST_NS);
    ASSERT(serve__now_ns() - started < 1000000000u);
    return 0;
}

TEST_IMPL(park_deadline)
{
    struct park p = {.shared = false};
    atomic_init(&p.seq, 0);
    uint64_t started = serve__now_ns(), deadline = started + 50 * 1000000u;
    int waits = 0;
    /* A wait may return early (a signal); the caller looks again. */
    while (serve__now_ns() < deadline && waits < 1000) {
        park_wait(&p, park_prepare(&p), deadline);
        waits++;
    }
    uint64_t took = serve__now_ns() - started;
    ASSERT(took >= 50 * 1000000u);
    ASSERT(took < 5000 * 1000000ull);
    ASSERT(waits < 1000);
    return 0;
}

/* The same game between two processes, on parks in a shared mapping: what
 * a process replica and the server will do. */
TEST_IMPL(park_ping_pong_processes)
{
    struct test_park_pair *pair = mmap(NULL, sizeof *pair, PROT_READ | PROT_WRITE,
                                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT(pair != MAP_FAILED);
    pair->lost = -1;
    atomic_init(&pair->turn, 0);
    for (int i = 0; i < 2; i++) {
        atomic_init(&pair->parks[i].seq, 0);
        pair->parks[i].shared = true;
    }
    pid_t child = fork();
    ASSERT(child >= 0);
    if (child == 0) {
        struct test_park_player other = {pair, 1};
        test_park_play(&other);
        _exit(pair->lost >= 0 ? 1 : 0);
    }
    struct test_park_player me = {pair, 0};
    test_park_play(&me);
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    if (pair->lost >= 0) UNIT_FAIL("player %d lost a wake-up across processes", pair->lost);
    ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    munmap(pair, sizeof *pair);
    return 0;
}
