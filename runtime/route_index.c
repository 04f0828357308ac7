/* route_index.c - a segment trie for routes_match, a name hash for
 * routes_find.
 *
 * A path is the list of its segments, the bytes between slashes: "/a/b" is
 * ("", "a", "b"), "/" is ("", "") and "" is (""). Under routes_match's rule
 * ("/a" matches "/a", "/a/" and "/a/b", not "/ab"; "/a/" matches whatever
 * starts with "/a/"), a route without a trailing slash matches exactly the
 * paths whose segments begin with its own, and a route with one matches the
 * paths whose segments begin with those of the route minus that slash and
 * go on past them. So each route sits on the trie node of its segments (one
 * trailing slash cut off), as the node's `exact` or its `below` route, and
 * walking a path down the trie meets every route that matches it. Each one
 * met is longer than the one before (a node's `below` is its `exact` plus a
 * slash, and a child's `exact` adds a slash and a segment that cannot be
 * empty, for then the route would end in a slash), so the last one met is
 * the longest.
 *
 * Trie edges live in one open-addressing table keyed by (parent node,
 * segment): each step of the walk hashes its segment as it scans for the
 * next slash, then probes, so a match reads the path about twice. Clients
 * choose paths but not the table: the routes alone decide how long a probe
 * can run. */
#include "route_index.h"

#include "routes.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct route_node {
    const struct route_entry *exact; /* matches once the walk reaches this node */
    const struct route_entry *below; /* this node's route plus '/': needs more path */
};

/* A slot of the edge table. child 0 marks an empty slot: node 0 is the root,
 * nobody's child. */
struct route_edge {
    uint64_t hash;
    const char *segment; /* into a route of the snapshot, segment_len bytes */
    uint32_t segment_len;
    uint32_t parent;
    uint32_t child;
};

struct route_index {
    struct route_node *nodes; /* nodes[0] is the root: the empty list of segments */
    uint32_t node_count;
    struct route_edge *edges;
    size_t edge_mask; /* slots - 1; slots is a power of two */
    const struct route_entry **names; /* NULL: an empty slot */
    size_t name_mask;
};

/* FNV-1a one byte at a time, so that a segment is hashed while it is
 * scanned, then a finalizer so that the low bits, which pick the slot,
 * depend on every byte. */
#define ROUTE_INDEX_FNV_OFFSET 0xcbf29ce484222325ULL

static uint64_t route_index_fnv(uint64_t h, unsigned char c)
{
    return (h ^ c) * 0x100000001b3ULL;
}

static uint64_t route_index_mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

static uint64_t route_index_edge_hash(uint64_t segment_fnv, uint32_t parent)
{
    return route_index_mix(segment_fnv ^ (parent * 0x9e3779b97f4a7c15ULL));
}

/* Slots for n keys at a load of at most one half: probes stay short, and
 * there is always an empty slot to end a probe for a missing key. */
static size_t route_index_slots(size_t n)
{
    size_t slots = 1;
    while (slots < 2 * n + 1) slots <<= 1;
    return slots;
}

static uint32_t route_index_child(const struct route_index *ix, uint32_t parent,
                                  const char *segment, size_t len, uint64_t segment_fnv)
{
    uint64_t h = route_index_edge_hash(segment_fnv, parent);
    for (size_t i = h & ix->edge_mask;; i = (i + 1) & ix->edge_mask) {
        const struct route_edge *e = &ix->edges[i];
        if (!e->child) return 0;
        if (e->hash == h && e->parent == parent && e->segment_len == len &&
            memcmp(e->segment, segment, len) == 0)
            return e->child;
    }
}

/* The child of parent by segment, made if missing (the tables were sized
 * for every segment of every route, so there is room). */
