/* test_remote_url.c - a remote backend's URL list (runtime/remote_url.c):
 * what is accepted, what each refusal says, and the path a request is
 * forwarded to. */
#include <stdlib.h>
#include <string.h>

#include "remote_url.h"
#include "unit.h"

TEST_IMPL(remote_urls_accepted)
{
    struct remote_url *u;
    size_t n;
    char err[256] = "";
    ASSERT(remote_urls_parse("http://10.0.0.5:8000/model_two/, http://lb/m ,http://[::1]:81",
                             &u, &n, err, sizeof err));
    ASSERT_EQ(n, 3);
    ASSERT(strcmp(u[0].host, "10.0.0.5") == 0);
    ASSERT_EQ(u[0].port, 8000);
    ASSERT(strcmp(u[0].path, "/model_two") == 0); /* the trailing slash goes */
    ASSERT(strcmp(u[0].host_header, "10.0.0.5:8000") == 0);
    ASSERT(strcmp(u[1].text, "http://lb/m") == 0);
    ASSERT_EQ(u[1].port, 80);
    ASSERT(strcmp(u[1].host_header, "lb") == 0);
    ASSERT(strcmp(u[2].host, "::1") == 0);
    ASSERT(strcmp(u[2].path, "") == 0);
    ASSERT(strcmp(u[2].host_header, "[::1]:81") == 0);
    remote_urls_free(u, n);
    return 0;
}

TEST_IMPL(remote_urls_refused)
{
    static const struct {
        const char *list, *words;
    } bad[] = {
        {"", "an empty URL"},
        {"http://a/m,", "an empty URL"},
        {"https://a/m", "the scheme must be http"},
        {"a:8000/m", "the scheme must be http"},
        {"http:///m", "no host"},
        {"http://u@a/m", "no user, query or fragment"},
        {"http://a/m?x=1", "no user, query or fragment"},
        {"http://a/m#f", "no user, query or fragment"},
        {"http://a:0/m", "bad port"},
        {"http://a:99999/m", "not a URL"},
        {"http://a b/m", "not a URL"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct remote_url *u = (void *)1;
        size_t n = 7;
        char err[256] = "";
        ASSERT(!remote_urls_parse(bad[i].list, &u, &n, err, sizeof err));
        ASSERT_NULL(u);
        ASSERT_EQ(n, 0);
        if (!strstr(err, bad[i].words)) UNIT_FAIL("%s: got \"%s\"", bad[i].list, err);
    }
    char many[1024] = "";
    for (int i = 0; i < REMOTE_URLS_MAX + 1; i++) strcat(many, i ? ",http://h/m" : "http://h/m");
    struct remote_url *u;
    size_t n;
    char err[256];
    ASSERT(!remote_urls_parse(many, &u, &n, err, sizeof err));
    ASSERT(strstr(err, "at most 16 URLs"));
    return 0;
}

TEST_IMPL(remote_target_paths)
{
    struct remote_url *u;
    size_t n;
    char err[256], path[64];
    const char *why = NULL;
    ASSERT(remote_urls_parse("http://h/model_two,http://h", &u, &n, err, sizeof err));
    ASSERT(remote_target_path(&u[0], "", path, sizeof path, &why));
    ASSERT(strcmp(path, "/model_two") == 0);
    ASSERT(remote_target_path(&u[0], "/sub/x", path, sizeof path, &why));
    ASSERT(strcmp(path, "/model_two/sub/x") == 0);
    ASSERT(remote_target_path(&u[0], "tail", path, sizeof path, &why));
    ASSERT(strcmp(path, "/model_two/tail") == 0);
    ASSERT(remote_target_path(&u[1], "", path, sizeof path, &why));
    ASSERT(strcmp(path, "/") == 0);
    ASSERT(remote_target_path(&u[1], "/a", path, sizeof path, &why));
    ASSERT(strcmp(path, "/a") == 0);
    char longer[100];
    memset(longer, 'x', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    ASSERT(!remote_target_path(&u[0], longer, path, sizeof path, &why));
    ASSERT(strcmp(why, "the path is too long") == 0);
    /* The suffix was percent-decoded by the front end: encoded again, so
     * that a space, '?' or '#' stays in the path. */
    ASSERT(remote_target_path(&u[0], "/a b/c?d#e/\xc3\xa9", path, sizeof path, &why));
    ASSERT(strcmp(path, "/model_two/a%20b/c%3Fd%23e/%C3%A9") == 0);
    ASSERT(remote_target_path(&u[0], "/x:y@z=1,2;3", path, sizeof path, &why));
    ASSERT(strcmp(path, "/model_two/x:y@z=1,2;3") == 0);
    ASSERT(remote_target_path(&u[0], "/a.b/..c/.d", path, sizeof path, &why));
    /* Segments that would climb out of the URL's path are refused. */
    static const char *const dots[] = {"/..", "/../admin", "/a/../../b", "/.", "/./a", "..", "/a/.."};
    for (size_t i = 0; i < sizeof dots / sizeof *dots; i++) {
        why = NULL;
        ASSERT(!remote_target_path(&u[0], dots[i], path, sizeof path, &why));
        ASSERT(strcmp(why, "a . or .. segment in the path") == 0);
    }
    remote_urls_free(u, n);
    return 0;
}
