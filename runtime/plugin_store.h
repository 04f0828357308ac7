/* plugin_store.h - the server's private copies of plugin files.
 *
 * A backend runs the plugin file as it was when the control plane accepted
 * it, not whatever sits at its path later: the file is copied into the
 * state dir's plugins/ folder under a name made of its content digest, and
 * the copy is what replicas load. So
 *   - rebuilding a plugin at the same path and updating loads the new code
 *     (a new digest is a new file for dlopen), and the same bytes again are
 *     "no changes";
 *   - rewriting the running file in place (cp new.so plugin.so) never
 *     touches the code replicas have mapped (it would SIGBUS them);
 *   - a restart loads what the state file names, the acknowledged code.
 * Only the control thread imports and sweeps. */
#ifndef SERVE_RUNTIME_PLUGIN_STORE_H
#define SERVE_RUNTIME_PLUGIN_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include "deployment.h"
#include "spec.h"

/* Gives spec a private copy of spec->plugin (plugin_file, plugin_digest)
 * in store_dir (created when missing), unless it has one that still exists.
 * On failure one line naming spec->plugin in err. */
bool plugin_store_import(const char *store_dir, struct backend_spec *spec, char *err,
                         size_t errlen);

/* Removes the copies in store_dir that no backend of d names. */
void plugin_store_sweep(const char *store_dir, const struct deployment *d);

#endif
