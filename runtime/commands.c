/* commands.c - the control plane's commands.
 *
 * Every change is made the same way: build the desired deployment (the
 * current one with the change), then apply() it. apply() starts what is
 * new, reconfigures or replaces what changed, persists, publishes the new
 * routes, and only then stops what is gone. Any failure before the state
 * file is written undoes everything, so the server is left as it was and
 * nothing unacknowledged is persisted. Runs on the control thread only. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "dispatch.h"
#include "live_stats.h"
#include "log.h"
#include "mp.h"
#include "plugin_store.h"
#include "server_internal.h"

/* routes_build's lookup over a deployment and its live backends. */
struct live_view {
    const struct deployment *declared;
    struct backend *const *live;
};

static struct backend *live_lookup(void *ctx, const char *name)
{
    struct live_view *v = ctx;
    return v->live[deployment_find_backend(v->declared, name)];
}

bool server_publish_routes(struct server *s)
{
    struct live_view view = {&s->declared, s->live};
    struct routes *routes =
        routes_build(s->declared.endpoints, s->declared.endpoint_count, live_lookup, &view);
    if (!routes) return false;
    http_server_publish_routes(s->http, routes);
    dispatch_publish_routes(routes);
    if (s->routes) routes_release(s->routes);
    s->routes = routes;
    return true;
}

bool server_add_live_backend(struct server *s, const struct backend_spec *spec,
                             char *err, size_t errlen)
{
    long i = deployment_find_backend(&s->declared, spec->name);
    struct backend *b = backend_create(spec, err, errlen);
    if (!b) return false;
    s->live[i] = b;
    LOG_INFO("backend=%s: started %u replica(s) of %s%s%s%s", spec->name,
             spec->options.num_replicas, spec->plugin ? spec->plugin : spec->remote,
             spec->plugin_digest ? " (the copy of digest " : "",
             spec->plugin_digest ? spec->plugin_digest : "", spec->plugin_digest ? ")" : "");
    return true;
}

/* True when only the user config differs. */
static bool config_only_change(const struct backend_spec *a, const struct backend_spec *b)
{
    return backend_spec_same_code(a, b) && backend_options_equal(&a->options, &b->options);
}

/* A copy is the server's to make: what a client sends is a path. */
static void forget_copy(struct backend_spec *spec)
{
    free(spec->plugin_file);
    free(spec->plugin_digest);
    spec->plugin_file = spec->plugin_digest = NULL;
}

/* Where plugin_store.h keeps this server's copies. */
static void store_dir(const struct server *s, char *out, size_t len)
{
    snprintf(out, len, "%s/plugins", s->options.state_dir);
}

enum plan { PLAN_KEEP, PLAN_RECONFIGURE, PLAN_NEW };

