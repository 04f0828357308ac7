/* deploy_file.c - deploy files through libyaml's document API (see
 * deploy_file.h). */
#include "deploy_file.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "plugin_path.h"

struct reader {
    yaml_document_t doc;
    const char *path;
    char dir[PATH_MAX]; /* relative plugin paths start here */
    char *err;
    size_t errlen;
};

static bool fail(struct reader *r, const yaml_node_t *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool fail(struct reader *r, const yaml_node_t *node, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(r->err, r->errlen, "%s:%zu: %s", r->path, node ? node->start_mark.line + 1 : 1, msg);
    return false;
}

static const char *scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static yaml_node_t *node(struct reader *r, int id) { return yaml_document_get_node(&r->doc, id); }

/* YAML lets a mapping hold a key twice; a deploy file that does is
 * ambiguous (which value was meant?), so it is refused. */
static bool keys_unique(struct reader *r, const yaml_node_t *n)
{
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const char *key = scalar(node(r, p->key));
        for (yaml_node_pair_t *q = n->data.mapping.pairs.start; key && q < p; q++) {
            const char *earlier = scalar(node(r, q->key));
            if (earlier && strcmp(earlier, key) == 0)
                return fail(r, node(r, p->key), "'%s' given twice", key);
        }
    }
    return true;
}

static bool read_u32(struct reader *r, const yaml_node_t *n, const char *key, uint32_t *out)
{
    const char *v = scalar(n);
    char *end;
    errno = 0;
    unsigned long long x = v && *v && *v != '-' ? strtoull(v, &end, 10) : 0;
    if (!v || !*v || *v == '-' || errno || *end || x > UINT32_MAX)
        return fail(r, n, "%s must be a non-negative integer", key);
    *out = (uint32_t)x;
    return true;
}

static bool read_double(struct reader *r, const yaml_node_t *n, const char *key, double *out)
{
    const char *v = scalar(n);
    char *end;
    errno = 0;
    double x = v ? strtod(v, &end) : 0;
    if (!v || !*v || errno || *end) return fail(r, n, "%s must be a number", key);
    *out = x;
    return true;
}

/* A mapping of names to numbers (traffic, shadow). */
static bool read_shares(struct reader *r, const yaml_node_t *n, const char *key,
                        struct share **out, size_t *count)
{
    if (n->type != YAML_MAPPING_NODE)
        return fail(r, n, "%s must map backend names to numbers", key);
    if (!keys_unique(r, n)) return false;
    size_t size = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    *out = calloc(size + 1, sizeof **out);
    if (!*out) return fail(r, n, "out of memory");
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const char *name = scalar(node(r, p->key));
        if (!name) return fail(r, node(r, p->key), "%s: backend names must be strings", key);
        struct share *sh = &(*out)[*count];
        if (!read_double(r, node(r, p->value), key, &sh->weight)) return false;
        sh->backend = strdup(name);
        if (!sh->backend) return fail(r, n, "out of memory");
        (*count)++;
    }
    return true;
}

/* Drops shares read before (backend: comes before traffic: in the file). */
static void shares_reset(struct share **shares, size_t *count)
{
    for (size_t i = 0; i < *count; i++) free((*shares)[i].backend);
    free(*shares);
    *shares = NULL;
    *count = 0;
}

static bool resolve_plugin(struct reader *r, const yaml_node_t *n, char **out)
{
    const char *v = scalar(n);
    if (!v || !*v) return fail(r, n, "plugin must be a name or a path");
    char path[PATH_MAX], why[1024];
    size_t len = strlen(v);
    bool is_path = strchr(v, '/') || (len > 3 && strcmp(v + len - 3, ".so") == 0);
    if (is_path && v[0] != '/') {
        snprintf(path, sizeof path, "%s/%s", r->dir, v);
    } else if (is_path) {
        snprintf(path, sizeof path, "%s", v);
    } else if (!plugin_path_resolve(v, path, sizeof path, why, sizeof why)) {
        return fail(r, n, "%s", why);
    }
    if (access(path, R_OK) != 0) return fail(r, n, "plugin %s: %s", path, strerror(errno));
    *out = strdup(path);
    return *out ? true : fail(r, n, "out of memory");
}

