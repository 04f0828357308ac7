/* A plugin built against a newer header whose descriptor has fields this
 * runtime does not know: it states a larger size; the runtime takes the
 * fields it knows and ignores the rest. */
#include <serve/plugin.h>

static int batch(void *state, serve_request *const *reqs, size_t n)
{
    (void)state;
    for (size_t i = 0; i < n; i++) serve_respond(reqs[i], 200, "text/plain", "newer", 5);
    return 0;
}

static const struct {
    serve_plugin known;
    void (*unknown[4])(void); /* fields of a later header */
} descriptor = {.known = {.abi_version = SERVE_ABI_VERSION, .name = "newer_descriptor",
                          .handle_batch = batch}};

SERVE_EXPORT extern const uint32_t serve_plugin_descriptor_size;
SERVE_EXPORT const uint32_t serve_plugin_descriptor_size = (uint32_t)sizeof descriptor;
SERVE_EXPORT const serve_plugin *serve_plugin_entry(void);
SERVE_EXPORT const serve_plugin *serve_plugin_entry(void) { return &descriptor.known; }
