/* route_index.h - the lookup tables of one routes snapshot (routes.h): a
 * trie of path segments for routes_match and a hash table of names for
 * routes_find.
 *
 * An index is built once, with its snapshot, and only read afterwards, so
 * any number of threads may look up in it at once. It points into the
 * snapshot's entries (their route and endpoint strings included) and must
 * be freed before them. Lookups never allocate. */
#ifndef SERVE_RUNTIME_ROUTE_INDEX_H
#define SERVE_RUNTIME_ROUTE_INDEX_H

#include <stddef.h>

struct route_entry;
struct route_index;

/* Indexes `count` entries, which must stay where they are while the index
 * lives. Where two entries share a route or a name, the earlier one wins.
 * NULL when out of memory. */
struct route_index *route_index_build(const struct route_entry *entries, size_t count);

/* Frees the index, not the entries. NULL is a harmless no-op. */
void route_index_free(struct route_index *ix);

/* The entry whose route is the longest prefix of `path` on a segment
 * boundary, or NULL; see routes_match. O(strlen(path)). */
const struct route_entry *route_index_match(const struct route_index *ix, const char *path);

/* The entry named `name`, or NULL. O(strlen(name)). */
const struct route_entry *route_index_find(const struct route_index *ix, const char *name);

#endif
