/* test_shm_ring.c - the shared-memory message ring (runtime/shm_ring.c) and
 * the channel framing on it (runtime/replica_channel.c), between two real
 * processes as a process replica uses them: many writer threads in one
 * process, one reader in the other; every message arrives whole and in
 * each writer's order, messages larger than the ring stream through it,
 * and no wake-up is lost (a lost one hangs the reader, which the deadline
 * turns into a failure). */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <poll.h>
#include <unistd.h>

#include "clock.h"
#include "replica_channel.h"
#include "shm_ring.h"
#include "unit.h"

#define TEST_RING_CAPACITY 4096u
#define TEST_RING_WRITERS 4
#define TEST_RING_MESSAGES 3000
/* Sizes cycle through these: tiny, ring-sized and past the ring. */
static const size_t test_ring_sizes[] = {0, 1, 7, 100, 4000, 4096, 9000, 33};
#define TEST_RING_SIZES (sizeof test_ring_sizes / sizeof *test_ring_sizes)

static unsigned char test_ring_byte(int writer, int seq, size_t at)
{
    return (unsigned char)(writer * 31 + seq * 7 + at);
}

struct test_ring_writer {
    struct shm_ring_end *end;
    int id;
};

static void *test_ring_write(void *arg)
{
    struct test_ring_writer *w = arg;
    unsigned char *body = malloc(9000);
    struct wire_out head = {0};
    for (int seq = 0; seq < TEST_RING_MESSAGES; seq++) {
        size_t len = test_ring_sizes[(size_t)(seq + w->id) % TEST_RING_SIZES];
        for (size_t i = 0; i < len; i++) body[i] = test_ring_byte(w->id, seq, i);
        wire_reset(&head);
        wire_u32(&head, (uint32_t)w->id);
        wire_u32(&head, (uint32_t)seq);
        wire_str(&head, "a string in the head");
        shm_ring_lock(w->end);
        bool ok = channel_put(w->end, 7, &head, 3, body, len) && shm_ring_end_message(w->end);
        shm_ring_unlock(w->end);
        if (!ok) _exit(3);
    }
    wire_free(&head);
    free(body);
    return NULL;
}

/* The writer process: its threads write concurrently, then it exits. */
static void test_ring_writers(struct shm_ring *ring, int wake_fd)
{
    struct shm_ring_end end;
    shm_ring_end_init(&end, ring, wake_fd, NULL, NULL);
    pthread_t threads[TEST_RING_WRITERS];
    struct test_ring_writer args[TEST_RING_WRITERS];
    for (int i = 0; i < TEST_RING_WRITERS; i++) {
        args[i] = (struct test_ring_writer){&end, i};
        pthread_create(&threads[i], NULL, test_ring_write, &args[i]);
    }
    for (int i = 0; i < TEST_RING_WRITERS; i++) pthread_join(threads[i], NULL);
    _exit(0);
}

struct test_ring_poll {
    int wake_fd;
    uint64_t deadline;
};

/* The server's way of waiting: its eventfd, with a deadline. */
static bool test_ring_wait_eventfd(struct shm_ring_end *end, void *arg)
{
    struct test_ring_poll *p = arg;
    if (!shm_ring_reader_sleep(end)) return true;
    struct pollfd fd = {.fd = p->wake_fd, .events = POLLIN};
    int n = poll(&fd, 1, 10000);
    shm_ring_reader_awake(end);
    if (n == 1) {
        uint64_t count;
        ssize_t ignored = read(p->wake_fd, &count, sizeof count);
        (void)ignored;
    }
    return n == 1 || shm_ring_readable(end) > 0; /* 10 s without a wake-up: lost */
}

