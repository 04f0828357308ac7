/* test_config.c - the typed config getters (runtime/config_typed.c) and the
 * config's per-entry folders (runtime/spec.c): what each getter takes and
 * refuses, the reason it keeps, and how a relative path is resolved. */
#include <stdint.h>
#include <string.h>

#include "config_typed.h"
#include "spec.h"
#include "unit.h"

static serve_config *test_config_of(const char *key, const char *value)
{
    serve_config *c = config_new();
    ASSERT_NOT_NULL(c);
    ASSERT_EQ(config_set(c, key, value), 0);
    return c;
}

TEST_IMPL(config_int)
{
    serve_config *c = test_config_of("n", "-42");
    int64_t v = 0;
    ASSERT_EQ(serve_config_int(c, "n", 7, &v), SERVE_OK);
    ASSERT_EQ(v, -42);
    ASSERT_EQ(serve_config_int(c, "absent", 7, &v), SERVE_OK);
    ASSERT_EQ(v, 7);
    static const char *const bad[] = {"", "abc", "12x", " 3", "1.5", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        config_set(c, "n", bad[i]);
        v = 5;
        ASSERT_EQ(serve_config_int(c, "n", 7, &v), SERVE_EINVAL);
        ASSERT_EQ(v, 5); /* left alone */
        ASSERT(strncmp(serve_config_error(), "config n=", 9) == 0);
    }
    config_set(c, "n", "abc");
    serve_config_int(c, "n", 0, &v);
    ASSERT(strcmp(serve_config_error(), "config n=abc: not an integer") == 0);
    ASSERT_EQ(serve_config_int(c, "n", 0, NULL), SERVE_EINVAL);
    config_free(c);
    return 0;
}

TEST_IMPL(config_number_bool_size)
{
    serve_config *c = test_config_of("x", "2.5e-3");
    double d = 0;
    ASSERT_EQ(serve_config_number(c, "x", 1, &d), SERVE_OK);
    ASSERT(d > 0.0024 && d < 0.0026);
    config_set(c, "x", "inf");
    ASSERT_EQ(serve_config_number(c, "x", 1, &d), SERVE_EINVAL);
    config_set(c, "x", "fast");
    ASSERT_EQ(serve_config_number(c, "x", 1, &d), SERVE_EINVAL);
    ASSERT(strcmp(serve_config_error(), "config x=fast: not a number") == 0);

    static const char *const yes[] = {"true", "YES", "On", "1"}, *const no[] = {"false", "no", "OFF", "0"};
    int b = -1;
    for (size_t i = 0; i < 4; i++) {
        config_set(c, "b", yes[i]);
        ASSERT_EQ(serve_config_bool(c, "b", 0, &b), SERVE_OK);
        ASSERT_EQ(b, 1);
        config_set(c, "b", no[i]);
        ASSERT_EQ(serve_config_bool(c, "b", 1, &b), SERVE_OK);
        ASSERT_EQ(b, 0);
    }
    config_set(c, "b", "maybe");
    ASSERT_EQ(serve_config_bool(c, "b", 1, &b), SERVE_EINVAL);
    ASSERT_EQ(serve_config_bool(c, "absent", 5, &b), SERVE_OK);
    ASSERT_EQ(b, 1);

    uint64_t s = 0;
    config_set(c, "s", "512M");
    ASSERT_EQ(serve_config_size(c, "s", 0, &s), SERVE_OK);
    ASSERT_EQ(s, 512ull << 20);
    config_set(c, "s", "4096");
    ASSERT_EQ(serve_config_size(c, "s", 0, &s), SERVE_OK);
    ASSERT_EQ(s, 4096);
    config_set(c, "s", "12X");
    ASSERT_EQ(serve_config_size(c, "s", 0, &s), SERVE_EINVAL);
    ASSERT(strncmp(serve_config_error(), "config s=12X: not a size", 24) == 0);
    config_free(c);
    return 0;
}

TEST_IMPL(config_path)
{
    serve_config *c = config_new();
    char out[64];
    ASSERT_EQ(config_set_at(c, "rel", "m/model.pt", "/srv/deploy"), 0);
    ASSERT_EQ(config_set_at(c, "abs", "/data/x.bin", "/srv/deploy"), 0);
    ASSERT_EQ(config_set(c, "nobase", "here.bin"), 0);
    ASSERT_EQ(serve_config_path(c, "rel", NULL, out, sizeof out), SERVE_OK);
    ASSERT(strcmp(out, "/srv/deploy/m/model.pt") == 0);
    ASSERT_EQ(serve_config_path(c, "abs", NULL, out, sizeof out), SERVE_OK);
    ASSERT(strcmp(out, "/data/x.bin") == 0);
    ASSERT_EQ(serve_config_path(c, "nobase", NULL, out, sizeof out), SERVE_OK);
    ASSERT(strcmp(out, "here.bin") == 0);
    ASSERT_EQ(serve_config_path(c, "absent", NULL, out, sizeof out), SERVE_OK);
    ASSERT(strcmp(out, "") == 0);
    ASSERT_EQ(serve_config_path(c, "absent", "d.txt", out, sizeof out), SERVE_OK);
    ASSERT(strcmp(out, "d.txt") == 0);
    ASSERT_EQ(serve_config_path(c, "rel", NULL, out, 8), SERVE_EINVAL);
    ASSERT(strcmp(out, "") == 0);

    /* The folder goes with its entry: copied, compared, replaced, removed. */
    serve_config *copy = config_copy(c);
    ASSERT(config_equal(c, copy));
    ASSERT_EQ(config_set_at(copy, "rel", "m/model.pt", "/elsewhere"), 0);
    ASSERT(!config_equal(c, copy)); /* the same words name another file */
    ASSERT_EQ(serve_config_path(copy, "rel", NULL, out, sizeof out), SERVE_OK);
    ASSERT(strcmp(out, "/elsewhere/m/model.pt") == 0);
    config_unset(copy, "rel");
    ASSERT_NULL(serve_config_get(copy, "rel"));
    ASSERT_EQ(serve_config_count(copy), 2);
    ASSERT_EQ(serve_config_path(copy, "abs", NULL, out, sizeof out), SERVE_OK);
    config_free(copy);
    config_free(c);
    return 0;
}
