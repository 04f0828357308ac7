/* routes.h - an immutable snapshot of the endpoints, for request routing.
 *
 * The control thread builds a new snapshot for every change and hands it to
 * the I/O threads, which swap it in between requests, and to the handle
 * router. A snapshot is reference counted; it holds a reference on every
 * backend it names. */
#ifndef SERVE_RUNTIME_ROUTES_H
#define SERVE_RUNTIME_ROUTES_H

#include <stdatomic.h>
#include <stddef.h>

#include "backend.h"

struct route_target {
    struct backend *backend;
    double weight;      /* traffic: cumulative weight up to this target;
                           shadow: the fraction copied */
};

struct endpoint_metrics;

struct route_entry {
    char *endpoint;
    struct endpoint_metrics *metrics; /* kept across snapshots */
    char *route;        /* NULL: handle only */
    size_t route_len;
    unsigned methods;   /* METHOD_* bits */
    struct route_target *targets;
    size_t target_count;
    struct route_target *shadows;
    size_t shadow_count;
};

struct route_index;

struct routes {
    atomic_int refs;
    size_t count;
    struct route_entry *entries; /* routed ones first, longest route first */
    struct route_index *index;   /* private to routes.c: what matching and finding read */
};

/* Builds a snapshot of `count` endpoints; `lookup` gives the live backend
 * of a name (every name must resolve). refs starts at 1. */
struct routes *routes_build(const struct endpoint_spec *endpoints, size_t count,
                            struct backend *(*lookup)(void *ctx, const char *name),
                            void *ctx);
void routes_ref(struct routes *r);
void routes_release(struct routes *r);

/* The endpoint whose route is the longest prefix of `path` on a segment
 * boundary, or NULL: "/a" matches "/a", "/a/" and "/a/b", not "/ab"; a route
 * ending in '/', such as "/a/", matches whatever starts with it; "/" matches
 * every path that starts with '/'. Handle-only endpoints never match. `path`
 * is any string (already percent-decoded). Never allocates; costs
 * O(strlen(path)) whatever the number of endpoints. NULL r: NULL. */
const struct route_entry *routes_match(const struct routes *r, const char *path);
/* The endpoint named `name`, routed or not, or NULL. O(strlen(name)).
 * NULL r: NULL. */
const struct route_entry *routes_find(const struct routes *r, const char *name);

/* Picks the backend of one request by the traffic weights: by the shard key
 * when there is one (the same key always lands on the same backend for the
 * same split), else at random. */
struct backend *route_pick(const struct route_entry *e, const char *shard_key);

/* A uniform draw in [0, 1) for this thread. */
double route_random(void);

#endif
