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
#include "mp_bounds.h"
#include "state_dir.h"

#define STATE_VERSION 1

void deployment_free(struct deployment *d)
{
    for (size_t i = 0; i < d->backend_count; i++) backend_spec_free(&d->backends[i]);
    for (size_t i = 0; i < d->endpoint_count; i++) endpoint_spec_free(&d->endpoints[i]);
    free(d->backends);
    free(d->endpoints);
    memset(d, 0, sizeof *d);
}

bool deployment_add_backend(struct deployment *d, struct backend_spec *b)
{
    struct backend_spec *grown = realloc(d->backends, (d->backend_count + 1) * sizeof *grown);
    if (!grown) return false;
    d->backends = grown;
    d->backends[d->backend_count++] = *b;
    memset(b, 0, sizeof *b);
    return true;
}

bool deployment_add_endpoint(struct deployment *d, struct endpoint_spec *e)
{
    struct endpoint_spec *grown = realloc(d->endpoints, (d->endpoint_count + 1) * sizeof *grown);
    if (!grown) return false;
    d->endpoints = grown;
    d->endpoints[d->endpoint_count++] = *e;
    memset(e, 0, sizeof *e);
    return true;
}

void deployment_remove_backend(struct deployment *d, size_t i)
{
    backend_spec_free(&d->backends[i]);
    memmove(&d->backends[i], &d->backends[i + 1], (d->backend_count - i - 1) * sizeof *d->backends);
    d->backend_count--;
}

void deployment_remove_endpoint(struct deployment *d, size_t i)
{
    endpoint_spec_free(&d->endpoints[i]);
    memmove(&d->endpoints[i], &d->endpoints[i + 1],
            (d->endpoint_count - i - 1) * sizeof *d->endpoints);
    d->endpoint_count--;
}

bool deployment_copy(struct deployment *dst, const struct deployment *src)
{
    memset(dst, 0, sizeof *dst);
    for (size_t i = 0; i < src->backend_count; i++) {
        struct backend_spec b;
        if (!backend_spec_copy(&b, &src->backends[i]) || !deployment_add_backend(dst, &b)) {
            backend_spec_free(&b);
            deployment_free(dst);
            return false;
        }
    }
    for (size_t i = 0; i < src->endpoint_count; i++) {
        struct endpoint_spec e;
        if (!endpoint_spec_copy(&e, &src->endpoints[i]) || !deployment_add_endpoint(dst, &e)) {
            endpoint_spec_free(&e);
            deployment_free(dst);
            return false;
        }
    }
    return true;
}

bool deployment_valid(const struct deployment *d, char *err, size_t errlen)
{
    for (size_t i = 0; i < d->backend_count; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(d->backends[i].name, d->backends[j].name) == 0) {
                snprintf(err, errlen, "backend %s is defined twice", d->backends[i].name);
                return false;
            }
    for (size_t i = 0; i < d->backend_count; i++)
        if (!backend_source_valid(&d->backends[i], err, errlen)) return false;
    for (size_t i = 0; i < d->endpoint_count; i++) {
        const struct endpoint_spec *e = &d->endpoints[i];
        for (size_t j = 0; j < i; j++) {
            if (strcmp(e->name, d->endpoints[j].name) == 0) {
                snprintf(err, errlen, "endpoint %s is defined twice", e->name);
                return false;
            }
            if (e->route && d->endpoints[j].route && strcmp(e->route, d->endpoints[j].route) == 0) {
                snprintf(err, errlen, "route %s is already served by endpoint %s", e->route,
                         d->endpoints[j].name);
                return false;
            }
        }
        if (!endpoint_traffic_valid(e, err, errlen)) return false;
        for (size_t t = 0; t < e->traffic_count; t++)
            if (deployment_find_backend(d, e->traffic[t].backend) < 0) {
                snprintf(err, errlen, "endpoint %s: backend %s does not exist", e->name,
                         e->traffic[t].backend);
                return false;
            }
        for (size_t t = 0; t < e->shadow_count; t++)
            if (deployment_find_backend(d, e->shadows[t].backend) < 0) {
                snprintf(err, errlen, "endpoint %s: shadow backend %s does not exist", e->name,
                         e->shadows[t].backend);
                return false;
            }
    }
    return true;
}

