/* test_routes.c - the route table (runtime/routes.c, route_index.c):
 * matching by path, finding by name, snapshots shared by threads.
 *
 * A snapshot holds a reference on the backend of each of its targets, and
 * backend_ref takes no NULL, so the endpoints here send their traffic to a
 * real backend: the echo plugin of the build tree, loaded as `serve start`
 * loads it (UNIT_ECHO_PLUGIN, set by tests/CMakeLists.txt). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend.h"
#include "routes.h"
#include "spec.h"
#include "unit.h"

static struct backend *test_routes_echo;

static struct backend *test_routes_lookup(void *ctx, const char *name)
{
    (void)ctx;
    (void)name;
    return test_routes_echo;
}

/* A snapshot of n endpoints with these routes (NULL: handle only), named
 * names[i], or "e<i>" when names is NULL. */
static struct routes *test_routes_build(const char *const *routes, const char *const *names,
                                        size_t n)
{
    if (!test_routes_echo) {
        char err[512];
        struct backend_spec spec = {.name = "echo", .plugin = UNIT_ECHO_PLUGIN};
        backend_options_default(&spec.options);
        spec.config = config_new();
        test_routes_echo = backend_create(&spec, err, sizeof err);
        config_free(spec.config);
        if (!test_routes_echo) UNIT_FAIL("echo backend: %s", err);
    }
    struct share share = {"echo", 1.0};
    struct endpoint_spec *specs = calloc(n + 1, sizeof *specs);
    char (*numbered)[24] = calloc(n + 1, sizeof *numbered);
    ASSERT(specs && numbered);
    for (size_t i = 0; i < n; i++) {
        snprintf(numbered[i], sizeof numbered[i], "e%zu", i);
        specs[i] = (struct endpoint_spec){.name = names ? (char *)names[i] : numbered[i],
                                          .route = (char *)routes[i],
                                          .methods = METHODS_DEFAULT,
                                          .traffic = &share, .traffic_count = 1};
    }
    struct routes *r = routes_build(specs, n, test_routes_lookup, NULL);
    free(specs);
    free(numbered);
    ASSERT_NOT_NULL(r);
    return r;
}

/* Releases the snapshot, then the echo backend, so that the sanitizers'
 * leak check at exit sees everything freed. */
static void test_routes_finish(struct routes *r)
{
    routes_release(r);
    backend_stop(test_routes_echo);
    backend_release(test_routes_echo);
    test_routes_echo = NULL;
}

/* The route that serves path, or NULL. */
static const char *test_routes_matched(const struct routes *r, const char *path)
{
    const struct route_entry *e = routes_match(r, path);
    return e ? e->route : NULL;
}

#define ASSERT_MATCHES(r, path, route) ASSERT_STR_EQ(test_routes_matched(r, path), route)

TEST_IMPL(routes_longest_prefix)
{
    const char *routes[] = {"/a", "/a/b", "/a/b/c", "/b"};
    struct routes *r = test_routes_build(routes, NULL, 4);
    ASSERT_MATCHES(r, "/a/b/x", "/a/b");
    ASSERT_MATCHES(r, "/a/b/c/d", "/a/b/c");
    ASSERT_MATCHES(r, "/a/b/c", "/a/b/c");
    ASSERT_MATCHES(r, "/a/x", "/a");
    ASSERT_MATCHES(r, "/a/bc", "/a");
    ASSERT_MATCHES(r, "/b/a/b", "/b");
    ASSERT_MATCHES(r, "/c", NULL);
    routes_release(r);

    /* A gap in the chain: the walk goes past "/a/b", which is no route. */
    const char *gap[] = {"/a/b/c", "/a"};
    r = test_routes_build(gap, NULL, 2);
    ASSERT_MATCHES(r, "/a/b", "/a");
    ASSERT_MATCHES(r, "/a/b/x", "/a");
    ASSERT_MATCHES(r, "/a/b/c/", "/a/b/c");
    test_routes_finish(r);
    return 0;
}

TEST_IMPL(routes_segment_boundary)
{
    const char *routes[] = {"/a", "/ab/c"};
    struct routes *r = test_routes_build(routes, NULL, 2);
    ASSERT_MATCHES(r, "/a", "/a");
    ASSERT_MATCHES(r, "/a/", "/a");
    ASSERT_MATCHES(r, "/a/b", "/a");
    ASSERT_MATCHES(r, "/a//", "/a");
    ASSERT_MATCHES(r, "/ab", NULL);
    ASSERT_MATCHES(r, "/ab/c", "/ab/c");
    ASSERT_MATCHES(r, "/ab/c/d", "/ab/c");
    ASSERT_MATCHES(r, "/ab/cd", NULL);
    ASSERT_MATCHES(r, "/A", NULL);
    ASSERT_MATCHES(r, "/", NULL);
    ASSERT_MATCHES(r, "a", NULL);
    ASSERT_MATCHES(r, "", NULL);
    test_routes_finish(r);
    return 0;
}

