/* sim - a simulated model for load tests and batching checks. A batch of n
 * takes base_us + per_item_us x n microseconds (config keys, default 0) and
 * each request is answered {"batch_size": n, "replica": R, "index": i}.
 * Both keys may change while it runs (reconfigure). */
#include <errno.h>
#include <serve/plugin.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>

struct sim {
    long base_us;
    long per_item_us;
    int replica;
};

static int read_us(serve_replica *replica, const serve_config *config, const char *key,
                   long *out)
{
    int64_t us;
    if (serve_config_int(config, key, 0, &us) != SERVE_OK) return -1; /* its reason is init's */
    if (us < 0 || us > 600000000) {
        serve_replica_fail(replica, "config %s=%lld: expected microseconds, 0..600000000", key,
                           (long long)us);
        return -1;
    }
    *out = (long)us;
    return 0;
}

static int sim_init(serve_replica *replica, const serve_config *config, void **state)
{
    struct sim *s = calloc(1, sizeof *s);
    if (!s) {
        serve_replica_fail(replica, "out of memory");
        return -1;
    }
    if (read_us(replica, config, "base_us", &s->base_us) != 0 ||
        read_us(replica, config, "per_item_us", &s->per_item_us) != 0) {
        free(s);
        return -1;
    }
    s->replica = serve_replica_index(replica);
    *state = s;
    return 0;
}

/* The simulated cost is slept to the microsecond: without this, the
 * kernel's default timer slack (50 us) lengthens every batch, and a
 * benchmark against the ceiling base_us + per_item_us x n would count the
 * kernel's rounding as the server's overhead. Set once per thread. */
static _Thread_local int precise_sleep;

static void sleep_us(long us)
{
    if (us <= 0) return;
    if (!precise_sleep) {
        prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
        precise_sleep = 1;
    }
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += us / 1000000;
    deadline.tv_nsec += (us % 1000000) * 1000;
    if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, NULL) == EINTR) {
    }
}

static int sim_handle_batch(void *state, serve_request *const *requests, size_t n)
{
    struct sim *s = state;
    sleep_us(s->base_us + s->per_item_us * (long)n);
    for (size_t i = 0; i < n; i++) {
        char body[96];
        int len = snprintf(body, sizeof body, "{\"batch_size\": %zu, \"replica\": %d, \"index\": %zu}",
                           n, s->replica, i);
        serve_respond(requests[i], 200, "application/json", body, (size_t)len);
    }
    return 0;
}

/* A new cost between two batches: how a benchmark changes the model's
 * cost under load (serve update-backend NAME --config per_item_us=...). */
static int sim_reconfigure(void *state, const serve_config *config)
{
    struct sim *s = state;
    int64_t base, per_item;
    if (serve_config_int(config, "base_us", 0, &base) != SERVE_OK ||
        serve_config_int(config, "per_item_us", 0, &per_item) != SERVE_OK || base < 0 ||
        base > 600000000 || per_item < 0 || per_item > 600000000)
        return -1;
    s->base_us = (long)base;
    s->per_item_us = (long)per_item;
    return 0;
}

static void sim_destroy(void *state) { free(state); }

static const serve_plugin sim_plugin = {
    .abi_version = SERVE_ABI_VERSION,
    .name = "sim",
    .init = sim_init,
    .handle_batch = sim_handle_batch,
    .reconfigure = sim_reconfigure,
    .destroy = sim_destroy,
};

SERVE_PLUGIN_DEFINE(sim_plugin)