static uint32_t route_index_add_child(struct route_index *ix, uint32_t parent,
                                      const char *segment, size_t len)
{
    uint64_t fnv = ROUTE_INDEX_FNV_OFFSET;
    for (size_t i = 0; i < len; i++) fnv = route_index_fnv(fnv, (unsigned char)segment[i]);
    uint32_t child = route_index_child(ix, parent, segment, len, fnv);
    if (child) return child;
    uint64_t h = route_index_edge_hash(fnv, parent);
    size_t i = h & ix->edge_mask;
    while (ix->edges[i].child) i = (i + 1) & ix->edge_mask;
    child = ix->node_count++;
    ix->edges[i] = (struct route_edge){.hash = h, .segment = segment,
                                       .segment_len = (uint32_t)len, .parent = parent,
                                       .child = child};
    return child;
}

static void route_index_add_route(struct route_index *ix, const struct route_entry *e)
{
    size_t len = e->route_len;
    bool below = len > 0 && e->route[len - 1] == '/';
    if (below) len--;
    const char *p = e->route, *end = e->route + len;
    uint32_t node = 0;
    for (;;) {
        const char *segment = p;
        while (p < end && *p != '/') p++;
        node = route_index_add_child(ix, node, segment, (size_t)(p - segment));
        if (p == end) break;
        p++;
    }
    const struct route_entry **slot = below ? &ix->nodes[node].below : &ix->nodes[node].exact;
    if (!*slot) *slot = e;
}

static uint64_t route_index_name_hash(const char *name)
{
    uint64_t h = ROUTE_INDEX_FNV_OFFSET;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = route_index_fnv(h, *p);
    return route_index_mix(h);
}

static void route_index_add_name(struct route_index *ix, const struct route_entry *e)
{
    size_t i = route_index_name_hash(e->endpoint) & ix->name_mask;
    for (; ix->names[i]; i = (i + 1) & ix->name_mask)
        if (strcmp(ix->names[i]->endpoint, e->endpoint) == 0) return;
    ix->names[i] = e;
}

struct route_index *route_index_build(const struct route_entry *entries, size_t count)
{
    /* Every segment of every route may make one node. */
    size_t segments = 0;
    for (size_t i = 0; i < count; i++) {
        const char *route = entries[i].route;
        if (!route) continue;
        segments++;
        for (size_t k = 0; k < entries[i].route_len; k++) segments += route[k] == '/';
    }
    if (segments >= UINT32_MAX) return NULL;
    struct route_index *ix = calloc(1, sizeof *ix);
    if (!ix) return NULL;
    size_t edge_slots = route_index_slots(segments), name_slots = route_index_slots(count);
    ix->nodes = calloc(segments + 1, sizeof *ix->nodes);
    ix->edges = calloc(edge_slots, sizeof *ix->edges);
    ix->names = calloc(name_slots, sizeof *ix->names);
    if (!ix->nodes || !ix->edges || !ix->names) {
        route_index_free(ix);
        return NULL;
    }
    ix->node_count = 1;
    ix->edge_mask = edge_slots - 1;
    ix->name_mask = name_slots - 1;
    for (size_t i = 0; i < count; i++) {
        if (entries[i].route) route_index_add_route(ix, &entries[i]);
        route_index_add_name(ix, &entries[i]);
    }
    return ix;
}

void route_index_free(struct route_index *ix)
{
    if (!ix) return;
    free(ix->nodes);
    free(ix->edges);
    free(ix->names);
    free(ix);
}

const struct route_entry *route_index_match(const struct route_index *ix, const char *path)
{
    const struct route_entry *best = NULL;
    uint32_t node = 0;
    const char *p = path;
    for (;;) {
        const char *segment = p;
        uint64_t fnv = ROUTE_INDEX_FNV_OFFSET;
        for (; *p && *p != '/'; p++) fnv = route_index_fnv(fnv, (unsigned char)*p);
        node = route_index_child(ix, node, segment, (size_t)(p - segment), fnv);
        if (!node) return best;
        const struct route_node *n = &ix->nodes[node];
        if (n->exact) best = n->exact;
        if (!*p) return best;
        if (n->below) best = n->below;
        p++; /* the slash */
    }
}

const struct route_entry *route_index_find(const struct route_index *ix, const char *name)
{
    size_t i = route_index_name_hash(name) & ix->name_mask;
    for (; ix->names[i]; i = (i + 1) & ix->name_mask)
        if (strcmp(ix->names[i]->endpoint, name) == 0) return ix->names[i];
    return NULL;
}
