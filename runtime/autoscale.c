/* autoscale.c - the autoscaling decision rule (autoscale.h). */
#include "autoscale.h"

#include <math.h>
#include <stdio.h>

/* How far above (or below) the target per replica the load must sit
 * before it counts as wanting a change: the hysteresis band. */
#define TOLERANCE 0.1

static uint32_t clamp(const struct autoscale_policy *p, double n)
{
    if (n < p->min_replicas) return p->min_replicas;
    if (n > p->max_replicas) return p->max_replicas;
    return (uint32_t)n;
}

void autoscale_init(struct autoscale *a, const struct autoscale_policy *policy, uint32_t target)
{
    *a = (struct autoscale){.policy = *policy};
    a->target = clamp(policy, target);
}

double autoscale_mean_ongoing(const struct autoscale *a, uint64_t now_ns)
{
    double sum = 0;
    size_t n = 0;
    for (size_t k = 0; k < a->ring_count; k++) {
        size_t i = (a->ring_next + AUTOSCALE_SAMPLES - 1 - k) % AUTOSCALE_SAMPLES;
        if (k > 0 && now_ns - a->ring[i].at > AUTOSCALE_WINDOW_MS * 1000000ull) break;
        sum += a->ring[i].ongoing;
        n++;
    }
    return n ? sum / (double)n : 0;
}

uint32_t autoscale_sample(struct autoscale *a, double ongoing, uint64_t now_ns, char *why,
                          size_t why_len)
{
    const struct autoscale_policy *p = &a->policy;
    a->ring[a->ring_next] = (struct autoscale_point){now_ns, ongoing};
    a->ring_next = (a->ring_next + 1) % AUTOSCALE_SAMPLES;
    if (a->ring_count < AUTOSCALE_SAMPLES) a->ring_count++;
    /* Each sample says whether it wants a change; the count a decision
     * moves to is the window's mean, so one odd sample sets neither. */
    bool up = ongoing > a->target * p->target_ongoing * (1 + TOLERANCE) &&
              a->target < p->max_replicas;
    bool down = ongoing < (a->target - 1.0) * p->target_ongoing * (1 - TOLERANCE) &&
                a->target > p->min_replicas;
    if (!up) a->want_up_since = 0;
    else if (!a->want_up_since) a->want_up_since = now_ns;
    if (!down) a->want_down_since = 0;
    else if (!a->want_down_since) a->want_down_since = now_ns;

    bool go = (up && now_ns - a->want_up_since >= p->upscale_delay_ns) ||
              (down && now_ns - a->want_down_since >= p->downscale_delay_ns);
    if (!go) return a->target;
    double mean = autoscale_mean_ongoing(a, now_ns);
    uint32_t want = clamp(p, ceil(mean / p->target_ongoing - 1e-9));
    if (up ? want <= a->target : want >= a->target) return a->target; /* the mean disagrees */
    uint64_t since = up ? a->want_up_since : a->want_down_since;
    snprintf(why, why_len, "%.1f ongoing requests (mean of the last %d ms) for %.1f s, target %g "
             "per replica", mean, AUTOSCALE_WINDOW_MS, (now_ns - since) / 1e9, p->target_ongoing);
    a->target = want;
    a->want_up_since = a->want_down_since = 0;
    return want;
}