/* remote: URL, or a list of URLs; kept as "URL,URL" (spec.h). */
static bool read_remote(struct reader *r, const yaml_node_t *n, char **out)
{
    if (scalar(n)) {
        *out = strdup(scalar(n));
        return *out ? true : fail(r, n, "out of memory");
    }
    if (n->type != YAML_SEQUENCE_NODE || n->data.sequence.items.start == n->data.sequence.items.top)
        return fail(r, n, "remote must be a URL or a list of URLs");
    size_t len = 1;
    for (yaml_node_item_t *i = n->data.sequence.items.start; i < n->data.sequence.items.top; i++) {
        const char *url = scalar(node(r, *i));
        if (!url || !*url || strchr(url, ',')) return fail(r, node(r, *i), "remote: each item must be one URL");
        len += strlen(url) + 1;
    }
    char *list = malloc(len);
    if (!list) return fail(r, n, "out of memory");
    list[0] = '\0';
    for (yaml_node_item_t *i = n->data.sequence.items.start; i < n->data.sequence.items.top; i++) {
        if (list[0]) strcat(list, ",");
        strcat(list, scalar(node(r, *i)));
    }
    *out = list;
    return true;
}

/* autoscaling: {min_replicas, max_replicas, target_ongoing_requests,
 * upscale_delay_s, downscale_delay_s}; both bounds are required. */
static bool read_autoscaling(struct reader *r, const yaml_node_t *n, struct backend_options *o)
{
    if (n->type != YAML_MAPPING_NODE)
        return fail(r, n, "autoscaling must be a mapping: {min_replicas: N, max_replicas: M, ...}");
    if (!keys_unique(r, n)) return false;
    bool min_given = false, max_given = false;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const char *key = scalar(node(r, p->key));
        yaml_node_t *v = node(r, p->value);
        bool ok;
        if (!key)
            ok = fail(r, node(r, p->key), "autoscaling keys must be strings");
        else if (strcmp(key, "min_replicas") == 0)
            ok = min_given = read_u32(r, v, key, &o->min_replicas);
        else if (strcmp(key, "max_replicas") == 0)
            ok = max_given = read_u32(r, v, key, &o->max_replicas);
        else if (strcmp(key, "target_ongoing_requests") == 0)
            ok = read_double(r, v, key, &o->target_ongoing_requests);
        else if (strcmp(key, "upscale_delay_s") == 0)
            ok = read_double(r, v, key, &o->upscale_delay_s);
        else if (strcmp(key, "downscale_delay_s") == 0)
            ok = read_double(r, v, key, &o->downscale_delay_s);
        else
            ok = fail(r, node(r, p->key), "unknown autoscaling key '%s' (min_replicas, "
                      "max_replicas, target_ongoing_requests, upscale_delay_s, "
                      "downscale_delay_s)", key);
        if (!ok) return false;
    }
    if (!min_given || !max_given)
        return fail(r, n, "autoscaling needs both min_replicas and max_replicas");
    return true;
}