TEST_IMPL(routes_trailing_slash)
{
    const char *alone[] = {"/a/"};
    struct routes *r = test_routes_build(alone, NULL, 1);
    ASSERT_MATCHES(r, "/a/", "/a/");
    ASSERT_MATCHES(r, "/a/b", "/a/");
    ASSERT_MATCHES(r, "/a//x", "/a/");
    ASSERT_MATCHES(r, "/a", NULL);
    ASSERT_MATCHES(r, "/ab", NULL);
    routes_release(r);

    const char *both[] = {"/a", "/a/"};
    r = test_routes_build(both, NULL, 2);
    ASSERT_MATCHES(r, "/a", "/a");
    ASSERT_MATCHES(r, "/a/", "/a/");
    ASSERT_MATCHES(r, "/a/b", "/a/");
    routes_release(r);

    const char *under[] = {"/a/", "/a/b"};
    r = test_routes_build(under, NULL, 2);
    ASSERT_MATCHES(r, "/a/b", "/a/b");
    ASSERT_MATCHES(r, "/a/b/c", "/a/b");
    ASSERT_MATCHES(r, "/a/bc", "/a/");
    ASSERT_MATCHES(r, "/a", NULL);
    test_routes_finish(r);
    return 0;
}

TEST_IMPL(routes_catch_all)
{
    const char *alone[] = {"/"};
    struct routes *r = test_routes_build(alone, NULL, 1);
    ASSERT_MATCHES(r, "/", "/");
    ASSERT_MATCHES(r, "/x", "/");
    ASSERT_MATCHES(r, "/x/y", "/");
    ASSERT_MATCHES(r, "//", "/");
    ASSERT_MATCHES(r, "/\xff", "/");
    ASSERT_MATCHES(r, "", NULL);
    ASSERT_MATCHES(r, "x", NULL);
    routes_release(r);

    const char *more[] = {"/", "/a"};
    r = test_routes_build(more, NULL, 2);
    ASSERT_MATCHES(r, "/a/b", "/a");
    ASSERT_MATCHES(r, "/ab", "/");
    ASSERT_MATCHES(r, "/", "/");
    test_routes_finish(r);
    return 0;
}

TEST_IMPL(routes_odd_paths)
{
    const char *routes[] = {"/", "//", "/a", "/a/b/", "/%25", "/~"};
    struct routes *r = test_routes_build(routes, NULL, 6);
    ASSERT_MATCHES(r, "", NULL);
    ASSERT_MATCHES(r, "a", NULL);
    ASSERT_MATCHES(r, "a/b", NULL);
    ASSERT_MATCHES(r, "//", "//");
    ASSERT_MATCHES(r, "///", "//");
    ASSERT_MATCHES(r, "//a", "//");
    ASSERT_MATCHES(r, "/a//b", "/a");
    ASSERT_MATCHES(r, "/a/b", "/a");
    ASSERT_MATCHES(r, "/a/b/", "/a/b/");
    ASSERT_MATCHES(r, "/a/b//", "/a/b/");
    ASSERT_MATCHES(r, "/%25", "/%25");
    ASSERT_MATCHES(r, "/%2", "/");
    ASSERT_MATCHES(r, "/%", "/");
    ASSERT_MATCHES(r, "/a\xff", "/");
    ASSERT_MATCHES(r, "/\xff/a", "/");
    ASSERT_MATCHES(r, "/a/\xff", "/a");
    ASSERT_MATCHES(r, "/a b", "/");
    ASSERT_MATCHES(r, "/a?b", "/");
    ASSERT_MATCHES(r, "/~/x", "/~");

    /* A long path costs one walk, however deep. */
    size_t depth = 20000;
    char *deep = malloc(2 * depth + 1);
    ASSERT_NOT_NULL(deep);
    for (size_t i = 0; i < depth; i++) memcpy(deep + 2 * i, "/a", 2);
    deep[2 * depth] = '\0';
    ASSERT_MATCHES(r, deep, "/a");
    deep[3] = 'b';
    ASSERT_MATCHES(r, deep, "/a/b/");
    free(deep);
    test_routes_finish(r);
    return 0;
}

