/* deployment.c - the declared state and its file (see deployment.h). */
#include "deployment.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mp.h"

#define STATE_VERSION 1

void deployment_free(struct deployment *d)
{
    for (size_t i = 0; i < d->backend_count; i++) backend_spec_free(&d->backends[i]);
    for (size_t i = 0; i < d->endpoint_count; i++) endpoint_spec_free(&d->endpoints[i]);
    free(d->backends);
    free(d->endpoints);
    memset(d, 0, sizeof *d);
}

long deployment_find_backend(const struct deployment *d, const char *name)
{
    for (size_t i = 0; i < d->backend_count; i++)
        if (strcmp(d->backends[i].name, name) == 0) return (long)i;
    return -1;
}

long deployment_find_endpoint(const struct deployment *d, const char *name)
{
    for (size_t i = 0; i < d->endpoint_count; i++)
        if (strcmp(d->endpoints[i].name, name) == 0) return (long)i;
    return -1;
}

static bool write_file_synced(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return false;
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int saved = errno ? errno : EIO;
            close(fd);
            errno = saved;
            return false;
        }
        p += n;
        left -= (size_t)n;
    }
    if (fsync(fd) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return false;
    }
    return close(fd) == 0;
}

bool deployment_save(const struct deployment *d, const char *path, char *err,
                     size_t errlen)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    mp_pack_key(&pk, "version");
    msgpack_pack_int(&pk, STATE_VERSION);
    mp_pack_key(&pk, "backends");
    msgpack_pack_array(&pk, d->backend_count);
    for (size_t i = 0; i < d->backend_count; i++) backend_spec_pack(&pk, &d->backends[i]);
    mp_pack_key(&pk, "endpoints");
    msgpack_pack_array(&pk, d->endpoint_count);
    for (size_t i = 0; i < d->endpoint_count; i++) endpoint_spec_pack(&pk, &d->endpoints[i]);

    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    bool ok = write_file_synced(tmp, sbuf.data, sbuf.size);
    msgpack_sbuffer_destroy(&sbuf);
    if (ok && rename(tmp, path) != 0) ok = false;
    if (!ok) {
        snprintf(err, errlen, "cannot write state file %s: %s", path, strerror(errno));
        unlink(tmp);
        return false;
    }
    /* The rename is durable only once the folder's entry is on disk. */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return true;
}

bool deployment_load(struct deployment *d, const char *path, char *err,
                     size_t errlen)
{
    memset(d, 0, sizeof *d);
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return true;
        snprintf(err, errlen, "state file %s: %s", path, strerror(errno));
        return false;
    }
    char *data = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 65536;
            char *grown = realloc(data, cap);
            if (!grown) break;
            data = grown;
        }
        size_t n = fread(data + len, 1, cap - len, f);
        len += n;
        if (n == 0) break;
    }
    bool read_error = ferror(f);
    fclose(f);
    if (read_error || !data) {
        free(data);
        snprintf(err, errlen, "state file %s: read error", path);
        return false;
    }
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    size_t off = 0;
    char why[512] = "";
    bool ok = msgpack_unpack_next(&msg, data, len, &off) == MSGPACK_UNPACK_SUCCESS &&
              off == len;
    const msgpack_object *root = &msg.data;
    uint64_t version = 0;
    if (!ok) {
        snprintf(why, sizeof why, "not a valid msgpack document (truncated or corrupt)");
    } else if (!mp_as_uint(mp_get(root, "version"), &version) || version != STATE_VERSION) {
        snprintf(why, sizeof why, "unknown state version");
        ok = false;
    }
    const msgpack_object *bs = ok ? mp_get(root, "backends") : NULL;
    const msgpack_object *es = ok ? mp_get(root, "endpoints") : NULL;
    if (ok && (!bs || bs->type != MSGPACK_OBJECT_ARRAY || !es ||
               es->type != MSGPACK_OBJECT_ARRAY)) {
        snprintf(why, sizeof why, "backends and endpoints must be arrays");
        ok = false;
    }
    if (ok) {
        d->backends = calloc(bs->via.array.size + 1, sizeof *d->backends);
        d->endpoints = calloc(es->via.array.size + 1, sizeof *d->endpoints);
        ok = d->backends && d->endpoints;
    }
    for (uint32_t i = 0; ok && i < bs->via.array.size; i++) {
        ok = backend_spec_unpack(&bs->via.array.ptr[i], &d->backends[i], why, sizeof why);
        if (ok) d->backend_count++;
    }
    for (uint32_t i = 0; ok && i < es->via.array.size; i++) {
        ok = endpoint_spec_unpack(&es->via.array.ptr[i], &d->endpoints[i], why, sizeof why);
        if (ok) d->endpoint_count++;
    }
    msgpack_unpacked_destroy(&msg);
    free(data);
    if (!ok) {
        deployment_free(d);
        snprintf(err, errlen, "state file %s is corrupt: %s (the file was left as it is)",
                 path, why);
    }
    return ok;
}