/* Makes the server run `desired`, which this takes over in every case. */
static bool apply(struct server *s, struct deployment *desired, char *err, size_t errlen)
{
    if (!deployment_valid(desired, err, errlen)) {
        deployment_free(desired);
        return false;
    }
    size_t n = desired->backend_count;
    /* An autoscaled backend that stays autoscaled keeps the count its
     * autoscaler chose: a deploy file's num_replicas is where it starts,
     * not where an apply sends it back to (update-backend --num-replicas
     * moves it, see update_backend). */
    for (size_t i = 0; i < n; i++) {
        struct backend_options *want = &desired->backends[i].options;
        long j = deployment_find_backend(&s->declared, desired->backends[i].name);
        if (j >= 0 && backend_options_autoscaled(want) &&
            backend_options_autoscaled(&s->declared.backends[j].options))
            want->num_replicas = backend_target_replicas(s->live[j]);
        backend_options_normalize(want);
    }
    /* 0. The plugin files as they are now: private copies, named by content. */
    char store[4200];
    store_dir(s, store, sizeof store);
    for (size_t i = 0; i < n; i++)
        if (!plugin_store_import(store, &desired->backends[i], err, errlen)) {
            deployment_free(desired);
            return false;
        }
    struct backend **live = calloc(n + 1, sizeof *live);
    enum plan *plan = calloc(n + 1, sizeof *plan);
    bool ok = live && plan;
    if (!ok) snprintf(err, errlen, "out of memory");
    size_t reconfigured = 0;

    /* 1. Start what is new or replaced; keep what is unchanged. */
    for (size_t i = 0; ok && i < n; i++) {
        const struct backend_spec *want = &desired->backends[i];
        long j = deployment_find_backend(&s->declared, want->name);
        if (j >= 0 && backend_spec_equal(want, &s->declared.backends[j])) {
            plan[i] = PLAN_KEEP;
            live[i] = s->live[j];
        } else if (j >= 0 && config_only_change(want, &s->declared.backends[j]) &&
                   backend_can_reconfigure(s->live[j])) {
            plan[i] = PLAN_RECONFIGURE;
            live[i] = s->live[j];
        } else {
            plan[i] = PLAN_NEW;
            live[i] = backend_create(want, err, errlen);
            ok = live[i] != NULL;
            if (ok && j >= 0) backend_count_replica_restarts(live[i]);
        }
    }
    /* 2. New user config for running replicas, between their batches. */
    for (size_t i = 0; ok && i < n; i++) {
        if (plan[i] != PLAN_RECONFIGURE) continue;
        ok = backend_reconfigure(live[i], desired->backends[i].config, err, errlen);
        if (ok) reconfigured = i + 1;
    }
    /* 3. Persist; from here on the change is acknowledged. */
    struct deployment old = s->declared;
    struct backend **old_live = s->live;
    if (ok) {
        s->declared = *desired;
        s->live = live;
        ok = deployment_save(&s->declared, s->state_path, err, errlen);
        if (!ok) {
            s->declared = old;
            s->live = old_live;
        }
    }
    if (!ok) {
        for (size_t i = 0; live && plan && i < reconfigured; i++)
            if (plan[i] == PLAN_RECONFIGURE) {
                long j = deployment_find_backend(&old, desired->backends[i].name);
                char ignored[256];
                backend_reconfigure(live[i], old.backends[j].config, ignored, sizeof ignored);
            }
        for (size_t i = 0; live && plan && i < n; i++)
            if (plan[i] == PLAN_NEW && live[i]) {
                backend_stop(live[i]);
                backend_release(live[i]);
            }
        free(live);
        free(plan);
        deployment_free(desired);
        return false;
    }
    /* 4. Route to the new set; every HTTP thread has it when this returns. */
    server_publish_routes(s);
    /* Logged in the order it happened: new replicas serve before old ones drain. */
    for (size_t i = 0; i < n; i++)
        if (plan[i] != PLAN_KEEP)
            LOG_INFO("backend=%s: %s", s->declared.backends[i].name,
                     plan[i] == PLAN_NEW ? "new replicas running and routed to" : "reconfigured");
    /* 5. Stop what is no longer used: backends removed or replaced. */
    for (size_t j = 0; j < old.backend_count; j++) {
        bool kept = false;
        for (size_t i = 0; i < n && !kept; i++) kept = live[i] == old_live[j];
        if (kept) continue;
        LOG_INFO("backend=%s: draining and stopping the old replicas", old.backends[j].name);
        backend_stop(old_live[j]);
        backend_release(old_live[j]);
    }
    free(old_live);
    free(plan);
    deployment_free(&old);
    plugin_store_sweep(store, &s->declared);
    return true;
}

void server_autoscale_tick(struct server *s)
{
    uint64_t now = serve__now_ns();
    bool changed = false;
    for (size_t i = 0; i < s->declared.backend_count; i++) {
        if (!backend_autoscale_tick(s->live[i], now)) continue;
        s->declared.backends[i].options.num_replicas = backend_target_replicas(s->live[i]);
        changed = true;
    }
    char err[1024];
    if (changed && !deployment_save(&s->declared, s->state_path, err, sizeof err))
        LOG_ERROR("autoscaling: the new replica counts run but could not be saved: %s", err);
}

/* The current deployment, copied, to change and apply. */
static bool current(struct server *s, struct deployment *d, char *err, size_t errlen)
{
    if (deployment_copy(d, &s->declared)) return true;
    snprintf(err, errlen, "out of memory");
    return false;
}

static bool create_backend(struct server *s, const msgpack_object *req,
                           msgpack_packer *pk, char *err, size_t errlen)
{
    struct backend_spec spec;
    if (!backend_spec_unpack(mp_get(req, "backend"), &spec, err, errlen)) return false;
    forget_copy(&spec);
    struct deployment d;
    bool ok = false;
    if (deployment_find_backend(&s->declared, spec.name) >= 0) {
        snprintf(err, errlen, "backend %s already exists", spec.name);
    } else if (current(s, &d, err, errlen)) {
        char name[80];
        snprintf(name, sizeof name, "%s", spec.name);
        ok = deployment_add_backend(&d, &spec) && apply(s, &d, err, errlen);
        if (ok) backend_pack_status(s->live[deployment_find_backend(&s->declared, name)], pk);
    }
    backend_spec_free(&spec);
    return ok;
}

