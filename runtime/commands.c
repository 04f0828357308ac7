/* commands.c - the control plane's commands. Each change is applied, then
 * persisted; only a persisted change is acknowledged, and a change that
 * cannot be persisted is undone. Runs on the control thread only. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "handles.h"
#include "log.h"
#include "mp.h"
#include "server_internal.h"

bool server_publish_routes(struct server *s)
{
    size_t n = s->declared.endpoint_count;
    struct backend **backends = calloc(n + 1, sizeof *backends);
    if (!backends) return false;
    for (size_t i = 0; i < n; i++) {
        long b = deployment_find_backend(&s->declared, s->declared.endpoints[i].backend);
        backends[i] = s->live[b]; /* endpoints only ever name existing backends */
    }
    struct routes *routes = routes_build(s->declared.endpoints, backends, n);
    free(backends);
    if (!routes) return false;
    http_server_publish_routes(s->http, routes);
    handles_publish_routes(routes);
    if (s->routes) routes_release(s->routes);
    s->routes = routes;
    return true;
}

static bool grow(void **array, size_t count, size_t size)
{
    void *grown = realloc(*array, (count + 1) * size);
    if (grown) *array = grown;
    return grown != NULL;
}

bool server_add_live_backend(struct server *s, const struct backend_spec *spec,
                             char *err, size_t errlen)
{
    long i = deployment_find_backend(&s->declared, spec->name);
    struct backend *b = backend_create(spec, err, errlen);
    if (!b) return false;
    s->live[i] = b;
    LOG_INFO("backend=%s: started %u replica(s) of %s", spec->name,
             spec->options.num_replicas, spec->plugin);
    return true;
}

static bool persist(struct server *s, char *err, size_t errlen)
{
    return deployment_save(&s->declared, s->state_path, err, errlen);
}

static bool create_backend(struct server *s, const msgpack_object *req,
                           msgpack_packer *pk, char *err, size_t errlen)
{
    struct backend_spec spec;
    if (!backend_spec_unpack(mp_get(req, "backend"), &spec, err, errlen)) return false;
    if (deployment_find_backend(&s->declared, spec.name) >= 0) {
        snprintf(err, errlen, "backend %s already exists", spec.name);
        backend_spec_free(&spec);
        return false;
    }
    struct backend *b = backend_create(&spec, err, errlen);
    if (!b) {
        backend_spec_free(&spec);
        return false;
    }
    struct deployment *d = &s->declared;
    if (!grow((void **)&d->backends, d->backend_count, sizeof *d->backends) ||
        !grow((void **)&s->live, d->backend_count, sizeof *s->live)) {
        snprintf(err, errlen, "out of memory");
        goto undo_live;
    }
    d->backends[d->backend_count] = spec;
    s->live[d->backend_count] = b;
    d->backend_count++;
    if (!persist(s, err, errlen)) {
        d->backend_count--;
        goto undo_live;
    }
    LOG_INFO("backend=%s: created with %u replica(s) of %s", spec.name,
             spec.options.num_replicas, spec.plugin);
    backend_pack_status(b, pk);
    return true;
undo_live:
    backend_stop(b);
    backend_release(b);
    backend_spec_free(&spec);
    return false;
}

static bool delete_backend(struct server *s, const msgpack_object *req,
                           msgpack_packer *pk, char *err, size_t errlen)
{
    char *name = NULL;
    if (!mp_as_str(mp_get(req, "name"), &name)) {
        snprintf(err, errlen, "delete-backend: name missing");
        return false;
    }
    struct deployment *d = &s->declared;
    long i = deployment_find_backend(d, name);
    bool ok = false;
    if (i < 0) {
        snprintf(err, errlen, "backend %s does not exist", name);
        goto out;
    }
    for (size_t e = 0; e < d->endpoint_count; e++)
        if (strcmp(d->endpoints[e].backend, name) == 0) {
            snprintf(err, errlen,
                     "backend %s is used by endpoint %s; delete that endpoint first", name,
                     d->endpoints[e].name);
            goto out;
        }
    struct backend_spec spec = d->backends[i];
    struct backend *b = s->live[i];
    size_t tail = d->backend_count - (size_t)i - 1;
    memmove(&d->backends[i], &d->backends[i + 1], tail * sizeof *d->backends);
    memmove(&s->live[i], &s->live[i + 1], tail * sizeof *s->live);
    d->backend_count--;
    if (!persist(s, err, errlen)) {
        memmove(&d->backends[i + 1], &d->backends[i], tail * sizeof *d->backends);
        memmove(&s->live[i + 1], &s->live[i], tail * sizeof *s->live);
        d->backends[i] = spec;
        s->live[i] = b;
        d->backend_count++;
        goto out;
    }
    backend_stop(b);
    backend_release(b);
    backend_spec_free(&spec);
    LOG_INFO("backend=%s: deleted", name);
    mp_pack_str(pk, name);
    ok = true;
out:
    free(name);
    return ok;
}

