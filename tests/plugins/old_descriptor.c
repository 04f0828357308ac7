/* A plugin built before the descriptor stated its size: its entry point is
 * written by hand, without SERVE_PLUGIN_DEFINE, so it exports no
 * serve_plugin_descriptor_size, and its descriptor ends at destroy, with
 * other data right after it. The runtime must read none of that data. */
#include <serve/plugin.h>

struct first_descriptor { /* serve_plugin of ABI version 1 as first released */
    uint32_t abi_version;
    const char *name;
    int (*init)(serve_replica *, const serve_config *, void **);
    int (*handle_batch)(void *, serve_request *const *, size_t);
    int (*reconfigure)(void *, const serve_config *);
    void (*destroy)(void *);
};

static int batch(void *state, serve_request *const *reqs, size_t n)
{
    (void)state;
    for (size_t i = 0; i < n; i++) serve_respond(reqs[i], 200, "text/plain", "old", 3);
    return 0;
}

/* The descriptor, then what a newer runtime must not take for new fields. */
static const struct {
    struct first_descriptor d;
    const void *after[8];
} blob = {
    .d = {.abi_version = SERVE_ABI_VERSION, .name = "old_descriptor", .handle_batch = batch},
    .after = {(const void *)1, (const void *)2, (const void *)3, (const void *)4,
              (const void *)5, (const void *)6, (const void *)7, (const void *)8},
};

SERVE_EXPORT const serve_plugin *serve_plugin_entry(void);
SERVE_EXPORT const serve_plugin *serve_plugin_entry(void)
{
    return (const serve_plugin *)(const void *)&blob.d;
}