static bool update_backend(struct server *s, const msgpack_object *req,
                           msgpack_packer *pk, char *err, size_t errlen)
{
    char *name = NULL;
    if (!mp_as_str(mp_get(req, "name"), &name)) {
        snprintf(err, errlen, "update-backend: name missing");
        return false;
    }
    long i = deployment_find_backend(&s->declared, name);
    struct deployment d;
    bool ok = false;
    if (i < 0) {
        snprintf(err, errlen, "backend %s does not exist", name);
    } else if (current(s, &d, err, errlen)) {
        /* Start from the current spec; the request carries only changes. */
        struct backend_spec *spec = &d.backends[i];
        struct backend_options *o = &spec->options;
        serve_config *old_config = config_copy(spec->config);
        const msgpack_object *changes = mp_get(req, "changes");
        uint64_t u;
        double v;
        char *plugin = NULL;
        if (mp_as_uint(mp_get(changes, "num_replicas"), &u)) o->num_replicas = (uint32_t)u;
        if (mp_as_uint(mp_get(changes, "max_batch_size"), &u)) o->max_batch_size = (uint32_t)u;
        if (mp_as_uint(mp_get(changes, "max_concurrent_queries"), &u))
            o->max_concurrent_queries = (uint32_t)u;
        if (mp_as_uint(mp_get(changes, "max_queued_requests"), &u))
            o->max_queued_requests = (uint32_t)u;
        if (mp_as_double(mp_get(changes, "batch_wait_timeout_ms"), &v)) o->batch_wait_timeout_ms = v;
        if (mp_as_double(mp_get(changes, "request_timeout_ms"), &v)) o->request_timeout_ms = v;
        if (mp_as_double(mp_get(changes, "hang_timeout_ms"), &v)) o->hang_timeout_ms = v;
        if (mp_as_uint(mp_get(changes, "max_memory"), &u)) o->max_memory = u;
        if (mp_as_uint(mp_get(changes, "min_replicas"), &u)) o->min_replicas = (uint32_t)u;
        if (mp_as_uint(mp_get(changes, "max_replicas"), &u)) o->max_replicas = (uint32_t)u;
        if (mp_as_double(mp_get(changes, "target_ongoing_requests"), &v))
            o->target_ongoing_requests = v;
        if (mp_as_double(mp_get(changes, "upscale_delay_s"), &v)) o->upscale_delay_s = v;
        if (mp_as_double(mp_get(changes, "downscale_delay_s"), &v)) o->downscale_delay_s = v;
        if (mp_as_double(mp_get(changes, "latency_slo_ms"), &v)) o->latency_slo_ms = v;
        char *isolation = NULL;
        if (mp_as_str(mp_get(changes, "isolation"), &isolation))
            o->isolation = isolation_from_name(isolation);
        free(isolation);
        char *remote = NULL;
        if (mp_as_str(mp_get(changes, "plugin"), &plugin)) {
            /* Read again even when the path is the same: it may be a new build. */
            free(spec->plugin);
            spec->plugin = plugin;
            free(spec->remote);
            spec->remote = NULL;
            forget_copy(spec);
        } else if (mp_as_str(mp_get(changes, "remote"), &remote)) {
            free(spec->remote);
            spec->remote = remote;
            free(spec->plugin);
            spec->plugin = NULL;
            forget_copy(spec);
        }
        const msgpack_object *set = mp_get(changes, "config");
        const msgpack_object *bases = mp_get(changes, "config_base");
        for (uint32_t k = 0; set && set->type == MSGPACK_OBJECT_MAP && k < set->via.map.size; k++) {
            char *key = NULL, *value = NULL, base[4096];
            if (mp_as_str(&set->via.map.ptr[k].key, &key) &&
                mp_as_str(&set->via.map.ptr[k].val, &value))
                config_set_at(spec->config, key, value,
                              config_base_in(bases, key, base, sizeof base));
            free(key);
            free(value);
        }
        const msgpack_object *unset = mp_get(changes, "unset_config");
        for (uint32_t k = 0; unset && unset->type == MSGPACK_OBJECT_ARRAY && k < unset->via.array.size; k++) {
            char *key = NULL;
            if (mp_as_str(&unset->via.array.ptr[k], &key)) config_unset(spec->config, key);
            free(key);
        }
        struct backend *before = s->live[i];
        uint32_t before_count = backend_target_replicas(before);
        bool count_given = mp_as_uint(mp_get(changes, "num_replicas"), &u);
        uint32_t count = o->num_replicas;
        if (!backend_options_valid(o, err, errlen)) {
            deployment_free(&d);
        } else {
            ok = apply(s, &d, err, errlen);
            long j = ok ? deployment_find_backend(&s->declared, name) : -1;
            if (ok && count_given && backend_autoscaled(s->live[j])) {
                /* Autoscaled: the count asked for is the target from now on. */
                backend_set_target_replicas(s->live[j], count);
                s->declared.backends[j].options.num_replicas = backend_target_replicas(s->live[j]);
                ok = deployment_save(&s->declared, s->state_path, err, errlen);
            }
            if (ok) {
                /* Unchanged: the same replicas, and no new config for them. */
                msgpack_pack_map(pk, 2);
                mp_pack_key(pk, "changed");
                if (s->live[j] == before && old_config &&
                    backend_target_replicas(before) == before_count &&
                    config_equal(s->declared.backends[j].config, old_config))
                    msgpack_pack_false(pk);
                else
                    msgpack_pack_true(pk);
                mp_pack_key(pk, "backend");
                backend_pack_status(s->live[j], pk);
            }
        }
        config_free(old_config);
    }
    free(name);
    return ok;
}

