/* loader.h - opens a plugin .so and checks it before anything in it runs. */
#ifndef SERVE_RUNTIME_LOADER_H
#define SERVE_RUNTIME_LOADER_H

#include <stdbool.h>
#include <stddef.h>

#include "serve/plugin.h"

struct plugin_lib {
    void *handle;
    /* The runtime's copy of the plugin's descriptor (see serve_plugin):
     * as many bytes as the plugin's descriptor has, the rest zero, so a
     * field the plugin's header did not have reads as NULL. */
    serve_plugin descriptor;
    const serve_plugin *plugin; /* &descriptor */
};

/* Opens `file`, finds serve_plugin_entry, checks the ABI version, then the
 * descriptor. On failure writes one line naming the plugin to err, as
 * `name` (the path the user gave, where `file` is the server's copy). */
bool plugin_load(const char *file, const char *name, struct plugin_lib *lib, char *err,
                 size_t errlen);
void plugin_unload(struct plugin_lib *lib);

#endif
