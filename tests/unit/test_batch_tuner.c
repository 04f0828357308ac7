/* test_batch_tuner.c - adaptive batching's choices (runtime/batch_tuner.c)
 * fed with batches whose cost follows a known line, as a replica of the
 * sim plugin would report them: the batch size fits the latency budget,
 * shrinks after misses, follows a change of cost, and a wait is chosen
 * only while the replica is busy. */
#include <math.h>

#include "batch_tuner.h"
#include "unit.h"

#define US 1000ull
#define MS 1000000ull

struct cost {
    double base_us, per_item_us;
};

/* A batch of n that ran exec ns, each of its requests answered latency ns
 * after it was queued, as a replica reports them. */
static void answer(struct batch_tuner *t, uint32_t n, uint64_t latency, uint64_t exec,
                   uint64_t now)
{
    uint64_t lat[256];
    for (uint32_t i = 0; i < n && i < 256; i++) lat[i] = latency;
    batch_tuner_latencies(t, lat, n < 256 ? n : 256);
    batch_tuner_observe(t, n, exec, now);
}

/* Runs batches for `ms` of simulated time from *now, sizes cycling up to
 * the tuner's current choice, each request having queued `queued_ms`
 * first, idle_ms between batches (a replica that keeps up with its load:
 * one that never idles looks saturated, and keeps the size that carries
 * its rate). */
static void run(struct batch_tuner *t, struct cost c, double queued_ms, double idle_ms,
                uint64_t *now, uint64_t ms)
{
    uint64_t end = *now + ms * MS;
    for (uint32_t i = 0; *now < end; i++) {
        uint32_t cap = batch_tuner_max_batch(t);
        uint32_t n = i % cap + 1;
        uint64_t exec = (uint64_t)((c.base_us + c.per_item_us * n) * US);
        *now += exec;
        answer(t, n, (uint64_t)(queued_ms * MS) + exec, exec, *now);
        *now += (uint64_t)(idle_ms * MS);
    }
}

/* A saturated replica for `ms`: batches of the tuner's current choice back
 * to back (every eighth a quarter smaller, so that sizes spread), each
 * request answered queued_ms after it was queued plus its batch's run. */
static void saturate(struct batch_tuner *t, struct cost c, double queued_ms, uint64_t *now,
                     uint64_t ms)
{
    for (uint64_t end = *now + ms * MS, i = 0; *now < end; i++) {
        uint32_t cap = batch_tuner_max_batch(t);
        uint32_t n = i % 8 ? cap : cap - cap / 4;
        uint64_t exec = (uint64_t)((c.base_us + c.per_item_us * n) * US);
        *now += exec;
        answer(t, n, (uint64_t)(queued_ms * MS) + exec, exec, *now);
    }
}

TEST_IMPL(batch_tuner_fits_the_budget)
{
    /* 2 ms + 20 us x n under an 8 ms SLO: with the headroom grown to its
     * most, two batches of n must fit in 0.8 x 8 ms: n <= 60. */
    struct batch_tuner *t = batch_tuner_new(8, 128);
    ASSERT_NOT_NULL(t);
    uint64_t now = MS;
    run(t, (struct cost){2000, 20}, 0.5, 3, &now, 5000);
    uint32_t b = batch_tuner_max_batch(t);
    ASSERT(b >= 50 && b <= 60);
    batch_tuner_free(t);
    return 0;
}