static bool delete_backend(struct server *s, const msgpack_object *req,
                           msgpack_packer *pk, char *err, size_t errlen)
{
    char *name = NULL;
    if (!mp_as_str(mp_get(req, "name"), &name)) {
        snprintf(err, errlen, "delete-backend: name missing");
        return false;
    }
    long i = deployment_find_backend(&s->declared, name);
    struct deployment d;
    bool ok = false;
    if (i < 0) {
        snprintf(err, errlen, "backend %s does not exist", name);
        goto out;
    }
    for (size_t e = 0; e < s->declared.endpoint_count; e++)
        if (endpoint_uses(&s->declared.endpoints[e], name)) {
            snprintf(err, errlen,
                     "backend %s is used by endpoint %s; delete that endpoint or move its traffic first",
                     name, s->declared.endpoints[e].name);
            goto out;
        }
    if (current(s, &d, err, errlen)) {
        deployment_remove_backend(&d, (size_t)i);
        ok = apply(s, &d, err, errlen);
        if (ok) mp_pack_str(pk, name);
    }
out:
    free(name);
    return ok;
}

static bool create_endpoint(struct server *s, const msgpack_object *req,
                            msgpack_packer *pk, char *err, size_t errlen)
{
    struct endpoint_spec spec;
    if (!endpoint_spec_unpack(mp_get(req, "endpoint"), &spec, err, errlen)) return false;
    struct deployment d;
    bool ok = false;
    if (deployment_find_endpoint(&s->declared, spec.name) >= 0) {
        snprintf(err, errlen, "endpoint %s already exists", spec.name);
    } else if (spec.traffic_count == 1 &&
               deployment_find_backend(&s->declared, spec.traffic[0].backend) < 0) {
        snprintf(err, errlen, "backend %s does not exist; create it with serve create-backend",
                 spec.traffic[0].backend);
    } else if (current(s, &d, err, errlen)) {
        struct endpoint_spec copy;
        ok = endpoint_spec_copy(&copy, &spec) && deployment_add_endpoint(&d, &copy);
        ok = ok && apply(s, &d, err, errlen);
        if (ok) endpoint_spec_pack(pk, &spec);
    }
    endpoint_spec_free(&spec);
    return ok;
}

static bool delete_endpoint(struct server *s, const msgpack_object *req,
                            msgpack_packer *pk, char *err, size_t errlen)
{
    char *name = NULL;
    if (!mp_as_str(mp_get(req, "name"), &name)) {
        snprintf(err, errlen, "delete-endpoint: name missing");
        return false;
    }
    long i = deployment_find_endpoint(&s->declared, name);
    struct deployment d;
    bool ok = false;
    if (i < 0) {
        snprintf(err, errlen, "endpoint %s does not exist", name);
    } else if (current(s, &d, err, errlen)) {
        deployment_remove_endpoint(&d, (size_t)i);
        ok = apply(s, &d, err, errlen);
        if (ok) mp_pack_str(pk, name);
    }
    free(name);
    return ok;
}

