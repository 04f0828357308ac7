/* autoscale.h - how many replicas a backend should run: the decision rule
 * of autoscaling, apart from the machinery that starts and drains them
 * (backend.c) and the clock that samples it (the control thread).
 *
 * Fed a sample of the ongoing requests (queued + executing) every tick, it
 * moves its target toward ceil(ongoing / target_ongoing) within the bounds:
 * - up only once every sample for upscale_delay_s wanted more replicas
 *   (more than 10 % above the target per replica), down only once every
 *   sample for downscale_delay_s would have left even one replica fewer
 *   more than 10 % below it: a load at the target sits inside this band
 *   and changes nothing (no flapping), and a burst shorter than the delay
 *   changes nothing either;
 * - the count it then moves to is ceil(mean / target_ongoing), the mean
 *   over the last AUTOSCALE_WINDOW_MS, so one odd sample does not set it;
 * - one decision at a time: after each, both delays start again.
 * Pure: no threads, no clock of its own. */
#ifndef SERVE_RUNTIME_AUTOSCALE_H
#define SERVE_RUNTIME_AUTOSCALE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTOSCALE_WINDOW_MS 1000
#define AUTOSCALE_SAMPLES 64 /* ring of samples; the window needs at most this many */

struct autoscale_policy {
    uint32_t min_replicas, max_replicas;
    double target_ongoing;
    uint64_t upscale_delay_ns, downscale_delay_ns;
};

struct autoscale {
    struct autoscale_policy policy;
    uint32_t target;            /* the count decided last */
    uint64_t want_up_since;     /* 0: the last sample did not want more */
    uint64_t want_down_since;   /* 0: the last sample did not want fewer */
    struct autoscale_point {
        uint64_t at;
        double ongoing;
    } ring[AUTOSCALE_SAMPLES];
    size_t ring_next, ring_count;
};

/* Starts at `target` (clamped into the bounds). */
void autoscale_init(struct autoscale *a, const struct autoscale_policy *policy, uint32_t target);

/* One sample at now_ns. Returns the new target when this sample decides a
 * change (writing why into `why`), else the current one. */
uint32_t autoscale_sample(struct autoscale *a, double ongoing, uint64_t now_ns, char *why,
                          size_t why_len);

/* The mean ongoing requests over the window (0 before any sample). */
double autoscale_mean_ongoing(const struct autoscale *a, uint64_t now_ns);

#endif
