/* plugin_path.c - plugin name resolution (see plugin_path.h). */
#include "plugin_path.h"

#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SERVE_PLUGIN_DIR
#define SERVE_PLUGIN_DIR "/usr/local/lib/serve/plugins"
#endif
/* The same folder relative to the installed binary's bin/, so that an
 * install moved elsewhere (or made with another prefix) finds its plugins. */
#ifndef SERVE_PLUGIN_RELDIR
#define SERVE_PLUGIN_RELDIR "lib/serve/plugins"
#endif

static bool try_dir(const char *dir, const char *name, char *out, size_t outlen)
{
    if (!*dir) return false;
    snprintf(out, outlen, "%s/%s.so", dir, name);
    return access(out, R_OK) == 0;
}

bool plugin_path_resolve(const char *plugin, char *out, size_t outlen, char *err,
                         size_t errlen)
{
    size_t n = strlen(plugin);
    if (n == 0) {
        snprintf(err, errlen, "plugin name is empty");
        return false;
    }
    if (strchr(plugin, '/') || (n > 3 && strcmp(plugin + n - 3, ".so") == 0)) {
        if (plugin[0] == '/') {
            snprintf(out, outlen, "%s", plugin);
        } else {
            char cwd[PATH_MAX];
            if (!getcwd(cwd, sizeof cwd)) {
                snprintf(err, errlen, "plugin %s: cannot read the current directory", plugin);
                return false;
            }
            snprintf(out, outlen, "%s/%s", cwd, plugin);
        }
        return true;
    }
    const char *env = getenv("SERVE_PLUGIN_PATH");
    if (env) {
        char *dirs = strdup(env), *save = NULL;
        for (char *d = dirs ? strtok_r(dirs, ":", &save) : NULL; d; d = strtok_r(NULL, ":", &save))
            if (try_dir(d, plugin, out, outlen)) {
                free(dirs);
                return true;
            }
        free(dirs);
    }
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char build_dir[PATH_MAX] = "", install_dir[PATH_MAX] = "";
    if (len > 0) {
        exe[len] = '\0';
        char *bin = dirname(exe); /* absolute and free of "..": the kernel's path */
        snprintf(build_dir, sizeof build_dir, "%s/plugins", bin);
        if (try_dir(build_dir, plugin, out, outlen)) return true;
        char *prefix = dirname(bin);
        snprintf(install_dir, sizeof install_dir, "%s%s%s", prefix,
                 strcmp(prefix, "/") == 0 ? "" : "/", SERVE_PLUGIN_RELDIR);
        if (try_dir(install_dir, plugin, out, outlen)) return true;
    }
    if (try_dir(SERVE_PLUGIN_DIR, plugin, out, outlen)) return true;
    /* The folders looked in, each named once (an install in its configured
     * prefix has the binary-relative folder equal to the configured one). */
    const char *dirs[] = {build_dir, install_dir, SERVE_PLUGIN_DIR};
    char where[3 * PATH_MAX + 16] = "";
    for (size_t i = 0; i < 3; i++) {
        bool seen = !*dirs[i];
        for (size_t j = 0; j < i && !seen; j++) seen = strcmp(dirs[i], dirs[j]) == 0;
        if (seen) continue;
        size_t used = strlen(where);
        snprintf(where + used, sizeof where - used, "%s%s", used ? ", " : "", dirs[i]);
    }
    snprintf(err, errlen, "plugin %s not found: looked for %s.so in SERVE_PLUGIN_PATH (%s) and in %s",
             plugin, plugin, env ? env : "unset", where);
    return false;
}