/* The rule as routes_match first wrote it: a scan of every route, longest
 * first (the snapshot's order), taking the first that is a prefix of the
 * path ending on a segment boundary. The reference for the index. */
static const struct route_entry *test_routes_scan(const struct routes *r, const char *path)
{
    for (size_t i = 0; i < r->count; i++) {
        const struct route_entry *e = &r->entries[i];
        if (!e->route) break;
        if (strncmp(path, e->route, e->route_len) != 0) continue;
        char next = path[e->route_len];
        if (next == '\0' || next == '/' || e->route[e->route_len - 1] == '/') return e;
    }
    return NULL;
}

/* The k-th word of length len over alphabet, into out. */
static void test_routes_word(char *out, const char *alphabet, size_t len, size_t k)
{
    size_t base = strlen(alphabet);
    for (size_t i = 0; i < len; i++, k /= base) out[i] = alphabet[k % base];
    out[len] = '\0';
}

/* Every route of up to 4 bytes over "/ab", in random subsets, against every
 * path of up to 5 bytes over "/ab\xff": the index and the scan agree. */
TEST_IMPL(routes_same_as_scan)
{
    char all[64][8];
    size_t route_count = 0;
    for (size_t len = 0, words = 1; len < 4; len++, words *= 3)
        for (size_t k = 0; k < words; k++) {
            all[route_count][0] = '/';
            test_routes_word(all[route_count++] + 1, "/ab", len, k);
        }
    char paths[1400][8];
    size_t path_count = 0;
    for (size_t len = 0, words = 1; len <= 5; len++, words *= 4)
        for (size_t k = 0; k < words; k++) test_routes_word(paths[path_count++], "/ab\xff", len, k);

    uint64_t rng = 0x9e3779b97f4a7c15ULL; /* fixed: a failure repeats */
    for (int round = 0; round < 300; round++) {
        const char *subset[64];
        size_t n = 0;
        for (size_t i = 0; i < route_count; i++) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            if (rng % (uint64_t)(1 + round % 4) == 0) subset[n++] = all[i];
        }
        struct routes *r = test_routes_build(subset, NULL, n);
        for (size_t p = 0; p < path_count; p++) {
            const struct route_entry *want = test_routes_scan(r, paths[p]);
            if (routes_match(r, paths[p]) != want)
                UNIT_FAIL("round %d, path \"%s\": the scan says %s, the index %s", round,
                          paths[p], want ? want->route : "(none)",
                          test_routes_matched(r, paths[p]) ? test_routes_matched(r, paths[p])
                                                            : "(none)");
        }
        routes_release(r);
    }
    test_routes_finish(NULL);
    return 0;
}

/* Endpoint i of a table of 1000: "/m<i>" for i < 500, then routes with a
 * trailing slash two segments deep, "/g<i/100>/model<i>/". */
static void test_routes_thousand_route(char *out, size_t size, size_t i)
{
    if (i < 500)
        snprintf(out, size, "/m%zu", i);
    else
        snprintf(out, size, "/g%zu/model%zu/", i / 100, i);
}

static struct routes *test_routes_build_thousand(void)
{
    static char routes[1000][32];
    const char *table[1000];
    for (size_t i = 0; i < 1000; i++) {
        test_routes_thousand_route(routes[i], sizeof routes[i], i);
        table[i] = routes[i];
    }
    return test_routes_build(table, NULL, 1000);
}

/* Checks that every path under route i, and no other, lands on it. */
static void test_routes_check_thousand(const struct routes *r)
{
    char route[32], path[48];
    for (size_t i = 0; i < 1000; i++) {
        test_routes_thousand_route(route, sizeof route, i);
        snprintf(path, sizeof path, "%sx", route);
        if (i < 500) ASSERT_MATCHES(r, route, route);
        else ASSERT_MATCHES(r, path, route);
        snprintf(path, sizeof path, "%s/x/y", route);
        ASSERT_MATCHES(r, path, route);
    }
}

