/* test_answer_queue.c - the answer queue (runtime/answer_queue.c): many
 * producers push answered requests, alone and in chains; one consumer,
 * woken by the edge-triggered eventfd as an I/O thread is, takes them.
 *
 * The consumer takes only after an edge, never by looking: a lost
 * wake-up leaves requests queued with no edge to come (every later push
 * finds the queue non-empty and writes nothing), so the consumer's
 * epoll_wait times out and the test fails. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "answer_queue.h"
#include "clock.h"
#include "request.h"
#include "unit.h"

/* Reads (and so resets) the eventfd's counter: how many writes since the
 * last read. The I/O thread never reads it; the tests do, to count. */
static uint64_t test_aq_writes(struct answer_queue *q)
{
    uint64_t count = 0;
    if (read(answer_queue_fd(q), &count, sizeof count) != (ssize_t)sizeof count) return 0;
    return count;
}

/* Requests whose `origin` points at their arrival counter. */
static serve_request *test_aq_request(atomic_int *arrivals)
{
    serve_request *req = request_new(0, NULL);
    ASSERT_NOT_NULL(req);
    req->origin = arrivals;
    return req;
}

TEST_IMPL(answer_queue_order_and_wakeups)
{
    struct answer_queue q;
    ASSERT(answer_queue_init(&q));
    ASSERT_NULL(answer_queue_take(&q));
    ASSERT_EQ(test_aq_writes(&q), 0);

    atomic_int arrivals[6] = {0};
    serve_request *r[6];
    for (int i = 0; i < 6; i++) r[i] = test_aq_request(&arrivals[i]);

    /* Only the push onto an empty queue writes. */
    answer_queue_push(&q, r[0]);
    answer_queue_push(&q, r[1]);
    r[2]->next = r[3];
    r[3]->next = r[4];
    r[4]->next = r[5]; /* past `last`: ignored */
    answer_queue_push_chain(&q, r[2], r[4]);
    ASSERT_EQ(test_aq_writes(&q), 1);

    /* Oldest first, chains in their own order. */
    serve_request *got = answer_queue_take(&q);
    for (int i = 0; i < 5; i++) {
        ASSERT_PTR_EQ(got, r[i]);
        got = got->next;
    }
    ASSERT_NULL(got);
    ASSERT_NULL(answer_queue_take(&q));

    /* Empty again: a chain onto it writes once, a one-request chain works. */
    r[0]->next = r[1];
    answer_queue_push_chain(&q, r[0], r[1]);
    answer_queue_push_chain(&q, r[5], r[5]);
    ASSERT_EQ(test_aq_writes(&q), 1);
    got = answer_queue_take(&q);
    ASSERT_PTR_EQ(got, r[0]);
    ASSERT_PTR_EQ(got->next, r[1]);
    ASSERT_PTR_EQ(got->next->next, r[5]);
    ASSERT_NULL(got->next->next->next);

    /* A bare wake writes without queueing. */
    answer_queue_wake(&q);
    ASSERT_EQ(test_aq_writes(&q), 1);
    ASSERT_NULL(answer_queue_take(&q));

    for (int i = 0; i < 6; i++) request_release(r[i]);
    answer_queue_destroy(&q);
    answer_queue_destroy(NULL);
    return 0;
}

#define TEST_AQ_PRODUCERS 6
#define TEST_AQ_PER_PRODUCER 20000
#define TEST_AQ_TOTAL (TEST_AQ_PRODUCERS * TEST_AQ_PER_PRODUCER)
/* Longer than any scheduling hiccup under TSan on a loaded machine, far
 * shorter than the runner's limit: an edge that never comes. */
#define TEST_AQ_EDGE_TIMEOUT_MS 10000

struct test_aq_producer {
    struct answer_queue *q;
    serve_request **reqs; /* this producer's TEST_AQ_PER_PRODUCER requests */
    unsigned seed;
};

static void *test_aq_produce(void *arg)
{
    struct test_aq_producer *p = arg;
    size_t i = 0;
    while (i < TEST_AQ_PER_PRODUCER) {
        /* Singles and chains of up to 16, as replicas push them. */
        size_t n = (size_t)(rand_r(&p->seed) % 17);
        if (n == 0) {
            answer_queue_push(p->q, p->reqs[i++]);
            continue;
        }
        if (n > TEST_AQ_PER_PRODUCER - i) n = TEST_AQ_PER_PRODUCER - i;
        for (size_t k = 0; k + 1 < n; k++) p->reqs[i + k]->next = p->reqs[i + k + 1];
        answer_queue_push_chain(p->q, p->reqs[i], p->reqs[i + n - 1]);
        i += n;
        if (rand_r(&p->seed) % 8 == 0) usleep(20); /* let the queue run dry now and then */
    }
    return NULL;
}