static bool read_backend(struct reader *r, const yaml_node_t *n, struct backend_spec *b)
{
    memset(b, 0, sizeof *b);
    backend_options_default(&b->options);
    b->config = config_new();
    if (!b->config) return fail(r, n, "out of memory");
    if (n->type != YAML_MAPPING_NODE) return fail(r, n, "a backend must be a mapping");
    if (!keys_unique(r, n)) return false;
    struct backend_options *o = &b->options;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const char *key = scalar(node(r, p->key));
        yaml_node_t *v = node(r, p->value);
        bool ok = true;
        if (!key) {
            ok = fail(r, node(r, p->key), "backend keys must be strings");
        } else if (strcmp(key, "name") == 0) {
            ok = scalar(v) && (b->name = strdup(scalar(v)));
            if (!ok) ok = fail(r, v, "name must be a string");
        } else if (strcmp(key, "plugin") == 0) {
            ok = resolve_plugin(r, v, &b->plugin);
        } else if (strcmp(key, "remote") == 0) {
            ok = read_remote(r, v, &b->remote);
        } else if (strcmp(key, "num_replicas") == 0) {
            ok = read_u32(r, v, key, &o->num_replicas);
        } else if (strcmp(key, "max_batch_size") == 0) {
            ok = read_u32(r, v, key, &o->max_batch_size);
        } else if (strcmp(key, "max_concurrent_queries") == 0) {
            ok = read_u32(r, v, key, &o->max_concurrent_queries);
        } else if (strcmp(key, "max_queued_requests") == 0) {
            ok = read_u32(r, v, key, &o->max_queued_requests);
        } else if (strcmp(key, "batch_wait_timeout_ms") == 0) {
            ok = read_double(r, v, key, &o->batch_wait_timeout_ms);
        } else if (strcmp(key, "request_timeout_ms") == 0) {
            ok = read_double(r, v, key, &o->request_timeout_ms);
        } else if (strcmp(key, "hang_timeout_ms") == 0) {
            ok = read_double(r, v, key, &o->hang_timeout_ms);
        } else if (strcmp(key, "latency_slo_ms") == 0) {
            ok = read_double(r, v, key, &o->latency_slo_ms);
        } else if (strcmp(key, "autoscaling") == 0) {
            ok = read_autoscaling(r, v, o);
        } else if (strcmp(key, "isolation") == 0) {
            o->isolation = isolation_from_name(scalar(v));
            if (o->isolation >= ISOLATION_KINDS) ok = fail(r, v, "isolation must be process or thread");
        } else if (strcmp(key, "max_memory") == 0) {
            if (!size_parse(scalar(v), &o->max_memory))
                ok = fail(r, v, "max_memory must be a size in bytes or with K, M or G (512M, 4G)");
        } else if (strcmp(key, "config") == 0) {
            if (v->type != YAML_MAPPING_NODE) return fail(r, v, "config must be a mapping of strings");
            if (!keys_unique(r, v)) return false;
            for (yaml_node_pair_t *c = v->data.mapping.pairs.start; ok && c < v->data.mapping.pairs.top; c++) {
                const char *ck = scalar(node(r, c->key)), *cv = scalar(node(r, c->value));
                if (!ck || !cv || !*ck) ok = fail(r, node(r, c->key), "config keys and values must be strings");
                else if (config_set_at(b->config, ck, cv, r->dir) != 0) ok = fail(r, v, "out of memory");
            }
        } else {
            ok = fail(r, node(r, p->key), "unknown backend key '%s'", key);
        }
        if (!ok) return false;
    }
    char why[512];
    if (!b->name) return fail(r, n, "a backend needs a name");
    if (!b->plugin && !b->remote)
        return fail(r, n, "backend %s needs a plugin or remote URLs", b->name);
    if (b->plugin && b->remote)
        return fail(r, n, "backend %s: plugin and remote exclude each other", b->name);
    if (b->remote && !backend_source_valid(b, why, sizeof why)) return fail(r, n, "%s", why);
    if (!spec_name_valid("backend", b->name, why, sizeof why)) return fail(r, n, "%s", why);
    if (!backend_options_valid(&b->options, why, sizeof why)) {
        /* The shared message names the CLI flag; say the file's key. */
        char *p = why;
        if (strncmp(p, "--", 2) == 0) p += 2;
        for (char *q = p; *q && *q != ' '; q++)
            if (*q == '-') *q = '_';
        return fail(r, n, "backend %s: %s", b->name, p);
    }
    return true;
}

static bool read_methods(struct reader *r, const yaml_node_t *v, unsigned *methods)
{
    char list[256] = "", why[256];
    if (v->type == YAML_SCALAR_NODE) {
        snprintf(list, sizeof list, "%s", scalar(v));
    } else if (v->type == YAML_SEQUENCE_NODE) {
        size_t n = 0;
        for (yaml_node_item_t *i = v->data.sequence.items.start; i < v->data.sequence.items.top; i++) {
            const char *m = scalar(node(r, *i));
            if (!m) return fail(r, v, "methods must be names");
            n += (size_t)snprintf(list + n, n < sizeof list ? sizeof list - n : 0, "%s%s",
                                  n ? "," : "", m);
        }
    } else {
        return fail(r, v, "methods must be a list such as [GET, POST]");
    }
    return methods_parse(list, methods, why, sizeof why) ? true : fail(r, v, "%s", why);
}

/* The node an endpoint's traffic errors point at: its traffic: or backend:
 * value, else the endpoint itself. */
static const yaml_node_t *traffic_node(struct reader *r, const yaml_node_t *n)
{
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const char *key = scalar(node(r, p->key));
        if (key && (strcmp(key, "traffic") == 0 || strcmp(key, "backend") == 0))
            return node(r, p->value);
    }
    return n;
}

