/* oip_front.c - the Open Inference Protocol's paths (oip_front.h). */
#include "oip_front.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "dispatch.h"

#ifndef SERVE_VERSION
#define SERVE_VERSION "dev"
#endif

static void answer(struct http1_exchange *ex, const char *request_id, bool close, int status,
                   const char *body, size_t len)
{
    struct http1_answer a = {.status = status, .content_type = "application/json",
                             .request_id = request_id, .body = body, .body_len = len,
                             .close = close};
    http1_answer(ex, &a);
}

static void answer_405(struct http1_exchange *ex, const char *request_id, bool close,
                       const char *allow, const char *what)
{
    char message[160];
    snprintf(message, sizeof message, "method not allowed: %s takes %s", what, allow);
    size_t len = 0;
    char *body = json_error_body(message, &len);
    struct http1_answer a = {.status = 405, .content_type = "application/json",
                             .request_id = request_id, .allow = allow, .body = body,
                             .body_len = body ? len : 0, .free_body = free, .close = close};
    http1_answer(ex, &a);
}

static bool is_get(const char *method)
{
    return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
}

static void model_metadata(struct http1_exchange *ex, const char *request_id, bool close,
                           const struct route_entry *e, const char *version)
{
    const char *tensors = e->target_count ? backend_tensor_metadata(e->targets[0].backend) : NULL;
    /* Endpoint names are printable ASCII without quotes or backslashes
     * (spec.c), so they go into the JSON as they are. */
    char head[512];
    int n = snprintf(head, sizeof head, "{\"name\":\"%s\",\"versions\":[\"%s\"],"
                     "\"platform\":\"serve\",", e->endpoint, version[0] ? version : "1");
    size_t tlen = tensors ? strlen(tensors) : 0;
    const char *none = "\"inputs\":[],\"outputs\":[]";
    size_t len = (size_t)n + (tensors ? tlen : strlen(none)) + 1;
    char *body = malloc(len + 1);
    if (!body || n < 0 || (size_t)n >= sizeof head) {
        free(body);
        http1_answer_error(ex, 500, request_id, "out of memory", close);
        return;
    }
    snprintf(body, len + 1, "%s%s}", head, tensors ? tensors : none);
    struct http1_answer a = {.status = 200, .content_type = "application/json",
                             .request_id = request_id, .body = body, .body_len = len,
                             .free_body = free, .close = close};
    http1_answer(ex, &a);
}

/* /v2/models/...: which model, which version, and what is asked of it. */
static enum oip_outcome models(const struct routes *routes, struct http1_exchange *ex,
                               const char *rest, const char *method, const char *request_id,
                               bool close, const struct route_entry **route)
{
    char name[256], version[64] = "";
    const char *slash = strchr(rest, '/');
    size_t nlen = slash ? (size_t)(slash - rest) : strlen(rest);
    const char *what = slash ? slash : "";
    if (nlen == 0 || nlen >= sizeof name) {
        http1_answer_error(ex, 404, request_id, "unknown model: /v2/models/NAME names an endpoint",
                           close);
        return OIP_ANSWERED;
    }
    memcpy(name, rest, nlen);
    name[nlen] = '\0';
    if (strncmp(what, "/versions/", 10) == 0) {
        const char *v = what + 10, *end = strchr(v, '/');
        size_t vlen = end ? (size_t)(end - v) : strlen(v);
        bool plain = vlen > 0 && vlen < sizeof version;
        for (size_t i = 0; plain && i < vlen; i++)
            plain = isalnum((unsigned char)v[i]) || v[i] == '.' || v[i] == '_' || v[i] == '-';
        if (!plain) {
            http1_answer_error(ex, 404, request_id, "malformed model version in the path "
                               "(letters, digits, '.', '_' and '-')", close);
            return OIP_ANSWERED;
        }
        memcpy(version, v, vlen);
        version[vlen] = '\0';
        what = end ? end : "";
    }
    const struct route_entry *e = routes_find(routes, name);
    if (!e || !e->route) {
        char message[400];
        snprintf(message, sizeof message, "unknown model '%s': a model is an endpoint with a "
                 "route (GET /-/routes lists them)", name);
        http1_answer_error(ex, 404, request_id, message, close);
        return OIP_ANSWERED;
    }
    if (strcmp(what, "/infer") == 0) {
        if (strcmp(method, "POST") != 0) {
            answer_405(ex, request_id, close, "POST", "infer");
            return OIP_ANSWERED;
        }
        /* An endpoint whose methods leave POST out takes no inference
         * either: /v2 is another way in, not around its rules. */
        struct dispatch_error err;
        if (!dispatch_check_method(e, "POST", &err)) {
            snprintf(err.message, sizeof err.message, "method not allowed: endpoint %s does not "
                     "take POST (its methods: %s), so no inference either", e->endpoint, err.allow);
            http1_answer_error(ex, 405, request_id, err.message, close);
            return OIP_ANSWERED;
        }
        *route = e;
        return OIP_INFER;
    }
    if (strcmp(what, "") != 0 && strcmp(what, "/ready") != 0) {
        http1_answer_error(ex, 404, request_id, "unknown model path: /v2/models/NAME[/versions/V]"
                           " is followed by nothing, /ready or /infer", close);
        return OIP_ANSWERED;
    }
    if (!is_get(method)) {
        answer_405(ex, request_id, close, "GET, HEAD", "model metadata and readiness");
        return OIP_ANSWERED;
    }
    if (what[0])
        answer(ex, request_id, close, 200, "", 0); /* ready: it is routed */
    else
        model_metadata(ex, request_id, close, e, version);
    return OIP_ANSWERED;
}

enum oip_outcome oip_front_route(const struct routes *routes, struct http1_exchange *ex,
                                 const char *path, const char *method, const char *request_id,
                                 bool close, const struct route_entry **route)
{
    if (strncmp(path, "/v2/models/", 11) == 0)
        return models(routes, ex, path + 11, method, request_id, close, route);
    bool server = strcmp(path, "/v2") == 0 || strcmp(path, "/v2/") == 0;
    bool health = strcmp(path, "/v2/health/live") == 0 || strcmp(path, "/v2/health/ready") == 0;
    if (!server && !health) return OIP_NOT_MINE;
    if (!is_get(method)) {
        answer_405(ex, request_id, close, "GET, HEAD", path);
        return OIP_ANSWERED;
    }
    if (health) {
        /* Live while it answers; a draining server refused the request
         * before it came here (503), so ready too. */
        answer(ex, request_id, close, 200, "", 0);
        return OIP_ANSWERED;
    }
    static const char metadata[] = "{\"name\":\"serve\",\"version\":\"" SERVE_VERSION
                                   "\",\"extensions\":[\"binary_tensor_data\"]}";
    answer(ex, request_id, close, 200, metadata, sizeof metadata - 1);
    return OIP_ANSWERED;
}