struct test_aq_consumer {
    struct answer_queue *q;
    size_t taken;
    size_t edges;
    size_t empty_takes;
    size_t queued_at_timeout; /* non-zero: a lost wake-up */
};

static void *test_aq_consume(void *arg)
{
    struct test_aq_consumer *c = arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    ASSERT(ep >= 0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET};
    ASSERT_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, answer_queue_fd(c->q), &ev), 0);
    while (c->taken < TEST_AQ_TOTAL) {
        struct epoll_event got;
        int n = epoll_wait(ep, &got, 1, TEST_AQ_EDGE_TIMEOUT_MS);
        if (n < 0) continue; /* EINTR */
        if (n == 0) {
            for (serve_request *req = answer_queue_take(c->q); req; req = req->next)
                c->queued_at_timeout++;
            break;
        }
        c->edges++;
        serve_request *req = answer_queue_take(c->q);
        if (!req) c->empty_takes++;
        for (; req; req = req->next) {
            atomic_int *arrivals = req->origin;
            atomic_fetch_add(arrivals, 1);
            c->taken++;
        }
    }
    close(ep);
    return NULL;
}

TEST_IMPL(answer_queue_producers)
{
    struct answer_queue q;
    ASSERT(answer_queue_init(&q));
    serve_request **reqs = calloc(TEST_AQ_TOTAL, sizeof *reqs);
    atomic_int *arrivals = calloc(TEST_AQ_TOTAL, sizeof *arrivals);
    ASSERT_NOT_NULL(reqs);
    ASSERT_NOT_NULL(arrivals);
    for (size_t i = 0; i < TEST_AQ_TOTAL; i++) reqs[i] = test_aq_request(&arrivals[i]);

    struct test_aq_consumer consumer = {.q = &q};
    pthread_t consumer_thread, producer_threads[TEST_AQ_PRODUCERS];
    struct test_aq_producer producers[TEST_AQ_PRODUCERS];
    uint64_t started = serve__now_ns();
    ASSERT_EQ(pthread_create(&consumer_thread, NULL, test_aq_consume, &consumer), 0);
    for (int i = 0; i < TEST_AQ_PRODUCERS; i++) {
        producers[i] = (struct test_aq_producer){
            .q = &q, .reqs = reqs + (size_t)i * TEST_AQ_PER_PRODUCER, .seed = 17u + (unsigned)i};
        ASSERT_EQ(pthread_create(&producer_threads[i], NULL, test_aq_produce, &producers[i]), 0);
    }
    for (int i = 0; i < TEST_AQ_PRODUCERS; i++) pthread_join(producer_threads[i], NULL);
    pthread_join(consumer_thread, NULL);
    double seconds = (double)(serve__now_ns() - started) / 1e9;

    if (consumer.queued_at_timeout)
        UNIT_FAIL("lost wake-up: %zu requests queued and no edge for %d ms (%zu taken)",
                  consumer.queued_at_timeout, TEST_AQ_EDGE_TIMEOUT_MS, consumer.taken);
    ASSERT_EQ(consumer.taken, TEST_AQ_TOTAL);
    for (size_t i = 0; i < TEST_AQ_TOTAL; i++)
        if (atomic_load(&arrivals[i]) != 1)
            UNIT_FAIL("request %zu arrived %d times", i, atomic_load(&arrivals[i]));
    ASSERT_NULL(answer_queue_take(&q));
    /* At most one edge per push that found the queue empty; the
     * consumer's batches are the point. */
    ASSERT(consumer.edges <= consumer.taken);
    fprintf(stderr, "answer_queue_producers: %d requests, %zu edges, %zu empty takes, %.2f s\n",
            TEST_AQ_TOTAL, consumer.edges, consumer.empty_takes, seconds);

    for (size_t i = 0; i < TEST_AQ_TOTAL; i++) request_release(reqs[i]);
    free(reqs);
    free(arrivals);
    answer_queue_destroy(&q);
    return 0;
}
