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

/* How fast the cost model forgets: per batch, for the line; per batch of
 * that size, for a size's own average. A size's average counts for
 * FRESH_NS after it was last seen; after that the line decides. */
#define FIT_DECAY 0.97
#define SIZE_WEIGHT 0.3
#define FRESH_NS 1000000000ull

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
    double s, sx, sy, sxx, sxy; /* decayed sums of (n, exec ns) */
    uint64_t period_start;
    uint64_t period_requests;
    double period_busy_ns;
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

/* The predicted execution time of a batch of n, ns. Under lock. */
static double predict(const struct batch_tuner *t, uint32_t n, uint64_t now_ns)
{
    double fit;
    double var = t->s > 0 ? t->sxx / t->s - (t->sx / t->s) * (t->sx / t->s) : 0;
    if (t->s <= 0) {
        fit = 0;
    } else if (var < 0.25) {
        /* One size seen (a steady load): its time per request, scaled. */
        fit = t->sy / t->sx * n;
    } else {
        double slope = (t->sxy - t->sx * t->sy / t->s) / (t->sxx - t->sx * t->sx / t->s);
        if (slope < 0) slope = 0;
        double intercept = (t->sy - slope * t->sx) / t->s;
        if (intercept < 0) intercept = 0;
        fit = intercept + slope * n;
    }
    if (t->exec_avg[n] > 0 && now_ns - t->exec_seen_at[n] < FRESH_NS && t->exec_avg[n] > fit)
        return t->exec_avg[n];
    return fit;
}

/* Closes a period: the AIMD step on the headroom, then the new choice.
 * Under lock. */
static void choose(struct batch_tuner *t, uint64_t now_ns)
{
    uint64_t total = 0;
    for (int b = 0; b < HIST_BUCKETS; b++) total += t->hist[b];
    double p99 = p99_of(t->hist, total);
    t->last_p99_ns = p99;
    if (p99 > t->slo_ns) {
        t->headroom *= MISS_FACTOR;
        if (t->headroom < HEADROOM_MIN) t->headroom = HEADROOM_MIN;
    } else if (p99 < t->slo_ns * WELL_UNDER) {
        t->headroom += HEADROOM_STEP;
        if (t->headroom > BATCH_TUNER_HEADROOM_MAX) t->headroom = BATCH_TUNER_HEADROOM_MAX;
    }
    double budget = t->headroom * t->slo_ns;
    uint32_t best = 1;
    for (uint32_t n = 2; n <= t->limit; n++) {
        if (2 * predict(t, n, now_ns) > budget) break;
        best = n;
    }
    double elapsed = (double)(now_ns - t->period_start);
    double replicas = atomic_load_explicit(&t->replicas, memory_order_relaxed);
    double rate = t->period_requests / elapsed / replicas; /* per replica, per ns */
    double busy = t->period_busy_ns / elapsed / replicas;
    double wait = 0;
    if (busy > 0.5 && rate > 0) {
        double fill = (best - 1) / rate;
        double room = budget - 2 * predict(t, best, now_ns);
        wait = fill < room ? fill : room;
        if (wait < 0) wait = 0;
    }
    atomic_store_explicit(&t->max_batch, best, memory_order_relaxed);
    atomic_store_explicit(&t->wait_ns, (uint64_t)wait, memory_order_relaxed);
    for (int b = 0; b < HIST_BUCKETS; b++) t->hist[b] = 0;
    t->period_start = now_ns;
    t->period_requests = 0;
    t->period_busy_ns = 0;
}

void batch_tuner_observe(struct batch_tuner *t, size_t n, uint64_t queued_ns, uint64_t exec_ns,
                         uint64_t now_ns)
{
    if (n == 0) return;
    if (n > t->limit) n = t->limit;
    double exec = (double)exec_ns;
    pthread_mutex_lock(&t->lock);
    if (t->period_start == 0) t->period_start = now_ns > exec_ns ? now_ns - exec_ns : 1;
    t->exec_avg[n] = t->exec_avg[n] > 0 && now_ns - t->exec_seen_at[n] < FRESH_NS
                         ? t->exec_avg[n] + SIZE_WEIGHT * (exec - t->exec_avg[n])
                         : exec;
    t->exec_seen_at[n] = now_ns;
    t->s = t->s * FIT_DECAY + 1;
    t->sx = t->sx * FIT_DECAY + (double)n;
    t->sy = t->sy * FIT_DECAY + exec;
    t->sxx = t->sxx * FIT_DECAY + (double)n * (double)n;
    t->sxy = t->sxy * FIT_DECAY + (double)n * exec;
    t->hist[bucket_of((double)queued_ns + exec)] += n;
    t->period_requests += n;
    t->period_busy_ns += exec;
    uint64_t elapsed = now_ns - t->period_start;
    if ((elapsed >= BATCH_TUNER_PERIOD_MS * 1000000ull &&
         t->period_requests >= PERIOD_MIN_REQUESTS) ||
        elapsed >= PERIOD_MAX_NS)
        choose(t, now_ns);
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
