/* test_dispatch.c - the dispatch path (runtime/dispatch.c): the method
 * check and its words, route choice by path and by name with real
 * snapshots, the 503s of a backend that refuses, the 508 of a call nested
 * too deep, and a request queued on the echo plugin coming back through
 * its origin's ready callback.
 *
 * Endpoints send their traffic to real backends of the echo plugin of the
 * build tree (UNIT_ECHO_PLUGIN), as in test_routes.c. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "dispatch.h"
#include "handles.h"
#include "metrics.h"
#include "spec.h"
#include "unit.h"

static struct backend *test_dispatch_echo;

static struct backend *test_dispatch_lookup(void *ctx, const char *name)
{
    (void)ctx;
    (void)name;
    return test_dispatch_echo;
}

/* A snapshot of one endpoint "e0" on route (NULL: handle only) with these
 * methods, served by a fresh echo backend queueing at most max_queued. */
static struct routes *test_dispatch_routes(const char *route, unsigned methods,
                                           uint32_t max_queued)
{
    char err[512];
    struct backend_spec spec = {.name = "echo", .plugin = UNIT_ECHO_PLUGIN};
    backend_options_default(&spec.options);
    spec.options.max_queued_requests = max_queued;
    spec.config = config_new();
    test_dispatch_echo = backend_create(&spec, err, sizeof err);
    config_free(spec.config);
    if (!test_dispatch_echo) UNIT_FAIL("echo backend: %s", err);
    struct share share = {"echo", 1.0};
    struct endpoint_spec e = {.name = "e0", .route = (char *)route, .methods = methods,
                              .traffic = &share, .traffic_count = 1};
    struct routes *r = routes_build(&e, 1, test_dispatch_lookup, NULL);
    ASSERT_NOT_NULL(r);
    return r;
}

static void test_dispatch_finish(struct routes *r)
{
    dispatch_shutdown();
    routes_release(r);
    backend_stop(test_dispatch_echo);
    backend_release(test_dispatch_echo);
    test_dispatch_echo = NULL;
}

static serve_request *test_dispatch_request(const char *method, const char *path)
{
    serve_request *req = request_new(0, NULL);
    ASSERT_NOT_NULL(req);
    req->method = method;
    req->path = path;
    request_id_generate(req->id_buf);
    req->id = req->id_buf;
    return req;
}

/* An origin that records what came back. */
static pthread_mutex_t test_dispatch_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t test_dispatch_cond = PTHREAD_COND_INITIALIZER;
static int test_dispatch_ready_status;

static void test_dispatch_ready(serve_request *req)
{
    dispatch_disarm(req);
    pthread_mutex_lock(&test_dispatch_mutex);
    test_dispatch_ready_status = req->status;
    pthread_cond_broadcast(&test_dispatch_cond);
    pthread_mutex_unlock(&test_dispatch_mutex);
    request_release(req); /* the execution reference */
    request_release(req); /* the origin's */
}

static void test_dispatch_failed(serve_request *req, int status, const char *message)
{
    (void)req;
    UNIT_FAIL("unexpected %d: %s", status, message);
}

static const struct dispatch_origin test_dispatch_origin = {
    .ready = test_dispatch_ready, .failed = test_dispatch_failed, .count_endpoint = true};

static int test_dispatch_wait_ready(void)
{
    pthread_mutex_lock(&test_dispatch_mutex);
    while (!test_dispatch_ready_status)
        pthread_cond_wait(&test_dispatch_cond, &test_dispatch_mutex);
    int status = test_dispatch_ready_status;
    test_dispatch_ready_status = 0;
    pthread_mutex_unlock(&test_dispatch_mutex);
    return status;
}

TEST_IMPL(dispatch_method_check)
{
    struct route_entry e = {.endpoint = "echo", .methods = METHOD_GET | METHOD_POST};
    struct dispatch_error err = {0};
    ASSERT(dispatch_check_method(&e, "GET", &err));
    ASSERT(dispatch_check_method(&e, "POST", &err));
    ASSERT_EQ(err.status, 0);

    ASSERT(!dispatch_check_method(&e, "PUT", &err));
    ASSERT_EQ(err.status, 405);
    ASSERT_STR_EQ(err.allow, "GET,POST");
    ASSERT_STR_EQ(err.message, "method PUT not allowed on endpoint echo (allowed: GET,POST)");

    ASSERT(!dispatch_check_method(&e, "BREW", &err));
    ASSERT_EQ(err.status, 501);
    ASSERT_STR_EQ(err.allow, "GET,POST");
    ASSERT_STR_EQ(err.message, "method BREW is not supported");
    return 0;
}

