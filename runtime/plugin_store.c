/* plugin_store.c - private copies of plugin files, named by content. */
#include "plugin_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* FNV-1a, 64 bits: an identity for builds of one plugin, not a defence
 * against someone forging a collision (whoever can write the plugin file
 * runs code in the server anyway). */
static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static bool read_whole(const char *path, unsigned char **data, size_t *len, char *err,
                       size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errlen, "plugin %s: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return false;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "plugin %s: not a regular file", path);
        close(fd);
        return false;
    }
    /* The size may change under us (a build writing the file): read to the
     * end, whatever it is then. */
    size_t cap = st.st_size > 0 ? (size_t)st.st_size : 4096, n = 0;
    unsigned char *buf = malloc(cap);
    for (;;) {
        if (!buf) break;
        if (n == cap) {
            unsigned char *grown = realloc(buf, cap * 2);
            if (!grown) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
            cap *= 2;
        }
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            snprintf(err, errlen, "plugin %s: %s", path, strerror(errno));
            free(buf);
            close(fd);
            return false;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    close(fd);
    if (!buf) {
        snprintf(err, errlen, "plugin %s: out of memory", path);
        return false;
    }
    *data = buf;
    *len = n;
    return true;
}

static bool write_copy(const char *path, const unsigned char *data, size_t len)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0500);
    if (fd < 0) return false;
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, data + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        done += (size_t)n;
    }
    bool ok = done == len && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    /* rename: a reader (a replica starting) sees the whole file or none. */
    if (ok) ok = rename(tmp, path) == 0;
    if (!ok) unlink(tmp);
    return ok;
}

bool plugin_store_import(const char *store_dir, struct backend_spec *spec, char *err,
                         size_t errlen)
{
    if (!spec->plugin) return true; /* a remote backend: nothing to load */
    if (spec->plugin_file && access(spec->plugin_file, R_OK) == 0) return true;
    unsigned char *data;
    size_t len;
    if (!read_whole(spec->plugin, &data, &len, err, errlen)) return false;
    char digest[17];
    snprintf(digest, sizeof digest, "%016" PRIx64, fnv1a(0xcbf29ce484222325ull ^ len, data, len));
    const char *base = strrchr(spec->plugin, '/');
    base = base ? base + 1 : spec->plugin;
    char path[4200];
    snprintf(path, sizeof path, "%s/%s-%s", store_dir, digest, base);
    bool ok = true;
    if (access(path, R_OK) != 0) {
        if (mkdir(store_dir, 0700) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "plugin %s: cannot make %s: %s", spec->plugin, store_dir,
                     strerror(errno));
            ok = false;
        } else if (!write_copy(path, data, len)) {
            snprintf(err, errlen, "plugin %s: cannot copy it to %s: %s", spec->plugin, path,
                     strerror(errno));
            ok = false;
        }
    }
    free(data);
    if (!ok) return false;
    char *file = strdup(path), *dig = strdup(digest);
    if (!file || !dig) {
        free(file);
        free(dig);
        snprintf(err, errlen, "out of memory");
        return false;
    }
    free(spec->plugin_file);
    free(spec->plugin_digest);
    spec->plugin_file = file;
    spec->plugin_digest = dig;
    return true;
}

void plugin_store_sweep(const char *store_dir, const struct deployment *d)
{
    DIR *dir = opendir(store_dir);
    if (!dir) return;
    size_t dirlen = strlen(store_dir);
    for (struct dirent *e; (e = readdir(dir)) != NULL;) {
        if (e->d_name[0] == '.') continue;
        bool used = false;
        for (size_t i = 0; i < d->backend_count && !used; i++) {
            const char *f = d->backends[i].plugin_file;
            used = f && strncmp(f, store_dir, dirlen) == 0 && f[dirlen] == '/' &&
                   strcmp(f + dirlen + 1, e->d_name) == 0;
        }
        if (!used) unlinkat(dirfd(dir), e->d_name, 0);
    }
    closedir(dir);
}
