/* model_one - the first model of the composition example: logs the data it
 * got and answers a random score in [0, 1) as {"score": S}. */
#include <serve/plugin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct model_one {
    unsigned seed;              /* per replica; only its worker uses it */
    const serve_replica *replica;
};

static int model_one_init(serve_replica *replica, const serve_config *config, void **state)
{
    struct model_one *m = calloc(1, sizeof *m);
    if (!m) {
        serve_replica_fail(replica, "out of memory");
        return -1;
    }
    int64_t seed;
    if (serve_config_int(config, "seed", -1, &seed) != SERVE_OK) { /* its reason is init's */
        free(m);
        return -1;
    }
    m->seed = seed >= 0 ? (unsigned)seed
                        : (unsigned)time(NULL) ^ (unsigned)serve_replica_index(replica);
    m->replica = replica;
    *state = m;
    return 0;
}

static int model_one_batch(void *state, serve_request *const *requests, size_t n)
{
    struct model_one *m = state;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *data = serve_request_body(requests[i], &len);
        serve_log(m->replica, SERVE_LOG_INFO, "model_one got %.*s", (int)(len > 200 ? 200 : len),
                  data);
        double score = (double)rand_r(&m->seed) / ((double)RAND_MAX + 1.0);
        char body[64];
        int blen = snprintf(body, sizeof body, "{\"score\": %.6f}", score);
        serve_respond(requests[i], 200, "application/json", body, (size_t)blen);
    }
    return 0;
}

static void model_one_destroy(void *state) { free(state); }

static const serve_plugin model_one = {
    .abi_version = SERVE_ABI_VERSION,
    .name = "model_one",
    .init = model_one_init,
    .handle_batch = model_one_batch,
    .destroy = model_one_destroy,
};

SERVE_PLUGIN_DEFINE(model_one)
