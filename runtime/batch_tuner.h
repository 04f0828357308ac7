/* batch_tuner.h - adaptive batching: the max batch size and the batch wait
 * that give the most throughput with the p99 of queue + execution time
 * within a latency target (--latency-slo-ms).
 *
 * Fed every batch a backend runs (its size, how long it ran) and every
 * answer's latency (from queued to answered), it keeps
 * - a cost model: the execution time of each batch size seen (a moving
 *   average), and a line a + b x n fitted to recent batches for the sizes
 *   not seen (its slope read only off sizes that spread; with one size,
 *   the last slope, or before any the time per request, which never
 *   underestimates a larger batch);
 * - the p99 of the latency its requests saw over the last period
 *   (BATCH_TUNER_PERIOD_MS);
 * - a headroom, the share of the target it plans for: it shrinks by a
 *   quarter after a period whose p99 missed the target, and grows by a
 *   step (up to BATCH_TUNER_HEADROOM_MAX) after one well under it:
 *   additive increase, multiplicative decrease.
 * Each period it chooses the largest batch whose execution fits twice in
 * the planned budget (a request may wait behind a running batch, then run
 * in its own), but never one too small to carry the measured rate with a
 * quarter to spare; when most batches ran full (a queue the chosen size
 * does not keep up with), a miss comes from the queue, so the size doubles
 * instead of the headroom shrinking (smaller batches would carry less and
 * the queue would never drain). And a wait: the time that batch takes to arrive at the
 * measured rate, within what the budget leaves, but only where a replica
 * that never waits would run batches past half that size (the load is
 * near what it carries). Below that a wait would only add latency:
 * capacity is not what is short. With the headroom unchanged, a batch size
 * within 10 % of the current one is the model's noise and is not taken.
 *
 * Threads: any, for batch_tuner_observe and batch_tuner_latencies (a lock
 * per batch, and per group of answers handed over together); the choices
 * are read lock-free. */
#ifndef SERVE_RUNTIME_BATCH_TUNER_H
#define SERVE_RUNTIME_BATCH_TUNER_H

#include <stddef.h>
#include <stdint.h>

#define BATCH_TUNER_PERIOD_MS 100
#define BATCH_TUNER_HEADROOM_MAX 0.8

struct batch_tuner;

/* slo_ms > 0; max_batch: the largest batch allowed (--max-batch-size).
 * NULL when out of memory. */
struct batch_tuner *batch_tuner_new(double slo_ms, uint32_t max_batch);
void batch_tuner_free(struct batch_tuner *t);

/* How many replicas share the load (for the rate per replica). Any thread. */
void batch_tuner_set_replicas(struct batch_tuner *t, uint32_t replicas);

/* A batch of n ran for exec_ns; now_ns: the monotonic clock at its end
 * (a clock read before another thread's later one counts as that one).
 * n = 0 (a continuous batching step) is ignored. */
void batch_tuner_observe(struct batch_tuner *t, size_t n, uint64_t exec_ns, uint64_t now_ns);

/* The latencies of n answered requests: each one's time from queued to
 * answered, waits behind other batches included. */
void batch_tuner_latencies(struct batch_tuner *t, const uint64_t *latency_ns, size_t n);

/* The current choice. Lock-free. */
uint32_t batch_tuner_max_batch(const struct batch_tuner *t);
uint64_t batch_tuner_wait_ns(const struct batch_tuner *t);

/* What status and metrics show: the choice, the p99 of the last period
 * (ms; 0 before the first), and the headroom. */
struct batch_tuner_view {
    uint32_t max_batch;
    double wait_ms;
    double p99_ms;
    double headroom;
    double slo_ms;
};
void batch_tuner_view(struct batch_tuner *t, struct batch_tuner_view *out);

#endif
