/* loader.h - opens a plugin .so and checks it before anything in it runs. */
#ifndef SERVE_RUNTIME_LOADER_H
#define SERVE_RUNTIME_LOADER_H

#include <stdbool.h>
#include <stddef.h>

#include "serve/plugin.h"

struct plugin_lib {
    void *handle;
    const serve_plugin *plugin;
};

/* Opens `file`, finds serve_plugin_entry, checks the ABI version, then the
 * descriptor. On failure writes one line naming the plugin to err, as
 * `name` (the path the user gave, where `file` is the server's copy). */
bool plugin_load(const char *file, const char *name, struct plugin_lib *lib, char *err,
                 size_t errlen);
void plugin_unload(struct plugin_lib *lib);

#endif