TEST_IMPL(routes_thousand)
{
    struct routes *r = test_routes_build_thousand();
    ASSERT_EQ(r->count, 1000);
    for (size_t i = 1; i < r->count; i++)
        ASSERT(r->entries[i - 1].route_len >= r->entries[i].route_len);
    test_routes_check_thousand(r);
    const char *strangers[] = {"/m500", "/m1000", "/m01", "/m", "/mx", "/m1x", "/g5",
                               "/g5/model500", "/g6/model500/x", "/model500/", "/", ""};
    for (size_t i = 0; i < sizeof strangers / sizeof *strangers; i++)
        ASSERT_MATCHES(r, strangers[i], NULL);
    char name[16], route[32];
    for (size_t i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "e%zu", i);
        test_routes_thousand_route(route, sizeof route, i);
        const struct route_entry *e = routes_find(r, name);
        ASSERT_NOT_NULL(e);
        ASSERT_STR_EQ(e->endpoint, name);
        ASSERT_STR_EQ(e->route, route);
    }
    test_routes_finish(r);
    return 0;
}

TEST_IMPL(routes_handle_only)
{
    const char *names[] = {"model_one", "composed", "model_two"};
    const char *routes[] = {NULL, "/composed", NULL};
    struct routes *r = test_routes_build(routes, names, 3);
    /* Routed ones first: the order that /-/routes lists. */
    ASSERT_STR_EQ(r->entries[0].endpoint, "composed");
    for (size_t i = 0; i < 3; i++) {
        const struct route_entry *e = routes_find(r, names[i]);
        ASSERT_NOT_NULL(e);
        ASSERT_STR_EQ(e->endpoint, names[i]);
        ASSERT_STR_EQ(e->route, routes[i]);
    }
    const char *paths[] = {"/model_one", "model_one", "/model_two", "/", ""};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) ASSERT_MATCHES(r, paths[i], NULL);
    ASSERT_MATCHES(r, "/composed", "/composed");
    routes_release(r);

    /* Under a catch-all, a handle's name as a path is the catch-all's. */
    const char *with_root_names[] = {"model_one", "root"};
    const char *with_root[] = {NULL, "/"};
    r = test_routes_build(with_root, with_root_names, 2);
    const struct route_entry *matched = routes_match(r, "/model_one");
    ASSERT_NOT_NULL(matched);
    ASSERT_STR_EQ(matched->endpoint, "root");
    const struct route_entry *found = routes_find(r, "model_one");
    ASSERT_NOT_NULL(found);
    ASSERT_NULL(found->route);
    test_routes_finish(r);
    return 0;
}

TEST_IMPL(routes_names_not_found)
{
    const char *names[] = {"alpha", "beta"};
    const char *routes[] = {"/alpha", NULL};
    struct routes *r = test_routes_build(routes, names, 2);
    for (size_t i = 0; i < 2; i++) {
        const struct route_entry *e = routes_find(r, names[i]);
        ASSERT_NOT_NULL(e);
        ASSERT_STR_EQ(e->endpoint, names[i]);
    }
    const char *strangers[] = {"", "alph", "alphaa", "Alpha", "/alpha", "beta ", "gamma"};
    for (size_t i = 0; i < sizeof strangers / sizeof *strangers; i++)
        ASSERT_NULL(routes_find(r, strangers[i]));
    test_routes_finish(r);
    return 0;
}

TEST_IMPL(routes_empty_and_null)
{
    ASSERT_NULL(routes_match(NULL, "/"));
    ASSERT_NULL(routes_find(NULL, "alpha"));
    routes_release(NULL);

    struct routes *r = test_routes_build(NULL, NULL, 0);
    ASSERT_EQ(r->count, 0);
    ASSERT_NULL(routes_match(r, "/"));
    ASSERT_NULL(routes_match(r, ""));
    ASSERT_NULL(routes_find(r, "e0"));
    /* A second reference keeps it alive past the first release. */
    routes_ref(r);
    routes_release(r);
    ASSERT_NULL(routes_match(r, "/"));
    test_routes_finish(r);
    return 0;
}

static void *test_routes_reader(void *arg)
{
    struct routes *r = arg;
    for (int rep = 0; rep < 5; rep++) test_routes_check_thousand(r);
    routes_release(r);
    return NULL;
}

/* Readers match on one snapshot at once, each with its own reference, and
 * the last to let go frees it, as the I/O threads and the handle router
 * do. (Under TSan this is the check that matching only reads.) */
TEST_IMPL(routes_shared_by_threads)
{
    struct routes *r = test_routes_build_thousand();
    pthread_t readers[4];
    for (size_t i = 0; i < 4; i++) {
        routes_ref(r);
        ASSERT_EQ(pthread_create(&readers[i], NULL, test_routes_reader, r), 0);
    }
    routes_release(r);
    for (size_t i = 0; i < 4; i++) ASSERT_EQ(pthread_join(readers[i], NULL), 0);
    test_routes_finish(NULL);
    return 0;
}