/* Reads {"endpoint": E} and finds E in a fresh copy of the deployment. */
static struct endpoint_spec *endpoint_to_change(struct server *s, const msgpack_object *req,
                                                struct deployment *d, char *err, size_t errlen)
{
    char *name = NULL;
    if (!mp_as_str(mp_get(req, "endpoint"), &name)) {
        snprintf(err, errlen, "endpoint name missing");
        return NULL;
    }
    long i = deployment_find_endpoint(&s->declared, name);
    if (i < 0) snprintf(err, errlen, "endpoint %s does not exist", name);
    free(name);
    if (i < 0 || !current(s, d, err, errlen)) return NULL;
    return &d->endpoints[i];
}

static bool set_traffic(struct server *s, const msgpack_object *req, msgpack_packer *pk,
                        char *err, size_t errlen)
{
    struct deployment d;
    struct endpoint_spec *e = endpoint_to_change(s, req, &d, err, errlen);
    if (!e) return false;
    const msgpack_object *traffic = mp_get(req, "traffic");
    if (!traffic || traffic->type != MSGPACK_OBJECT_MAP || traffic->via.map.size == 0) {
        snprintf(err, errlen, "set-traffic: give at least one BACKEND=WEIGHT");
        deployment_free(&d);
        return false;
    }
    for (size_t i = 0; i < e->traffic_count; i++) free(e->traffic[i].backend);
    free(e->traffic);
    e->traffic = calloc(traffic->via.map.size, sizeof *e->traffic);
    e->traffic_count = 0;
    for (uint32_t i = 0; e->traffic && i < traffic->via.map.size; i++) {
        struct share *sh = &e->traffic[e->traffic_count];
        if (!mp_as_str(&traffic->via.map.ptr[i].key, &sh->backend)) break;
        e->traffic_count++;
        mp_as_double(&traffic->via.map.ptr[i].val, &sh->weight);
    }
    char name[80];
    snprintf(name, sizeof name, "%s", e->name);
    if (!apply(s, &d, err, errlen)) return false;
    endpoint_spec_pack(pk, &s->declared.endpoints[deployment_find_endpoint(&s->declared, name)]);
    return true;
}

static bool shadow_traffic(struct server *s, const msgpack_object *req, msgpack_packer *pk,
                           char *err, size_t errlen)
{
    struct deployment d;
    struct endpoint_spec *e = endpoint_to_change(s, req, &d, err, errlen);
    if (!e) return false;
    char *backend = NULL;
    double fraction = -1;
    if (!mp_as_str(mp_get(req, "backend"), &backend) ||
        !mp_as_double(mp_get(req, "fraction"), &fraction) || !(fraction >= 0 && fraction <= 1)) {
        snprintf(err, errlen, "shadow-traffic: FRACTION must be a number from 0 to 1, got %g",
                 fraction);
        free(backend);
        deployment_free(&d);
        return false;
    }
    size_t i = 0;
    while (i < e->shadow_count && strcmp(e->shadows[i].backend, backend) != 0) i++;
    if (fraction == 0) {
        if (i < e->shadow_count) {
            free(e->shadows[i].backend);
            memmove(&e->shadows[i], &e->shadows[i + 1], (e->shadow_count - i - 1) * sizeof *e->shadows);
            e->shadow_count--;
        }
        free(backend);
    } else if (i < e->shadow_count) {
        e->shadows[i].weight = fraction;
        free(backend);
    } else {
        struct share *grown = realloc(e->shadows, (e->shadow_count + 1) * sizeof *grown);
        if (!grown) {
            free(backend);
            deployment_free(&d);
            snprintf(err, errlen, "out of memory");
            return false;
        }
        e->shadows = grown;
        e->shadows[e->shadow_count++] = (struct share){backend, fraction};
    }
    char name[80];
    snprintf(name, sizeof name, "%s", e->name);
    if (!apply(s, &d, err, errlen)) return false;
    endpoint_spec_pack(pk, &s->declared.endpoints[deployment_find_endpoint(&s->declared, name)]);
    return true;
}

/* Packs what changed between two deployments: {"created": [...],
 * "updated": [...], "deleted": [...]} with "backend X" / "endpoint Y". */