TEST_IMPL(batch_tuner_backs_off_after_misses)
{
    struct batch_tuner *t = batch_tuner_new(20, 256);
    ASSERT_NOT_NULL(t);
    uint64_t now = MS;
    run(t, (struct cost){2000, 20}, 1, 3, &now, 3000);
    uint32_t calm = batch_tuner_max_batch(t);
    struct batch_tuner_view v;
    batch_tuner_view(t, &v);
    double headroom = v.headroom;
    /* Requests that queued 25 ms: every period misses the 20 ms SLO. */
    run(t, (struct cost){2000, 20}, 25, 3, &now, 1000);
    batch_tuner_view(t, &v);
    ASSERT(v.headroom < headroom * 0.5); /* multiplicative decrease */
    ASSERT(v.p99_ms > 20);
    ASSERT(batch_tuner_max_batch(t) < calm);
    /* The queue drains: the headroom grows back, step by step. */
    run(t, (struct cost){2000, 20}, 1, 3, &now, 5000);
    uint32_t again = batch_tuner_max_batch(t);
    ASSERT(again >= calm * 0.9 && again <= calm * 1.1); /* the same, within the model's noise */
    batch_tuner_free(t);
    return 0;
}

TEST_IMPL(batch_tuner_follows_a_cost_change)
{
    /* 10 ms SLO: at 20 us per item 64 (the limit) fits; at 100 us per
     * item two batches fit 8 ms only up to n = 20 (22 within the 10 %
     * the choice holds against the model's noise). */
    struct batch_tuner *t = batch_tuner_new(10, 64);
    ASSERT_NOT_NULL(t);
    uint64_t now = MS;
    run(t, (struct cost){2000, 20}, 0.5, 3, &now, 3000);
    ASSERT_EQ(batch_tuner_max_batch(t), 64);
    uint64_t change = now;
    uint64_t settled = 0;
    while (now < change + 5000 * MS) {
        run(t, (struct cost){2000, 100}, 0.5, 3, &now, 100);
        uint32_t b = batch_tuner_max_batch(t);
        if (b >= 15 && b <= 22) {
            if (!settled) settled = now;
        } else {
            settled = 0;
        }
    }
    ASSERT(settled != 0);
    ASSERT(settled - change < 5000 * MS);
    batch_tuner_free(t);
    return 0;
}

TEST_IMPL(batch_tuner_waits_only_near_capacity)
{
    struct batch_tuner *t = batch_tuner_new(20, 64);
    ASSERT_NOT_NULL(t);
    uint64_t now = MS;
    /* A batch every 25 ms or so: without a wait batches stay small, and
     * a wait would add latency for nothing. */
    run(t, (struct cost){2000, 20}, 0.2, 25, &now, 3000);
    ASSERT_EQ(batch_tuner_wait_ns(t), 0);
    ASSERT_EQ(batch_tuner_max_batch(t), 64);
    /* Mostly full batches of 64 back to back (about 19 000 requests/s at
     * 3.28 ms a batch): the load needs the largest batches, so wait for
     * them to fill, within the budget left after two batches of the
     * chosen size. */
    saturate(t, (struct cost){2000, 20}, 0.2, &now, 3000);
    uint64_t wait = batch_tuner_wait_ns(t);
    uint32_t b = batch_tuner_max_batch(t);
    ASSERT(wait > 0);
    ASSERT(wait <= (uint64_t)(0.8 * 20 * MS - 2 * (2000 + 20.0 * b) * US) + US);
    batch_tuner_free(t);
    return 0;
}

TEST_IMPL(batch_tuner_grows_under_a_backlog)
{
    /* 2 ms + 500 us per item under a 20 ms SLO: two batches fit the
     * budget only up to about a dozen requests. */
    struct batch_tuner *t = batch_tuner_new(20, 64);
    ASSERT_NOT_NULL(t);
    uint64_t now = MS;
    run(t, (struct cost){2000, 500}, 1, 10, &now, 3000);
    uint32_t small = batch_tuner_max_batch(t);
    ASSERT(small > 1 && small < 20);
    /* Then more load than that size carries: batches full, requests
     * queued 300 ms. Every period misses, from the queue: shrinking the
     * batch (as a miss of its own length would) would carry less and
     * never drain it; the size grows to the largest instead. */
    saturate(t, (struct cost){2000, 500}, 300, &now, 2000);
    ASSERT_EQ(batch_tuner_max_batch(t), 64);
    batch_tuner_free(t);
    return 0;
}
