/* loader.c - plugin loading with a clear error for every failure. */
#include "loader.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crash_report.h"

/* Distinguishes "missing" and "not a shared object" before dlopen, whose
 * messages for those cases are long and vary between libc versions. */
static bool precheck(const char *file, const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat(file, &st) != 0) {
        snprintf(err, errlen, "plugin %s: %s", path, strerror(errno));
        return false;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "plugin %s: not a regular file", path);
        return false;
    }
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "plugin %s: %s", path, strerror(errno));
        return false;
    }
    unsigned char magic[4] = {0};
    ssize_t n = read(fd, magic, sizeof magic);
    close(fd);
    if (n != 4 || memcmp(magic, "\x7f" "ELF", 4) != 0) {
        snprintf(err, errlen, "plugin %s: not a shared object (no ELF header)", path);
        return false;
    }
    return true;
}

/* The descriptor of ABI version 1 as first released: up to destroy. A
 * plugin without serve_plugin_descriptor_size has exactly this much. */
#define DESCRIPTOR_FIRST_SIZE (offsetof(serve_plugin, destroy) + sizeof(void (*)(void *)))

bool plugin_load(const char *file, const char *path, struct plugin_lib *lib, char *err,
                 size_t errlen)
{
    memset(lib, 0, sizeof *lib);
    if (!precheck(file, path, err, errlen)) return false;
    /* RTLD_LOCAL keeps each plugin's own symbols to itself; RTLD_NOW reports
     * an unresolved symbol here rather than at the first request. */
    void *handle = dlopen(file, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *why = dlerror();
        const char *missing = why ? strstr(why, "undefined symbol: serve_") : NULL;
        if (missing)
            /* A function of the SDK this server lacks: the plugin was built
             * against a newer header. */
            snprintf(err, errlen,
                     "plugin %s: needs a newer server: it calls %s, which this server (SDK ABI "
                     "version %u) does not have",
                     path, missing + strlen("undefined symbol: "), SERVE_ABI_VERSION);
        else
            snprintf(err, errlen, "plugin %s: cannot load: %s", path, why);
        return false;
    }
    dlerror();
    void *sym = dlsym(handle, SERVE_PLUGIN_ENTRY_SYMBOL);
    if (!sym) {
        snprintf(err, errlen, "plugin %s: missing symbol %s", path,
                 SERVE_PLUGIN_ENTRY_SYMBOL);
        dlclose(handle);
        return false;
    }
    serve_plugin_entry_fn entry;
    memcpy(&entry, &sym, sizeof entry); /* object pointer to function pointer */
    const serve_plugin *plugin = entry();
    /* How much of the descriptor the plugin has: what its header defined. */
    const uint32_t *size_sym = dlsym(handle, SERVE_PLUGIN_SIZE_SYMBOL);
    size_t size = size_sym ? *size_sym : DESCRIPTOR_FIRST_SIZE;
    const char *why = NULL;
    if (!plugin) {
        why = "serve_plugin_entry returned NULL";
    } else if (plugin->abi_version != SERVE_ABI_VERSION) {
        snprintf(err, errlen,
                 "plugin %s: built for SDK ABI version %u, this server speaks version %u",
                 path, plugin->abi_version, SERVE_ABI_VERSION);
        dlclose(handle);
        return false;
    } else if (size < DESCRIPTOR_FIRST_SIZE) {
        why = "descriptor smaller than the first one of this ABI version";
    } else if (!plugin->name || !*plugin->name) {
        why = "descriptor has no name";
    } else if (!plugin->handle_batch) {
        why = "descriptor has no handle_batch callback";
    }
    if (why) {
        snprintf(err, errlen, "plugin %s: %s", path, why);
        dlclose(handle);
        return false;
    }
    lib->handle = handle;
    memcpy(&lib->descriptor, plugin, size < sizeof *plugin ? size : sizeof *plugin);
    lib->plugin = &lib->descriptor;
    crash_report_note_plugin(file, path); /* a crash names the plugin as the user does */
    return true;
}

void plugin_unload(struct plugin_lib *lib)
{
    if (lib->handle) dlclose(lib->handle);
    memset(lib, 0, sizeof *lib);
}
