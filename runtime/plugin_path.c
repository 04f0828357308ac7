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

/* The folders a bare name is looked up in, in order, each named once: an
 * install in its configured prefix has the binary-relative folder equal to
 * the configured one, and SERVE_PLUGIN_PATH may repeat either. */
#define MAX_FOLDERS 32

struct folders {
    char *list[MAX_FOLDERS];
    size_t count;
};

static void add_folder(struct folders *f, const char *dir)
{
    if (!*dir || f->count == MAX_FOLDERS) return;
    for (size_t i = 0; i < f->count; i++)
        if (strcmp(f->list[i], dir) == 0) return;
    char *copy = strdup(dir);
    if (copy) f->list[f->count++] = copy;
}

static void collect_folders(struct folders *f)
{
    const char *env = getenv("SERVE_PLUGIN_PATH");
    char *dirs = env ? strdup(env) : NULL, *save = NULL;
    for (char *d = dirs ? strtok_r(dirs, ":", &save) : NULL; d; d = strtok_r(NULL, ":", &save))
        add_folder(f, d);
    free(dirs);
    char exe[PATH_MAX], dir[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = '\0';
        char *bin = dirname(exe); /* absolute and free of "..": the kernel's path */
        snprintf(dir, sizeof dir, "%s/plugins", bin); /* the build tree */
        add_folder(f, dir);
        char *prefix = dirname(bin); /* the install beside the binary, wherever it moved */
        snprintf(dir, sizeof dir, "%s%s%s", prefix, strcmp(prefix, "/") == 0 ? "" : "/",
                 SERVE_PLUGIN_RELDIR);
        add_folder(f, dir);
    }
    add_folder(f, SERVE_PLUGIN_DIR);
}

/* One spelling per file for status and logs: the folder without "." or
 * ".." (its real path, where it exists); the file name as given, so that a
 * link such as current.so keeps its name. */
static void canonical_folder(char *path, size_t len)
{
    char *slash = strrchr(path, '/');
    if (!slash || slash == path) return;
    *slash = '\0';
    char real[PATH_MAX];
    bool ok = realpath(path, real) != NULL;
    *slash = '/';
    if (!ok) return;
    char joined[PATH_MAX + 256];
    snprintf(joined, sizeof joined, "%s%s", strcmp(real, "/") == 0 ? "" : real, slash);
    if (strlen(joined) < len) memcpy(path, joined, strlen(joined) + 1);
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
        canonical_folder(out, outlen);
        return true;
    }
    struct folders f = {.count = 0};
    collect_folders(&f);
    bool found = false;
    for (size_t i = 0; i < f.count && !found; i++) {
        snprintf(out, outlen, "%s/%s.so", f.list[i], plugin);
        found = access(out, R_OK) == 0;
    }
    if (!found) {
        int used = snprintf(err, errlen, "plugin %s not found: looked for %s.so in", plugin, plugin);
        for (size_t i = 0; i < f.count && used >= 0 && (size_t)used < errlen; i++)
            used += snprintf(err + used, errlen - (size_t)used, "%s %s", i ? "," : "", f.list[i]);
        if (!getenv("SERVE_PLUGIN_PATH") && used >= 0 && (size_t)used < errlen)
            snprintf(err + used, errlen - (size_t)used, " (SERVE_PLUGIN_PATH is unset)");
    }
    for (size_t i = 0; i < f.count; i++) free(f.list[i]);
    return found;
}