static bool read_endpoint(struct reader *r, const yaml_node_t *n, struct endpoint_spec *e)
{
    memset(e, 0, sizeof *e);
    e->methods = METHODS_DEFAULT;
    if (n->type != YAML_MAPPING_NODE) return fail(r, n, "an endpoint must be a mapping");
    if (!keys_unique(r, n)) return false;
    const yaml_node_t *backend_key = NULL, *traffic_key = NULL;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const char *key = scalar(node(r, p->key));
        yaml_node_t *v = node(r, p->value);
        bool ok = true;
        if (!key) {
            ok = fail(r, node(r, p->key), "endpoint keys must be strings");
        } else if (strcmp(key, "name") == 0 || strcmp(key, "route") == 0) {
            char **field = key[0] == 'n' ? &e->name : &e->route;
            ok = scalar(v) && (*field = strdup(scalar(v)));
            if (!ok) ok = fail(r, v, "%s must be a string", key);
        } else if (strcmp(key, "methods") == 0) {
            ok = read_methods(r, v, &e->methods);
        } else if (strcmp(key, "backend") == 0) {
            backend_key = v;
            ok = scalar(v) && endpoint_set_backend(e, scalar(v));
            if (!ok) ok = fail(r, v, "backend must be a name");
        } else if (strcmp(key, "traffic") == 0) {
            traffic_key = v;
            shares_reset(&e->traffic, &e->traffic_count);
            ok = read_shares(r, v, key, &e->traffic, &e->traffic_count);
        } else if (strcmp(key, "shadow") == 0) {
            ok = read_shares(r, v, key, &e->shadows, &e->shadow_count);
        } else {
            ok = fail(r, node(r, p->key), "unknown endpoint key '%s'", key);
        }
        if (!ok) return false;
    }
    char why[512];
    if (!e->name) return fail(r, n, "an endpoint needs a name");
    if (backend_key && traffic_key)
        return fail(r, traffic_key, "endpoint %s: give backend: or traffic:, not both", e->name);
    if (!e->traffic_count) return fail(r, n, "endpoint %s needs backend: or traffic:", e->name);
    if (!spec_name_valid("endpoint", e->name, why, sizeof why) ||
        (e->route && !route_valid(e->route, why, sizeof why)))
        return fail(r, n, "%s", why);
    if (!endpoint_traffic_valid(e, why, sizeof why)) return fail(r, traffic_node(r, n), "%s", why);
    return true;
}

static bool read_root(struct reader *r, struct deployment *d)
{
    yaml_node_t *root = yaml_document_get_root_node(&r->doc);
    if (!root) return fail(r, NULL, "the file is empty");
    if (root->type != YAML_MAPPING_NODE)
        return fail(r, root, "expected a mapping with backends: and endpoints:");
    if (!keys_unique(r, root)) return false;
    const yaml_node_t *endpoint_nodes[4096];
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
        const char *key = scalar(node(r, p->key));
        yaml_node_t *list = node(r, p->value);
        bool backends = key && strcmp(key, "backends") == 0;
        if (!key || (!backends && strcmp(key, "endpoints") != 0))
            return fail(r, node(r, p->key), "unknown key '%s' (expected backends or endpoints)",
                        key ? key : "?");
        if (list->type == YAML_SCALAR_NODE && !*scalar(list)) continue; /* "backends:" empty */
        if (list->type != YAML_SEQUENCE_NODE) return fail(r, list, "%s must be a list", key);
        for (yaml_node_item_t *i = list->data.sequence.items.start; i < list->data.sequence.items.top; i++) {
            yaml_node_t *item = node(r, *i);
            if (backends) {
                struct backend_spec b;
                bool ok = read_backend(r, item, &b) && deployment_add_backend(d, &b);
                backend_spec_free(&b);
                if (!ok) return false;
            } else {
                struct endpoint_spec e;
                bool ok = d->endpoint_count < 4096 && read_endpoint(r, item, &e);
                if (ok) endpoint_nodes[d->endpoint_count] = traffic_node(r, item);
                ok = ok && deployment_add_endpoint(d, &e);
                endpoint_spec_free(&e);
                if (!ok) return false;
            }
        }
    }
    /* Names across the file, with the line of the endpoint at fault. */
    char why[1024];
    for (size_t i = 0; i < d->endpoint_count; i++) {
        const struct endpoint_spec *e = &d->endpoints[i];
        for (size_t t = 0; t < e->traffic_count + e->shadow_count; t++) {
            const char *b = t < e->traffic_count ? e->traffic[t].backend
                                                 : e->shadows[t - e->traffic_count].backend;
            if (deployment_find_backend(d, b) < 0)
                return fail(r, endpoint_nodes[i], "endpoint %s: backend %s is not defined in this file",
                            e->name, b);
        }
    }
    if (!deployment_valid(d, why, sizeof why)) return fail(r, root, "%s", why);
    return true;
}

bool deploy_file_load(const char *path, struct deployment *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return false;
    }
    struct reader r = {.path = path, .err = err, .errlen = errlen};
    char copy[PATH_MAX], abs[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", path);
    snprintf(r.dir, sizeof r.dir, "%s", realpath(dirname(copy), abs) ? abs : ".");
    yaml_parser_t parser;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    bool ok = yaml_parser_load(&parser, &r.doc) != 0;
    if (!ok) {
        snprintf(err, errlen, "%s:%zu: %s%s%s", path, parser.problem_mark.line + 1,
                 parser.problem ? parser.problem : "cannot parse YAML",
                 parser.context ? " " : "", parser.context ? parser.context : "");
    } else {
        ok = read_root(&r, out);
        yaml_document_delete(&r.doc);
    }
    yaml_parser_delete(&parser);
    fclose(f);
    if (!ok) deployment_free(out);
    return ok;
}
