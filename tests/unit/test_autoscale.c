/* test_autoscale.c - the autoscaling rule (runtime/autoscale.c): it
 * follows the load after the delays, stays within the bounds, ignores a
 * burst shorter than the delay, and does not flap around the target. */
#include <stdlib.h>

#include "autoscale.h"
#include "unit.h"

#define MS 1000000ull
#define TICK (100 * MS)

static void policy(struct autoscale *a, uint32_t min, uint32_t max, uint32_t start)
{
    struct autoscale_policy p = {.min_replicas = min, .max_replicas = max, .target_ongoing = 2,
                                 .upscale_delay_ns = 1000 * MS, .downscale_delay_ns = 3000 * MS};
    autoscale_init(a, &p, start);
}

/* Feeds `ongoing` every tick from *now for `ms`; returns the first time
 * the target changed (0: it did not), *now advanced. */
static uint64_t feed(struct autoscale *a, double ongoing, uint64_t *now, uint64_t ms)
{
    uint64_t changed = 0, end = *now + ms * MS;
    char why[256];
    for (; *now < end; *now += TICK) {
        uint32_t before = a->target;
        if (autoscale_sample(a, ongoing, *now, why, sizeof why) != before && !changed)
            changed = *now;
    }
    return changed;
}

TEST_IMPL(autoscale_follows_load_after_delays)
{
    struct autoscale a;
    policy(&a, 1, 8, 1);
    uint64_t now = 1000 * MS, start = now;
    ASSERT_EQ(feed(&a, 1, &now, 2000), 0); /* at the target: nothing */
    uint64_t load = now;
    uint64_t up = feed(&a, 12, &now, 3000);
    ASSERT(up >= load + 1000 * MS);     /* not before the up-delay */
    ASSERT(up <= load + 1300 * MS);
    ASSERT_EQ(a.target, 6);             /* ceil(12 / 2), in one decision */
    uint64_t quiet = now;
    uint64_t down = feed(&a, 1, &now, 6000);
    ASSERT(down >= quiet + 3000 * MS);  /* not before the down-delay */
    ASSERT(down <= quiet + 4500 * MS);  /* the window's mean falls within a second */
    ASSERT_EQ(a.target, 1);
    (void)start;
    return 0;
}

TEST_IMPL(autoscale_stays_within_bounds)
{
    struct autoscale a;
    policy(&a, 2, 5, 9); /* a start outside the bounds is clamped */
    ASSERT_EQ(a.target, 5);
    uint64_t now = MS;
    feed(&a, 1000, &now, 5000);
    ASSERT_EQ(a.target, 5);
    feed(&a, 0, &now, 10000);
    ASSERT_EQ(a.target, 2);
    return 0;
}

TEST_IMPL(autoscale_ignores_a_short_burst)
{
    struct autoscale a;
    policy(&a, 1, 8, 2);
    uint64_t now = MS;
    feed(&a, 4, &now, 2000);
    ASSERT_EQ(feed(&a, 30, &now, 800), 0); /* shorter than the 1 s up-delay */
    ASSERT_EQ(feed(&a, 4, &now, 2500), 0); /* nor does its tail, back to 4 */
    ASSERT_EQ(a.target, 2);
    return 0;
}

TEST_IMPL(autoscale_does_not_flap_at_the_target)
{
    struct autoscale a;
    policy(&a, 1, 16, 4);
    uint64_t now = MS;
    char why[256];
    /* 8 ongoing for 4 replicas (the target), +-0.7 of noise per sample,
     * for two minutes: inside the band, so never a change. */
    srand(7);
    for (int i = 0; i < 1200; i++, now += TICK) {
        double noise = (rand() % 1401 - 700) / 1000.0;
        ASSERT_EQ(autoscale_sample(&a, 8 + noise, now, why, sizeof why), 4);
    }
    return 0;
}
