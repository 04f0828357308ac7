/* plugin_path.h - turns what the user typed as PLUGIN into an absolute path.
 *
 * A value with a '/' or ending in ".so" is a path (made absolute against the
 * current directory). A bare name NAME is looked up as NAME.so in each folder
 * of SERVE_PLUGIN_PATH, then in the plugins/ folder beside the running serve
 * binary (the build tree), then in the installed plugin folder. */
#ifndef SERVE_RUNTIME_PLUGIN_PATH_H
#define SERVE_RUNTIME_PLUGIN_PATH_H

#include <stdbool.h>
#include <stddef.h>

bool plugin_path_resolve(const char *plugin, char *out, size_t outlen, char *err,
                         size_t errlen);

#endif
