/* batch_tuner.c - adaptive batching (batch_tuner.h). */
#include "batch_tuner.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

/* Latencies in buckets 10 % apart from 10 us: p99 within 10 %, read at
 * the bucket's upper edge so that it never flatters. */
#define HIST_BUCKETS 192
#define HIST_FLOOR_NS 10000.0
#define HIST_RATIO 1.1

/* A period closes after BATCH_TUNER_PERIOD_MS with at least this many
 * requests (a p99 of fewer says little), or after a second anyway. */
#define PERIOD_MIN_REQUESTS 50
#define PERIOD_MAX_NS 1000000000ull

#define HEADROOM_START 0.6
#define HEADROOM_MIN 0.05
#define HEADROOM_STEP 0.05
#define MISS_FACTOR 0.75
/* A period whose p99 stayed under this share of the target earns a step. */
#define WELL_UNDER 0.8

/* How fast the cost model forgets: per batch, for where the line passes;
 * per batch of that size, for a size's own average. A size's average
 * counts for FRESH_NS after it was last seen. */
#define FIT_DECAY 0.97
#define SIZE_WEIGHT 0.3
#define FRESH_NS 1000000000ull
/* The batch chosen carries this much more than the measured rate. */
#define CARRY_MARGIN 1.25
/* A new batch size closer than this share to the current one is not taken. */
#define HOLD 0.1
/* The sizes seen recently must span this many to give a slope. */
#define SPREAD_MIN 3

struct batch_tuner {
    pthread_mutex_t lock;
    double slo_ns;
    uint32_t limit;
    _Atomic uint32_t max_batch;
    _Atomic uint64_t wait_ns;
    _Atomic uint32_t replicas;

    /* Under lock. */
    double *exec_avg;       /* [limit + 1]: per size, ns; 0 unseen */
    uint64_t *exec_seen_at; /* [limit + 1] */
    double s, sx, sy;           /* decayed sums of (1, n, exec ns) */
    double slope;               /* the last slope read off spread sizes */
    bool slope_known;
    double a, b;                /* the line of the last period */
    uint64_t period_start;
    uint64_t period_requests;
    uint64_t period_answers;    /* latencies in hist */
    uint64_t last_now;
    uint64_t period_batches, period_full; /* batches, and those at the chosen size */
    uint64_t hist[HIST_BUCKETS];
    double headroom;
    double last_p99_ns;
};

struct batch_tuner *batch_tuner_new(double slo_ms, uint32_t max_batch)
{
    struct batch_tuner *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->exec_avg = calloc((size_t)max_batch + 1, sizeof *t->exec_avg);
    t->exec_seen_at = calloc((size_t)max_batch + 1, sizeof *t->exec_seen_at);
    if (!t->exec_avg || !t->exec_seen_at) {
        batch_tuner_free(t);
        return NULL;
    }
    pthread_mutex_init(&t->lock, NULL);
    t->slo_ns = slo_ms * 1e6;
    t->limit = max_batch;
    t->headroom = HEADROOM_START;
    /* Until it has measured: batches as large as allowed, no wait. The
     * first period's p99 corrects this within BATCH_TUNER_PERIOD_MS. */
    atomic_init(&t->max_batch, max_batch);
    atomic_init(&t->wait_ns, 0);
    atomic_init(&t->replicas, 1);
    return t;
}

void batch_tuner_free(struct batch_tuner *t)
{
    if (!t) return;
    if (t->exec_avg && t->exec_seen_at) pthread_mutex_destroy(&t->lock);
    free(t->exec_avg);
    free(t->exec_seen_at);
    free(t);
}

void batch_tuner_set_replicas(struct batch_tuner *t, uint32_t replicas)
{
    atomic_store_explicit(&t->replicas, replicas ? replicas : 1, memory_order_relaxed);
}

uint32_t batch_tuner_max_batch(const struct batch_tuner *t)
{
    return atomic_load_explicit(&t->max_batch, memory_order_relaxed);
}

uint64_t batch_tuner_wait_ns(const struct batch_tuner *t)
{
    return atomic_load_explicit(&t->wait_ns, memory_order_relaxed);
}

static int bucket_of(double ns)
{
    if (ns <= HIST_FLOOR_NS) return 0;
    int b = (int)(log(ns / HIST_FLOOR_NS) / log(HIST_RATIO)) + 1;
    return b < HIST_BUCKETS ? b : HIST_BUCKETS - 1;
}

