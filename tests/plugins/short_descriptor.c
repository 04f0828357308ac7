/* A descriptor that says it is smaller than the first one of its ABI
 * version: refused before any of its fields is used. */
#include <serve/plugin.h>

static const serve_plugin descriptor = {.abi_version = SERVE_ABI_VERSION, .name = "short"};

SERVE_EXPORT extern const uint32_t serve_plugin_descriptor_size;
SERVE_EXPORT const uint32_t serve_plugin_descriptor_size = 8;
SERVE_EXPORT const serve_plugin *serve_plugin_entry(void);
SERVE_EXPORT const serve_plugin *serve_plugin_entry(void) { return &descriptor; }