static void pack_changes(msgpack_packer *pk, const struct deployment *before,
                         const struct deployment *after)
{
    const char *created[512], *updated[512], *deleted[512];
    const char *kinds_c[512], *kinds_u[512], *kinds_d[512];
    size_t nc = 0, nu = 0, nd = 0;
    for (size_t i = 0; i < after->backend_count && nc < 512 && nu < 512; i++) {
        long j = deployment_find_backend(before, after->backends[i].name);
        if (j < 0) kinds_c[nc] = "backend", created[nc++] = after->backends[i].name;
        else if (!backend_spec_equal(&after->backends[i], &before->backends[j]))
            kinds_u[nu] = "backend", updated[nu++] = after->backends[i].name;
    }
    for (size_t i = 0; i < after->endpoint_count && nc < 512 && nu < 512; i++) {
        long j = deployment_find_endpoint(before, after->endpoints[i].name);
        if (j < 0) kinds_c[nc] = "endpoint", created[nc++] = after->endpoints[i].name;
        else if (!endpoint_spec_equal(&after->endpoints[i], &before->endpoints[j]))
            kinds_u[nu] = "endpoint", updated[nu++] = after->endpoints[i].name;
    }
    for (size_t j = 0; j < before->backend_count && nd < 512; j++)
        if (deployment_find_backend(after, before->backends[j].name) < 0)
            kinds_d[nd] = "backend", deleted[nd++] = before->backends[j].name;
    for (size_t j = 0; j < before->endpoint_count && nd < 512; j++)
        if (deployment_find_endpoint(after, before->endpoints[j].name) < 0)
            kinds_d[nd] = "endpoint", deleted[nd++] = before->endpoints[j].name;
    const char **lists[3] = {created, updated, deleted}, **kinds[3] = {kinds_c, kinds_u, kinds_d};
    size_t counts[3] = {nc, nu, nd};
    static const char *const keys[3] = {"created", "updated", "deleted"};
    msgpack_pack_map(pk, 3);
    for (int l = 0; l < 3; l++) {
        mp_pack_key(pk, keys[l]);
        msgpack_pack_array(pk, counts[l]);
        for (size_t i = 0; i < counts[l]; i++) {
            char item[128];
            snprintf(item, sizeof item, "%s %s", kinds[l][i], lists[l][i]);
            mp_pack_str(pk, item);
        }
    }
}

static bool deploy(struct server *s, const msgpack_object *req, msgpack_packer *pk,
                   char *err, size_t errlen)
{
    struct deployment d, before;
    if (!deployment_unpack(mp_get(req, "deployment"), &d, err, errlen)) return false;
    for (size_t i = 0; i < d.backend_count; i++) forget_copy(&d.backends[i]);
    if (!current(s, &before, err, errlen)) {
        deployment_free(&d);
        return false;
    }
    bool ok = apply(s, &d, err, errlen);
    if (ok) pack_changes(pk, &before, &s->declared);
    deployment_free(&before);
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

/* The pid in serve.pid, that `serve start` printed: the supervisor's when
 * there is one. */
static long server_public_pid(const struct server *s)
{
    return s->options.supervisor_pid ? s->options.supervisor_pid : (long)getpid();
}

static bool status(struct server *s, const msgpack_object *req, msgpack_packer *pk,
                   char *err, size_t errlen)
{
    (void)req, (void)err, (void)errlen;
    msgpack_pack_map(pk, 10);
    mp_pack_key(pk, "live");
    live_stats_pack(pk);
    mp_pack_key(pk, "url");
    mp_pack_str(pk, s->url);
    mp_pack_key(pk, "pid");
    msgpack_pack_int64(pk, server_public_pid(s));
    mp_pack_key(pk, "server_pid");
    msgpack_pack_int64(pk, getpid());
    mp_pack_key(pk, "restarts");
    msgpack_pack_uint64(pk, s->options.restarts);
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
    msgpack_pack_int64(pk, server_public_pid(s));
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
    {"create-backend", create_backend},   {"update-backend", update_backend},
    {"delete-backend", delete_backend},   {"create-endpoint", create_endpoint},
    {"delete-endpoint", delete_endpoint}, {"set-traffic", set_traffic},
    {"shadow-traffic", shadow_traffic},   {"deploy", deploy},
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

bool server_apply(struct server *s, struct deployment *desired, char *err, size_t errlen)
{
    return apply(s, desired, err, errlen);
}