static double bucket_top(int b) { return HIST_FLOOR_NS * pow(HIST_RATIO, b); }

static double p99_of(const uint64_t *hist, uint64_t total)
{
    uint64_t rank = (uint64_t)ceil(total * 0.99), seen = 0;
    for (int b = 0; b < HIST_BUCKETS; b++) {
        seen += hist[b];
        if (seen >= rank) return bucket_top(b);
    }
    return bucket_top(HIST_BUCKETS - 1);
}

/* The line a + b n through recent batches, ns. Under lock. Its slope is
 * fitted to the recent average of each size seen in the last FRESH_NS,
 * one point per size, so that many batches of one size weigh as one and
 * a change of cost shows as soon as each size was seen again; only sizes
 * that spread give a slope (a steady load runs batches of nearly one
 * size, and noise would make any slope of them). Otherwise the last slope
 * stands, moved to pass through the recent batches, or before any, their
 * time per request (which never underestimates a larger batch). */
static void fit_line(struct batch_tuner *t, uint64_t now_ns)
{
    double k = 0, kx = 0, ky = 0, kxx = 0, kxy = 0;
    uint32_t lo = 0, hi = 0;
    for (uint32_t n = 1; n <= t->limit; n++) {
        if (t->exec_avg[n] <= 0 || now_ns - t->exec_seen_at[n] >= FRESH_NS) continue;
        if (!lo) lo = n;
        hi = n;
        k += 1, kx += n, ky += t->exec_avg[n], kxx += (double)n * n, kxy += n * t->exec_avg[n];
    }
    if (hi - lo >= SPREAD_MIN) {
        double slope = (kxy - kx * ky / k) / (kxx - kx * kx / k);
        t->slope = slope > 0 ? slope : 0;
        t->slope_known = true;
    }
    if (t->s <= 0) {
        t->a = t->b = 0;
        return;
    }
    double mx = t->sx / t->s, my = t->sy / t->s;
    t->b = t->slope_known ? t->slope : my / mx;
    t->a = my - t->b * mx;
    if (t->a < 0) t->a = 0;
}

/* The predicted execution time of a batch of n, ns: the line, or the
 * size's own recent average where that is longer. Under lock. */
static double predict(const struct batch_tuner *t, uint32_t n, uint64_t now_ns)
{
    double line = t->a + t->b * n;
    if (t->exec_avg[n] > line && now_ns - t->exec_seen_at[n] < FRESH_NS) return t->exec_avg[n];
    return line;
}

/* Closes a period: the AIMD step on the headroom, then the new choice.
 * Under lock. */
