/* replica_thread.c - the thread replica kind: a plugin opened with dlopen,
 * one plugin instance (init .. destroy) per replica, its handle_batch
 * called directly on the replica's worker thread. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "loader.h"
#include "log.h"
#include "config_typed.h"
#include "replica_context.h"
#include "replica_kind.h"

struct thread_replica {
    const serve_plugin *plugin;
    void *state;
    serve_replica context;
    serve_request **admitted; /* the batch as the plugin sees it (tensor_admit) */
    size_t admitted_cap;
};

static bool thread_open(const struct backend_spec *spec, struct replica_group *group, char *err,
                        size_t errlen)
{
    struct plugin_lib *lib = calloc(1, sizeof *lib);
    if (!lib) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    if (!plugin_load(backend_spec_load_path(spec), spec->plugin, lib, err, errlen)) {
        free(lib);
        return false;
    }
    group->data = lib;
    group->label = lib->plugin->name ? lib->plugin->name : "?";
    group->can_reconfigure = lib->plugin->reconfigure != NULL;
    return true;
}

static void thread_close(struct replica_group *group)
{
    struct plugin_lib *lib = group->data;
    plugin_unload(lib);
    free(lib);
    group->data = NULL;
}

static bool thread_start(struct replica_base *r, char *err, size_t errlen)
{
    const struct backend_spec *spec = r->spec;
    struct thread_replica *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    t->context.backend_name = spec->name;
    t->context.metrics = r->metrics;
    t->context.index = r->index;
    const serve_plugin *plugin = ((const struct plugin_lib *)r->group->data)->plugin;
    t->plugin = plugin;
    config_error_clear();
    t->context.in_init = true;
    int rc = plugin->init ? plugin->init(&t->context, spec->config, &t->state) : 0;
    t->context.in_init = false;
    if (rc != 0) {
        const char *why = t->context.failure[0]    ? t->context.failure
                          : serve_config_error()[0] ? serve_config_error()
                                                  : "no reason given";
        LOG_ERROR("backend=%s replica=%d: init failed: %s", spec->name, r->index, why);
        replica_init_error(err, errlen, spec->plugin, r->index, spec->options.num_replicas, why);
        replica_free_handles(&t->context);
        tensor_decls_free(&t->context.decls);
        free(t);
        return false;
    }
    /* Set once: I/O threads read it once the backend is routed to, and a
     * replaced replica runs the same plugin. */
    if (r->index == 0 && t->context.decls.count && !r->group->tensor_metadata)
        r->group->tensor_metadata = tensor_decls_json(&t->context.decls);
    r->data = t;
    return true;
}

static int thread_run_batch(struct replica_base *r, serve_request **reqs, size_t n)
{
    struct thread_replica *t = r->data;
    t->context.in_batch = true;
    /* A replica that declared inputs sees only requests that decode. */
    serve_request **batch = reqs;
    if (t->context.decls.inputs && n) {
        if (n > t->admitted_cap) {
            serve_request **grown = realloc(t->admitted, n * sizeof *grown);
            if (!grown) {
                t->context.in_batch = false;
                return -1;
            }
            t->admitted = grown;
            t->admitted_cap = n;
        }
        batch = t->admitted;
        n = tensor_admit(reqs, n, batch);
    }
    int rc = n || atomic_load(&r->continuous) ? t->plugin->handle_batch(t->state, n ? batch : NULL, n)
                                              : 0;
    t->context.in_batch = false;
    r->again = t->context.again;
    t->context.again = false;
    if (r->again) atomic_store(&r->continuous, true);
    return rc;
}

/* The request's client went away or it timed out: the plugin's cancel
 * callback, where its descriptor has one. */
static void thread_cancelled(struct replica_base *r, serve_request *req)
{
    struct thread_replica *t = r->data;
    if (t && t->plugin->cancel) t->plugin->cancel(t->state, req);
}

static int thread_reconfigure(struct replica_base *r, const serve_config *config)
{
    struct thread_replica *t = r->data;
    return t->plugin->reconfigure(t->state, config);
}

static void thread_stop(struct replica_base *r)
{
    struct thread_replica *t = r->data;
    if (t->plugin->destroy) t->plugin->destroy(t->state);
    replica_free_handles(&t->context);
    tensor_decls_free(&t->context.decls);
    free(t->admitted);
    free(t);
    r->data = NULL;
}

void replica_init_error(char *err, size_t errlen, const char *plugin, int index, size_t count,
                        const char *why)
{
    if (count > 1)
        snprintf(err, errlen, "plugin %s: init failed in replica %d of %zu: %s", plugin, index,
                 count, why);
    else
        snprintf(err, errlen, "plugin %s: init failed: %s", plugin, why);
}

const struct replica_kind replica_kind_thread = {
    .name = "thread",
    .open = thread_open,
    .close = thread_close,
    .start = thread_start,
    .run_batch = thread_run_batch,
    .cancelled = thread_cancelled,
    .reconfigure = thread_reconfigure,
    .stop = thread_stop,
};

SERVE_EXPORT const char *serve_replica_backend(const serve_replica *replica)
{
    return replica ? replica->backend_name : NULL;
}

SERVE_EXPORT int serve_replica_index(const serve_replica *replica)
{
    return replica ? replica->index : -1;
}

SERVE_EXPORT int serve_replica_continue(serve_replica *replica)
{
    if (!replica) return SERVE_EINVAL;
    if (!replica->in_batch) return SERVE_ESTATE;
    replica->again = true;
    return SERVE_OK;
}

SERVE_EXPORT void serve_replica_fail(serve_replica *replica, const char *fmt, ...)
{
    if (!replica || !fmt) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(replica->failure, sizeof replica->failure, fmt, ap);
    va_end(ap);
}