void deployment_pack(msgpack_packer *pk, const struct deployment *d)
{
    msgpack_pack_map(pk, 2);
    mp_pack_key(pk, "backends");
    msgpack_pack_array(pk, d->backend_count);
    for (size_t i = 0; i < d->backend_count; i++) backend_spec_pack(pk, &d->backends[i]);
    mp_pack_key(pk, "endpoints");
    msgpack_pack_array(pk, d->endpoint_count);
    for (size_t i = 0; i < d->endpoint_count; i++) endpoint_spec_pack(pk, &d->endpoints[i]);
}

bool deployment_unpack(const msgpack_object *root, struct deployment *d, char *err,
                       size_t errlen)
{
    memset(d, 0, sizeof *d);
    const msgpack_object *bs = mp_get(root, "backends");
    const msgpack_object *es = mp_get(root, "endpoints");
    if (!bs || bs->type != MSGPACK_OBJECT_ARRAY || !es || es->type != MSGPACK_OBJECT_ARRAY) {
        snprintf(err, errlen, "backends and endpoints must be arrays");
        return false;
    }
    for (uint32_t i = 0; i < bs->via.array.size; i++) {
        struct backend_spec b;
        if (!backend_spec_unpack(&bs->via.array.ptr[i], &b, err, errlen)) goto fail;
        if (!deployment_add_backend(d, &b)) {
            backend_spec_free(&b);
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }
    for (uint32_t i = 0; i < es->via.array.size; i++) {
        struct endpoint_spec e;
        if (!endpoint_spec_unpack(&es->via.array.ptr[i], &e, err, errlen)) goto fail;
        if (!deployment_add_endpoint(d, &e)) {
            endpoint_spec_free(&e);
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }
    return true;
fail:
    deployment_free(d);
    return false;
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

/* Writes `path` whole and fsyncs it. On failure errno says why, and a file
 * this created is removed (one refused at open was not ours to remove). */
static bool write_file_synced(const char *path, const void *data, size_t len)
{
    int fd = state_dir_open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return false;
    const char *p = data;
    size_t left = len;
    bool ok = true;
    while (ok && left) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (n == 0) errno = EIO;
            ok = false;
            break;
        }
        p += n;
        left -= (size_t)n;
    }
    ok = ok && fsync(fd) == 0;
    int saved = errno;
    if (close(fd) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    if (!ok) {
        unlink(path);
        errno = saved;
    }
    return ok;
}

bool deployment_save(const struct deployment *d, const char *path, char *err,
                     size_t errlen)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_int(&pk, STATE_VERSION);
    deployment_pack(&pk, d);

    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    bool written = write_file_synced(tmp, sbuf.data, sbuf.size);
    int saved = errno;
    msgpack_sbuffer_destroy(&sbuf);
    if (!written) {
        snprintf(err, errlen, "cannot write state file %s: %s: %s", path, tmp,
                 state_dir_strerror(saved));
        return false;
    }
    if (rename(tmp, path) != 0) {
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
    int fd = state_dir_open(path, O_RDONLY, 0);
    FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (!f) {
        int saved = errno;
        if (fd >= 0) close(fd);
        if (saved == ENOENT) return true;
        snprintf(err, errlen, "state file %s: %s", path, state_dir_strerror(saved));
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
    bool ok = mp_bounded(data, len, NULL) &&
              msgpack_unpack_next(&msg, data, len, &off) == MSGPACK_UNPACK_SUCCESS &&
              off == len;
    const msgpack_object *root = &msg.data;
    uint64_t version = 0;
    if (!ok) {
        snprintf(why, sizeof why, "not a valid msgpack document (truncated or corrupt)");
    } else if (root->type != MSGPACK_OBJECT_ARRAY || root->via.array.size != 2 ||
               !mp_as_uint(&root->via.array.ptr[0], &version) || version != STATE_VERSION) {
        snprintf(why, sizeof why, "unknown state format or version");
        ok = false;
    } else {
        ok = deployment_unpack(&root->via.array.ptr[1], d, why, sizeof why) &&
             deployment_valid(d, why, sizeof why);
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
