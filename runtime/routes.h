/* routes.h - an immutable snapshot of the endpoints, for request routing.
 *
 * The control thread builds a new snapshot for every change and hands it to
 * the I/O threads, which swap it in between requests. A snapshot is
 * reference counted; it holds a reference on every backend it names. */
#ifndef SERVE_RUNTIME_ROUTES_H
#define SERVE_RUNTIME_ROUTES_H

#include <stdatomic.h>
#include <stddef.h>

#include "backend.h"

struct route_entry {
    char *endpoint;
    char *route;      /* NULL: handle only */
    size_t route_len;
    unsigned methods; /* METHOD_* bits */
    struct backend *backend;
};

struct routes {
    atomic_int refs;
    size_t count;
    struct route_entry *entries; /* routed ones first, longest route first */
};

/* Builds a snapshot; backends[i] serves endpoints[i]. refs starts at 1. */
struct routes *routes_build(const struct endpoint_spec *endpoints,
                            struct backend *const *backends, size_t count);
void routes_ref(struct routes *r);
void routes_release(struct routes *r);

/* The endpoint whose route is the longest prefix of `path` on a segment
 * boundary ("/a" matches "/a" and "/a/b", not "/ab"), or NULL. */
const struct route_entry *routes_match(const struct routes *r, const char *path);

#endif