static void choose(struct batch_tuner *t, uint64_t now_ns)
{
    uint64_t total = 0;
    for (int b = 0; b < HIST_BUCKETS; b++) total += t->hist[b];
    double p99 = p99_of(t->hist, total);
    t->last_p99_ns = p99;
    uint32_t current = atomic_load_explicit(&t->max_batch, memory_order_relaxed);
    double elapsed = (double)(now_ns - t->period_start);
    double replicas = atomic_load_explicit(&t->replicas, memory_order_relaxed);
    double rate = t->period_requests / elapsed / replicas; /* per replica, per ns */
    /* Most batches full: requests queued past the chosen size, so the
     * replicas did not keep up with it. A miss then comes from the queue,
     * not from the batches' length, and smaller batches would only carry
     * less: the size doubles instead (a backlog drains fastest at the
     * largest batch), and the headroom stays. */
    bool backlog = current < t->limit && t->period_full * 2 > t->period_batches;
    double headroom_before = t->headroom;
    if (p99 > t->slo_ns && !backlog) {
        t->headroom *= MISS_FACTOR;
        if (t->headroom < HEADROOM_MIN) t->headroom = HEADROOM_MIN;
    } else if (p99 < t->slo_ns * WELL_UNDER) {
        t->headroom += HEADROOM_STEP;
        if (t->headroom > BATCH_TUNER_HEADROOM_MAX) t->headroom = BATCH_TUNER_HEADROOM_MAX;
    }
    double budget = t->headroom * t->slo_ns;
    fit_line(t, now_ns);
    /* The largest batch that fits the budget twice... */
    uint32_t best = 1;
    for (uint32_t n = 2; n <= t->limit; n++) {
        if (2 * predict(t, n, now_ns) > budget) break;
        best = n;
    }
    /* ...but never one too small to carry the load with a quarter to
     * spare: below that the queue grows and no latency is met. */
    uint32_t carry = t->limit;
    for (uint32_t n = 1; n <= t->limit; n++)
        if (n >= CARRY_MARGIN * rate * predict(t, n, now_ns)) {
            carry = n;
            break;
        }
    if (best < carry) best = carry;
    if (backlog && best < 2 * current) best = 2 * current < t->limit ? 2 * current : t->limit;
    /* With the same headroom, a size within HOLD of the current one is
     * the model's noise: the choice stays. (A step of the headroom, up or
     * down, is always taken.) */
    if (!backlog && t->headroom == headroom_before &&
        fabs((double)best - current) <= HOLD * current)
        best = current;
    /* The batch a replica that never waits settles at: what arrives while
     * it runs the one before, n = rate x exec(n), with exec(n) = a + b n
     * the line. Past half the chosen size, the load is near what that
     * size carries: fuller batches buy capacity. Below, a wait would only
     * add latency. (Measured from the load and the model, not from how
     * busy the replica was, which the wait itself changes: the choice
     * does not swing from one period to the next.) */
    double greedy = rate * t->b < 1 ? rate * t->a / (1 - rate * t->b) : INFINITY;
    double wait = 0;
    if (greedy > best / 2.0 && rate > 0 && !backlog) {
        double fill = (best - 1) / rate;
        double room = budget - 2 * predict(t, best, now_ns);
        wait = fill < room ? fill : room;
        if (wait < 0) wait = 0;
    }
    atomic_store_explicit(&t->max_batch, best, memory_order_relaxed);
    atomic_store_explicit(&t->wait_ns, (uint64_t)wait, memory_order_relaxed);
    for (int b = 0; b < HIST_BUCKETS; b++) t->hist[b] = 0;
    t->period_start = now_ns;
    t->period_requests = t->period_answers = 0;
    t->period_batches = t->period_full = 0;
}

void batch_tuner_observe(struct batch_tuner *t, size_t n, uint64_t exec_ns, uint64_t now_ns)
{
    if (n == 0) return;
    if (n > t->limit) n = t->limit;
    double exec = (double)exec_ns;
    pthread_mutex_lock(&t->lock);
    /* Threads read their clocks before taking the lock: one read earlier
     * than the last seen counts as the last, so that no time runs back. */
    if (now_ns < t->last_now) now_ns = t->last_now;
    t->last_now = now_ns;
    if (t->period_start == 0) t->period_start = now_ns > exec_ns ? now_ns - exec_ns : 1;
    t->exec_avg[n] = t->exec_avg[n] > 0 && now_ns - t->exec_seen_at[n] < FRESH_NS
                         ? t->exec_avg[n] + SIZE_WEIGHT * (exec - t->exec_avg[n])
                         : exec;
    t->exec_seen_at[n] = now_ns;
    t->s = t->s * FIT_DECAY + 1;
    t->sx = t->sx * FIT_DECAY + (double)n;
    t->sy = t->sy * FIT_DECAY + exec;
    t->period_requests += n;
    t->period_batches++;
    t->period_full += n >= atomic_load_explicit(&t->max_batch, memory_order_relaxed);
    uint64_t elapsed = now_ns - t->period_start;
    bool enough = t->period_answers >= PERIOD_MIN_REQUESTS;
    if ((elapsed >= BATCH_TUNER_PERIOD_MS * 1000000ull && enough) ||
        (elapsed >= PERIOD_MAX_NS && t->period_answers > 0))
        choose(t, now_ns);
    pthread_mutex_unlock(&t->lock);
}

void batch_tuner_latencies(struct batch_tuner *t, const uint64_t *latency_ns, size_t n)
{
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < n; i++) t->hist[bucket_of((double)latency_ns[i])]++;
    t->period_answers += n;
    pthread_mutex_unlock(&t->lock);
}

void batch_tuner_view(struct batch_tuner *t, struct batch_tuner_view *out)
{
    pthread_mutex_lock(&t->lock);
    out->p99_ms = t->last_p99_ns / 1e6;
    out->headroom = t->headroom;
    pthread_mutex_unlock(&t->lock);
    out->max_batch = batch_tuner_max_batch(t);
    out->wait_ms = batch_tuner_wait_ns(t) / 1e6;
    out->slo_ms = t->slo_ns / 1e6;
}