static bool create_endpoint(struct server *s, const msgpack_object *req,
                            msgpack_packer *pk, char *err, size_t errlen)
{
    struct endpoint_spec spec;
    if (!endpoint_spec_unpack(mp_get(req, "endpoint"), &spec, err, errlen)) return false;
    struct deployment *d = &s->declared;
    if (deployment_find_endpoint(d, spec.name) >= 0) {
        snprintf(err, errlen, "endpoint %s already exists", spec.name);
        goto fail;
    }
    if (deployment_find_backend(d, spec.backend) < 0) {
        snprintf(err, errlen, "backend %s does not exist; create it with serve create-backend",
                 spec.backend);
        goto fail;
    }
    for (size_t e = 0; spec.route && e < d->endpoint_count; e++)
        if (d->endpoints[e].route && strcmp(d->endpoints[e].route, spec.route) == 0) {
            snprintf(err, errlen, "route %s is already served by endpoint %s", spec.route,
                     d->endpoints[e].name);
            goto fail;
        }
    if (!grow((void **)&d->endpoints, d->endpoint_count, sizeof *d->endpoints)) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    d->endpoints[d->endpoint_count++] = spec;
    if (!persist(s, err, errlen)) {
        d->endpoint_count--;
        goto fail;
    }
    server_publish_routes(s);
    LOG_INFO("endpoint=%s: created, route %s, backend %s", spec.name,
             spec.route ? spec.route : "(handle only)", spec.backend);
    endpoint_spec_pack(pk, &spec);
    return true;
fail:
    endpoint_spec_free(&spec);
    return false;
}

static bool delete_endpoint(struct server *s, const msgpack_object *req,
                            msgpack_packer *pk, char *err, size_t errlen)
{
    char *name = NULL;
    if (!mp_as_str(mp_get(req, "name"), &name)) {
        snprintf(err, errlen, "delete-endpoint: name missing");
        return false;
    }
    struct deployment *d = &s->declared;
    long i = deployment_find_endpoint(d, name);
    bool ok = false;
    if (i < 0) {
        snprintf(err, errlen, "endpoint %s does not exist", name);
        goto out;
    }
    struct endpoint_spec spec = d->endpoints[i];
    size_t tail = d->endpoint_count - (size_t)i - 1;
    memmove(&d->endpoints[i], &d->endpoints[i + 1], tail * sizeof *d->endpoints);
    d->endpoint_count--;
    if (!persist(s, err, errlen)) {
        memmove(&d->endpoints[i + 1], &d->endpoints[i], tail * sizeof *d->endpoints);
        d->endpoints[i] = spec;
        d->endpoint_count++;
        goto out;
    }
    server_publish_routes(s);
    endpoint_spec_free(&spec);
    LOG_INFO("endpoint=%s: deleted", name);
    mp_pack_str(pk, name);
    ok = true;
out:
    free(name);
    return ok;
}

static void pack_backends(struct server *s, msgpack_packer *pk)
{
    msgpack_pack_array(pk, s->declared.backend_count);
    for (size_t i = 0; i < s->declared.backend_count; i++) backend_pack_status(s->live[i], pk);
}

static void pack_endpoints(struct server *s, msgpack_packer *pk)
{
    msgpack_pack_array(pk, s->declared.endpoint_count);
    for (size_t i = 0; i < s->declared.endpoint_count; i++)
        endpoint_spec_pack(pk, &s->declared.endpoints[i]);
}

static bool list_backends(struct server *s, const msgpack_object *req,
                          msgpack_packer *pk, char *err, size_t errlen)
{
    (void)req, (void)err, (void)errlen;
    pack_backends(s, pk);
    return true;
}

static bool list_endpoints(struct server *s, const msgpack_object *req,
                           msgpack_packer *pk, char *err, size_t errlen)
{
    (void)req, (void)err, (void)errlen;
    pack_endpoints(s, pk);
    return true;
}

static bool status(struct server *s, const msgpack_object *req, msgpack_packer *pk,
                   char *err, size_t errlen)
{
    (void)req, (void)err, (void)errlen;
    msgpack_pack_map(pk, 7);
    mp_pack_key(pk, "url");
    mp_pack_str(pk, s->url);
    mp_pack_key(pk, "pid");
    msgpack_pack_int64(pk, getpid());
    mp_pack_key(pk, "uptime_s");
    msgpack_pack_int64(pk, (int64_t)(time(NULL) - s->started_at));
    mp_pack_key(pk, "state_dir");
    mp_pack_str(pk, s->options.state_dir);
    mp_pack_key(pk, "outstanding_requests");
    msgpack_pack_uint64(pk, http_server_outstanding(s->http));
    mp_pack_key(pk, "backends");
    pack_backends(s, pk);
    mp_pack_key(pk, "endpoints");
    pack_endpoints(s, pk);
    return true;
}

static bool stop(struct server *s, const msgpack_object *req, msgpack_packer *pk,
                 char *err, size_t errlen)
{
    (void)err, (void)errlen;
    double timeout = 30;
    mp_as_double(mp_get(req, "timeout_s"), &timeout);
    s->stop_timeout_s = timeout;
    msgpack_pack_map(pk, 1);
    mp_pack_key(pk, "pid");
    msgpack_pack_int64(pk, getpid());
    /* The main thread waits for this signal (see server_run). */
    kill(getpid(), SIGTERM);
    return true;
}

struct command {
    const char *name;
    bool (*run)(struct server *s, const msgpack_object *req, msgpack_packer *pk,
                char *err, size_t errlen);
};

static const struct command commands[] = {
    {"create-backend", create_backend},   {"delete-backend", delete_backend},
    {"create-endpoint", create_endpoint}, {"delete-endpoint", delete_endpoint},
    {"list-backends", list_backends},     {"list-endpoints", list_endpoints},
    {"status", status},                   {"stop", stop},
};

bool command_run(struct server *s, const msgpack_object *request, msgpack_packer *pk,
                 char *err, size_t errlen)
{
    const msgpack_object *cmd = mp_get(request, "cmd");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (mp_str_eq(cmd, commands[i].name)) return commands[i].run(s, request, pk, err, errlen);
    snprintf(err, errlen, "unknown control command");
    return false;
}