TEST_IMPL(dispatch_route_by_path)
{
    struct routes *r = test_dispatch_routes("/echo", METHOD_POST, 1024);
    struct dispatch_error err;
    const struct route_entry *e = dispatch_route_path(r, "/echo/x", "POST", &err);
    ASSERT_NOT_NULL(e);
    ASSERT_STR_EQ(e->endpoint, "e0");
    ASSERT_EQ(err.status, 0);

    struct endpoint_metrics *unrouted = metrics_endpoint("");
    unsigned long before = atomic_load(&unrouted->by_status[404 - 100]);
    ASSERT_NULL(dispatch_route_path(r, "/nope", "POST", &err));
    ASSERT_EQ(err.status, 404);
    ASSERT_STR_EQ(err.message, "no endpoint serves /nope; GET /-/routes lists the routes");
    ASSERT_STR_EQ(err.allow, "");
    ASSERT_EQ(atomic_load(&unrouted->by_status[404 - 100]), before + 1);
    ASSERT_NULL(dispatch_route_path(NULL, "/echo", "POST", &err));
    ASSERT_EQ(err.status, 404);

    unsigned long refused = atomic_load(&e->metrics->by_status[405 - 100]);
    ASSERT_NULL(dispatch_route_path(r, "/echo", "GET", &err));
    ASSERT_EQ(err.status, 405);
    ASSERT_STR_EQ(err.allow, "POST");
    ASSERT_STR_EQ(err.message, "method GET not allowed on endpoint e0 (allowed: POST)");
    ASSERT_EQ(atomic_load(&e->metrics->by_status[405 - 100]), refused + 1);
    test_dispatch_finish(r);
    return 0;
}

TEST_IMPL(dispatch_submit_queues_and_answers)
{
    struct routes *r = test_dispatch_routes("/echo", METHODS_DEFAULT, 1024);
    struct dispatch_error err;
    const struct route_entry *e = dispatch_route_path(r, "/echo", "POST", &err);
    ASSERT_NOT_NULL(e);
    serve_request *req = test_dispatch_request("POST", "/echo");
    req->body = "hi";
    req->body_len = 2;
    ASSERT_EQ(dispatch_submit(req, e, &test_dispatch_origin, NULL, &err), DISPATCH_QUEUED);
    ASSERT_EQ(err.status, 0);
    ASSERT_EQ(test_dispatch_wait_ready(), 200);
    test_dispatch_finish(r);
    return 0;
}

TEST_IMPL(dispatch_submit_overloaded)
{
    struct routes *r = test_dispatch_routes("/echo", METHODS_DEFAULT, 0);
    struct dispatch_error err;
    const struct route_entry *e = dispatch_route_path(r, "/echo", "POST", &err);
    ASSERT_NOT_NULL(e);
    unsigned long before = atomic_load(&e->metrics->by_status[503 - 100]);
    serve_request *req = test_dispatch_request("POST", "/echo");
    ASSERT_EQ(dispatch_submit(req, e, &test_dispatch_origin, NULL, &err), DISPATCH_REFUSED);
    ASSERT_EQ(err.status, 503);
    ASSERT_STR_EQ(err.message, "request dropped: backend echo is overloaded (0 requests queued)");
    ASSERT_EQ(atomic_load(&e->metrics->by_status[503 - 100]), before + 1);
    ASSERT_PTR_EQ(req->backend, test_dispatch_echo);
    request_release(req);

    backend_stop(test_dispatch_echo);
    req = test_dispatch_request("POST", "/echo");
    ASSERT_EQ(dispatch_submit(req, e, &test_dispatch_origin, NULL, &err), DISPATCH_REFUSED);
    ASSERT_EQ(err.status, 503);
    ASSERT_STR_EQ(err.message, "backend echo is not accepting requests");
    request_release(req);
    test_dispatch_finish(r);
    return 0;
}

TEST_IMPL(dispatch_call_by_name)
{
    struct dispatch_error err;
    serve_request *req = (serve_request *)handles_call_new("e0", NULL);
    ASSERT_NOT_NULL(req);
    ASSERT_EQ(dispatch_call(req, &test_dispatch_origin, &err), DISPATCH_REFUSED);
    ASSERT_EQ(err.status, 404);
    ASSERT_STR_EQ(err.message, "no endpoint named e0");
    request_release(req);

    struct routes *r = test_dispatch_routes("/echo", METHOD_GET, 1024);
    dispatch_publish_routes(r);
    /* Calls are not method-checked, and see the route as their path. */
    req = (serve_request *)handles_call_new("e0", NULL);
    ASSERT_NOT_NULL(req);
    req->call_depth = SERVE_MAX_CALL_DEPTH + 1;
    req->too_deep = true;
    ASSERT_EQ(dispatch_call(req, &test_dispatch_origin, &err), DISPATCH_REFUSED);
    ASSERT_EQ(err.status, 508);
    char expected[128];
    snprintf(expected, sizeof expected, "call to endpoint e0 refused: over %d nested calls",
             SERVE_MAX_CALL_DEPTH);
    ASSERT_STR_EQ(err.message, expected);
    request_release(req);

    req = (serve_request *)handles_call_new("e0", NULL);
    ASSERT_EQ(dispatch_call(req, &test_dispatch_origin, &err), DISPATCH_QUEUED);
    ASSERT_EQ(test_dispatch_wait_ready(), 200);
    test_dispatch_finish(r);
    return 0;
}
