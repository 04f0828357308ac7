/* deployment.h - the declared state: every backend and endpoint the control
 * plane acknowledged. This is what the state file holds. */
#ifndef SERVE_RUNTIME_DEPLOYMENT_H
#define SERVE_RUNTIME_DEPLOYMENT_H

#include <stdbool.h>
#include <stddef.h>

#include "spec.h"

struct deployment {
    struct backend_spec *backends;
    size_t backend_count;
    struct endpoint_spec *endpoints;
    size_t endpoint_count;
};

void deployment_free(struct deployment *d);
/* Deep copy; false (dst empty) when out of memory. */
bool deployment_copy(struct deployment *dst, const struct deployment *src);
/* Appends (taking ownership of the spec's strings) or removes an item. */
bool deployment_add_backend(struct deployment *d, struct backend_spec *b);
bool deployment_add_endpoint(struct deployment *d, struct endpoint_spec *e);
void deployment_remove_backend(struct deployment *d, size_t i);
void deployment_remove_endpoint(struct deployment *d, size_t i);
/* Checks that names are unique, routes distinct, weights valid and every
 * endpoint names existing backends. One line in err. */
bool deployment_valid(const struct deployment *d, char *err, size_t errlen);
/* Packs {"backends": [...], "endpoints": [...]} (specs only). */
void deployment_pack(msgpack_packer *pk, const struct deployment *d);
/* Unpacks what deployment_pack wrote (the deploy command's payload). */
bool deployment_unpack(const msgpack_object *o, struct deployment *d, char *err,
                       size_t errlen);
/* Index of the named item, or -1. */
long deployment_find_backend(const struct deployment *d, const char *name);
long deployment_find_endpoint(const struct deployment *d, const char *name);

/* Writes the state file atomically: a temp file beside it, fsync, rename,
 * fsync of the folder. On failure the old file is untouched. Neither file
 * is opened through a symlink (see state_dir.h). */
bool deployment_save(const struct deployment *d, const char *path, char *err,
                     size_t errlen);
/* Reads the state file, never through a symlink. A missing file is an
 * empty deployment; a file that cannot be read or decoded is an error
 * naming the file. */
bool deployment_load(struct deployment *d, const char *path, char *err,
                     size_t errlen);

#endif