static void test_ring_run(bool use_eventfd)
{
    size_t size = shm_ring_size(TEST_RING_CAPACITY);
    struct shm_ring *ring = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                                 -1, 0);
    ASSERT(ring != MAP_FAILED);
    shm_ring_init(ring, TEST_RING_CAPACITY);
    int wake_fd = use_eventfd ? eventfd(0, EFD_NONBLOCK) : -1;
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) test_ring_writers(ring, wake_fd);

    struct shm_ring_end end;
    shm_ring_end_init(&end, ring, -1, NULL, NULL);
    struct test_ring_poll poll_arg = {.wake_fd = wake_fd};
    ring_wait_fn wait = use_eventfd ? test_ring_wait_eventfd : shm_ring_wait_futex;
    void *wait_arg = use_eventfd ? &poll_arg : NULL;
    int next[TEST_RING_WRITERS] = {0};
    struct wire_out head = {0};
    unsigned char *body = malloc(9000);
    /* A futex wait has no deadline here: the runner's timeout catches a
     * lost wake-up. */
    for (int got = 0; got < TEST_RING_WRITERS * TEST_RING_MESSAGES; got++) {
        uint32_t type;
        struct wire_prefix prefix;
        ASSERT(channel_get(&end, wait, wait_arg, &type, &prefix, &head));
        ASSERT_EQ(type, 7);
        ASSERT_EQ(prefix.count, 3);
        ASSERT(prefix.body_len <= 9000);
        ASSERT(shm_ring_read(&end, body, prefix.body_len, wait, wait_arg));
        struct wire_in r = wire_in_of(&head);
        int writer = (int)wire_get_u32(&r);
        int seq = (int)wire_get_u32(&r);
        ASSERT(strcmp(wire_get_str(&r), "a string in the head") == 0);
        ASSERT(!r.bad);
        ASSERT(writer >= 0 && writer < TEST_RING_WRITERS);
        ASSERT_EQ(seq, next[writer]); /* each writer's order */
        next[writer]++;
        ASSERT_EQ(prefix.body_len, test_ring_sizes[(size_t)(seq + writer) % TEST_RING_SIZES]);
        for (size_t i = 0; i < prefix.body_len; i++)
            if (body[i] != test_ring_byte(writer, seq, i))
                UNIT_FAIL("writer %d message %d: byte %zu differs", writer, seq, i);
    }
    ASSERT_EQ(shm_ring_readable(&end), 0);
    int status;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    free(body);
    wire_free(&head);
    munmap(ring, size);
}

TEST_IMPL(shm_ring_processes_futex)
{
    test_ring_run(false);
    return 0;
}

TEST_IMPL(shm_ring_processes_eventfd)
{
    test_ring_run(true);
    return 0;
}

static bool test_ring_peer_gone(void *arg)
{
    return *(volatile bool *)arg;
}

/* A writer whose reader is gone gives up instead of waiting for ever. */
TEST_IMPL(shm_ring_dead_reader)
{
    size_t size = shm_ring_size(TEST_RING_CAPACITY);
    struct shm_ring *ring = calloc(1, size);
    shm_ring_init(ring, TEST_RING_CAPACITY);
    volatile bool gone = true;
    struct shm_ring_end end;
    shm_ring_end_init(&end, ring, -1, test_ring_peer_gone, (void *)&gone);
    char big[3 * TEST_RING_CAPACITY] = {0};
    uint64_t started = serve__now_ns();
    shm_ring_lock(&end);
    ASSERT(!shm_ring_write(&end, big, sizeof big));
    shm_ring_unlock(&end);
    ASSERT(serve__now_ns() - started < 5000000000ull);
    shm_ring_end_destroy(&end);
    free(ring);
    return 0;
}

/* Malformed heads are refused, not read past their end. */
TEST_IMPL(wire_bounds)
{
    struct wire_out w = {0};
    wire_u32(&w, 5);
    wire_str(&w, "abc");
    struct wire_in r = wire_in_of(&w);
    ASSERT_EQ(wire_get_u32(&r), 5);
    ASSERT(strcmp(wire_get_str(&r), "abc") == 0);
    ASSERT(!r.bad);
    ASSERT_EQ(wire_get_u64(&r), 0);
    ASSERT(r.bad);
    struct wire_in cut = {w.buf, w.buf + w.len - 1, false}; /* no NUL */
    wire_get_u32(&cut);
    ASSERT(strcmp(wire_get_str(&cut), "") == 0);
    ASSERT(cut.bad);
    struct wire_out empty = {0}; /* a head that never grew: nothing to read */
    struct wire_in none = wire_in_of(&empty);
    ASSERT_EQ(wire_get_u32(&none), 0);
    ASSERT(none.bad);
    wire_free(&w);
    return 0;
}
