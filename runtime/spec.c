/* spec.c - backend and endpoint descriptions (see spec.h) and the SDK's
 * serve_config accessors. */
#include "spec.h"

#include "remote_url.h"

#include <errno.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mp.h"
#include "remote_url.h"

serve_config *config_new(void) { return calloc(1, sizeof(serve_config)); }

void config_free(serve_config *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->count; i++) {
        free(c->keys[i]);
        free(c->values[i]);
        free(c->bases[i]);
    }
    free(c->keys);
    free(c->values);
    free(c->bases);
    free(c);
}

int config_set(serve_config *c, const char *key, const char *value)
{
    return config_set_at(c, key, value, NULL);
}

int config_set_at(serve_config *c, const char *key, const char *value, const char *base)
{
    size_t i = 0;
    while (i < c->count && strcmp(c->keys[i], key) < 0) i++;
    char *v = strdup(value), *b = base && *base ? strdup(base) : NULL;
    if (!v || (base && *base && !b)) {
        free(v);
        free(b);
        return -1;
    }
    if (i < c->count && strcmp(c->keys[i], key) == 0) {
        free(c->values[i]);
        free(c->bases[i]);
        c->values[i] = v;
        c->bases[i] = b;
        return 0;
    }
    char *k = strdup(key);
    char **keys = realloc(c->keys, (c->count + 1) * sizeof *keys);
    if (keys) c->keys = keys;
    char **values = realloc(c->values, (c->count + 1) * sizeof *values);
    if (values) c->values = values;
    char **bases = realloc(c->bases, (c->count + 1) * sizeof *bases);
    if (bases) c->bases = bases;
    if (!k || !keys || !values || !bases) {
        free(k);
        free(v);
        free(b);
        return -1;
    }
    memmove(&c->keys[i + 1], &c->keys[i], (c->count - i) * sizeof *keys);
    memmove(&c->values[i + 1], &c->values[i], (c->count - i) * sizeof *values);
    memmove(&c->bases[i + 1], &c->bases[i], (c->count - i) * sizeof *bases);
    c->keys[i] = k;
    c->values[i] = v;
    c->bases[i] = b;
    c->count++;
    return 0;
}

void config_unset(serve_config *c, const char *key)
{
    for (size_t i = 0; i < c->count; i++)
        if (strcmp(c->keys[i], key) == 0) {
            free(c->keys[i]);
            free(c->values[i]);
            free(c->bases[i]);
            size_t after = c->count - i - 1;
            memmove(&c->keys[i], &c->keys[i + 1], after * sizeof *c->keys);
            memmove(&c->values[i], &c->values[i + 1], after * sizeof *c->values);
            memmove(&c->bases[i], &c->bases[i + 1], after * sizeof *c->bases);
            c->count--;
            return;
        }
}

serve_config *config_copy(const serve_config *c)
{
    serve_config *copy = config_new();
    if (!copy || !c) return copy;
    for (size_t i = 0; i < c->count; i++)
        if (config_set_at(copy, c->keys[i], c->values[i], c->bases[i]) != 0) {
            config_free(copy);
            return NULL;
        }
    return copy;
}

static bool same_base(const char *a, const char *b)
{
    return a && b ? strcmp(a, b) == 0 : !a && !b;
}

bool config_equal(const serve_config *a, const serve_config *b)
{
    size_t na = a ? a->count : 0, nb = b ? b->count : 0;
    if (na != nb) return false;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a->keys[i], b->keys[i]) || strcmp(a->values[i], b->values[i]) ||
            !same_base(a->bases[i], b->bases[i]))
            return false;
    return true;
}

SERVE_EXPORT const char *serve_config_get(const serve_config *c, const char *key)
{
    if (!c || !key) return NULL;
    for (size_t i = 0; i < c->count; i++)
        if (strcmp(c->keys[i], key) == 0) return c->values[i];
    return NULL;
}

SERVE_EXPORT size_t serve_config_count(const serve_config *c)
{
    return c ? c->count : 0;
}

SERVE_EXPORT const char *serve_config_key(const serve_config *c, size_t i)
{
    return c && i < c->count ? c->keys[i] : NULL;
}

SERVE_EXPORT const char *serve_config_value(const serve_config *c, size_t i)
{
    return c && i < c->count ? c->values[i] : NULL;
}

void backend_options_default(struct backend_options *o)
{
    o->num_replicas = 1;
    o->max_batch_size = 1;
    o->max_concurrent_queries = 0;
    o->max_queued_requests = 1024;
    o->batch_wait_timeout_ms = 0;
    o->request_timeout_ms = 0;
    o->isolation = ISOLATION_PROCESS;
    o->hang_timeout_ms = 0;
    o->max_memory = 0;
    o->min_replicas = 0;
    o->max_replicas = 0;
    o->target_ongoing_requests = 2;
    o->upscale_delay_s = 5;
    o->downscale_delay_s = 30;
    o->latency_slo_ms = 0;
}

void backend_options_normalize(struct backend_options *o)
{
    if (!backend_options_autoscaled(o)) return;
    if (o->num_replicas < o->min_replicas) o->num_replicas = o->min_replicas;
    if (o->num_replicas > o->max_replicas) o->num_replicas = o->max_replicas;
}

static const char *const isolation_names[ISOLATION_KINDS] = {"process", "thread"};

uint32_t isolation_from_name(const char *name)
{
    for (uint32_t i = 0; i < ISOLATION_KINDS; i++)
        if (name && strcmp(name, isolation_names[i]) == 0) return i;
    return ISOLATION_KINDS;
}

const char *isolation_name(uint32_t isolation)
{
    return isolation < ISOLATION_KINDS ? isolation_names[isolation] : "?";
}

bool size_parse(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9') return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    unsigned shift = 0;
    switch (*end) {
    case 'K': case 'k': shift = 10; end++; break;
    case 'M': case 'm': shift = 20; end++; break;
    case 'G': case 'g': shift = 30; end++; break;
    default: break;
    }
    if (errno || *end || v > (UINT64_MAX >> shift)) return false;
    *out = (uint64_t)v << shift;
    return true;
}

bool backend_options_equal(const struct backend_options *a, const struct backend_options *b)
{
    return a->num_replicas == b->num_replicas && a->max_batch_size == b->max_batch_size &&
           a->max_concurrent_queries == b->max_concurrent_queries &&
           a->max_queued_requests == b->max_queued_requests &&
           a->batch_wait_timeout_ms == b->batch_wait_timeout_ms &&
           a->request_timeout_ms == b->request_timeout_ms && a->isolation == b->isolation &&
           a->hang_timeout_ms == b->hang_timeout_ms && a->max_memory == b->max_memory &&
           a->min_replicas == b->min_replicas && a->max_replicas == b->max_replicas &&
           a->target_ongoing_requests == b->target_ongoing_requests &&
           a->upscale_delay_s == b->upscale_delay_s &&
           a->downscale_delay_s == b->downscale_delay_s && a->latency_slo_ms == b->latency_slo_ms;
}

uint32_t backend_options_concurrency(const struct backend_options *o)
{
    if (o->max_concurrent_queries) return o->max_concurrent_queries;
    uint32_t twice = o->max_batch_size * 2;
    return twice < 8 ? 8 : twice;
}

bool backend_options_valid(const struct backend_options *o, char *err,
                           size_t len)
{
    const char *why = NULL;
    if (o->num_replicas < 1 || o->num_replicas > 256)
        why = "--num-replicas must be between 1 and 256";
    else if (o->max_batch_size < 1 || o->max_batch_size > 65536)
        why = "--max-batch-size must be between 1 and 65536";
    else if (o->max_queued_requests < 1 || o->max_queued_requests > 10000000)
        why = "--max-queued-requests must be between 1 and 10000000";
    else if (o->max_concurrent_queries > 1000000)
        why = "--max-concurrent-queries must be at most 1000000";
    else if (o->max_concurrent_queries && o->max_concurrent_queries < o->max_batch_size)
        why = "--max-concurrent-queries must be at least --max-batch-size";
    else if (!(o->batch_wait_timeout_ms >= 0 && o->batch_wait_timeout_ms <= 3600000))
        why = "--batch-wait-timeout-ms must be between 0 and 3600000";
    else if (!(o->request_timeout_ms >= 0 && o->request_timeout_ms <= 86400000))
        why = "--request-timeout-ms must be between 0 and 86400000";
    else if (o->isolation >= ISOLATION_KINDS)
        why = "--isolation must be process or thread";
    else if (!(o->hang_timeout_ms >= 0 && o->hang_timeout_ms <= 86400000))
        why = "--hang-timeout-ms must be between 0 and 86400000";
    else if (o->max_memory && o->isolation == ISOLATION_THREAD)
        why = "--max-memory needs --isolation process (a thread replica's memory is the server's)";
    else if (o->max_memory && o->max_memory < (16u << 20))
        why = "--max-memory must be at least 16M";
    else if ((o->min_replicas == 0) != (o->max_replicas == 0))
        why = "--min-replicas and --max-replicas go together (both 0: no autoscaling)";
    else if (o->max_replicas > 256)
        why = "--max-replicas must be at most 256";
    else if (o->min_replicas > o->max_replicas)
        why = "--min-replicas must be at most --max-replicas";
    else if (!(o->target_ongoing_requests > 0 && o->target_ongoing_requests <= 1000000))
        why = "--target-ongoing-requests must be above 0 and at most 1000000";
    else if (!(o->upscale_delay_s >= 0 && o->upscale_delay_s <= 86400))
        why = "--upscale-delay must be between 0 and 86400 seconds";
    else if (!(o->downscale_delay_s >= 0 && o->downscale_delay_s <= 86400))
        why = "--downscale-delay must be between 0 and 86400 seconds";
    else if (!(o->latency_slo_ms >= 0 && o->latency_slo_ms <= 3600000))
        why = "--latency-slo-ms must be between 0 and 3600000";
    if (why) snprintf(err, len, "%s", why);
    return why == NULL;
}

static const char *const method_names[] = {"GET",   "POST", "PUT",    "DELETE",
                                           "PATCH", "HEAD", "OPTIONS"};
#define METHOD_COUNT (sizeof method_names / sizeof *method_names)

unsigned method_bit(const char *name)
{
    for (size_t i = 0; i < METHOD_COUNT; i++)
        if (strcasecmp(name, method_names[i]) == 0) return 1u << i;
    return 0;
}

bool methods_parse(const char *list, unsigned *out, char *err, size_t errlen)
{
    unsigned methods = 0;
    char buf[256];
    if (snprintf(buf, sizeof buf, "%s", list) >= (int)sizeof buf) {
        snprintf(err, errlen, "--methods: list too long");
        return false;
    }
    char *save = NULL;
    for (char *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        unsigned bit = method_bit(tok);
        if (!bit) {
            snprintf(err, errlen, "unknown HTTP method '%s' (known: GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS)", tok);
            return false;
        }
        methods |= bit;
    }
    if (!methods) {
        snprintf(err, errlen, "--methods: no method given");
        return false;
    }
    *out = methods;
    return true;
}

void methods_format(unsigned methods, char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < METHOD_COUNT; i++)
        if (methods & (1u << i))
            n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "%s%s",
                                  n ? "," : "", method_names[i]);
}

void backend_spec_free(struct backend_spec *b)
{
    free(b->name);
    free(b->plugin);
    free(b->remote);
    free(b->plugin_file);
    free(b->plugin_digest);
    config_free(b->config);
    memset(b, 0, sizeof *b);
}

static void shares_free(struct share *shares, size_t n)
{
    for (size_t i = 0; i < n; i++) free(shares[i].backend);
    free(shares);
}

void endpoint_spec_free(struct endpoint_spec *e)
{
    free(e->name);
    free(e->route);
    shares_free(e->traffic, e->traffic_count);
    shares_free(e->shadows, e->shadow_count);
    memset(e, 0, sizeof *e);
}

bool endpoint_uses(const struct endpoint_spec *e, const char *backend)
{
    for (size_t i = 0; i < e->traffic_count; i++)
        if (strcmp(e->traffic[i].backend, backend) == 0) return true;
    for (size_t i = 0; i < e->shadow_count; i++)
        if (strcmp(e->shadows[i].backend, backend) == 0) return true;
    return false;
}

bool endpoint_set_backend(struct endpoint_spec *e, const char *backend)
{
    struct share *one = calloc(1, sizeof *one);
    char *name = strdup(backend);
    if (!one || !name) {
        free(one);
        free(name);
        return false;
    }
    shares_free(e->traffic, e->traffic_count);
    one->backend = name;
    one->weight = 1.0;
    e->traffic = one;
    e->traffic_count = 1;
    return true;
}

bool endpoint_traffic_valid(const struct endpoint_spec *e, char *err, size_t len)
{
    if (e->traffic_count == 0) {
        snprintf(err, len, "endpoint %s: no backend to send traffic to", e->name);
        return false;
    }
    double sum = 0;
    for (size_t i = 0; i < e->traffic_count; i++) {
        double w = e->traffic[i].weight;
        if (!(w >= 0 && w <= 1)) {
            snprintf(err, len, "endpoint %s: weight %g of backend %s is not between 0 and 1",
                     e->name, w, e->traffic[i].backend);
            return false;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(e->traffic[i].backend, e->traffic[j].backend) == 0) {
                snprintf(err, len, "endpoint %s: backend %s is named twice in its traffic",
                         e->name, e->traffic[i].backend);
                return false;
            }
        sum += w;
    }
    if (sum < 1 - 1e-6 || sum > 1 + 1e-6) {
        snprintf(err, len, "endpoint %s: traffic weights must sum to 1, these sum to %g",
                 e->name, sum);
        return false;
    }
    for (size_t i = 0; i < e->shadow_count; i++) {
        double f = e->shadows[i].weight;
        if (!(f > 0 && f <= 1)) {
            snprintf(err, len, "endpoint %s: shadow fraction %g for backend %s is not in (0, 1]",
                     e->name, f, e->shadows[i].backend);
            return false;
        }
    }
    return true;
}

static bool shares_copy(struct share **dst, size_t *dst_n, const struct share *src, size_t n)
{
    *dst = calloc(n + 1, sizeof **dst);
    *dst_n = 0;
    if (!*dst) return false;
    for (size_t i = 0; i < n; i++) {
        (*dst)[i].backend = strdup(src[i].backend);
        (*dst)[i].weight = src[i].weight;
        if (!(*dst)[i].backend) return false;
        (*dst_n)++;
    }
    return true;
}

bool endpoint_spec_copy(struct endpoint_spec *dst, const struct endpoint_spec *src)
{
    memset(dst, 0, sizeof *dst);
    dst->name = strdup(src->name);
    dst->route = src->route ? strdup(src->route) : NULL;
    dst->methods = src->methods;
    bool ok = dst->name && (!src->route || dst->route) &&
              shares_copy(&dst->traffic, &dst->traffic_count, src->traffic, src->traffic_count) &&
              shares_copy(&dst->shadows, &dst->shadow_count, src->shadows, src->shadow_count);
    if (!ok) endpoint_spec_free(dst);
    return ok;
}

bool backend_spec_copy(struct backend_spec *dst, const struct backend_spec *src)
{
    memset(dst, 0, sizeof *dst);
    dst->name = strdup(src->name);
    dst->plugin = src->plugin ? strdup(src->plugin) : NULL;
    dst->remote = src->remote ? strdup(src->remote) : NULL;
    dst->plugin_file = src->plugin_file ? strdup(src->plugin_file) : NULL;
    dst->plugin_digest = src->plugin_digest ? strdup(src->plugin_digest) : NULL;
    dst->options = src->options;
    dst->config = config_copy(src->config);
    bool ok = dst->name && !src->plugin == !dst->plugin && !src->remote == !dst->remote &&
              dst->config && !src->plugin_file == !dst->plugin_file &&
              !src->plugin_digest == !dst->plugin_digest;
    if (!ok) backend_spec_free(dst);
    return ok;
}

bool backend_source_valid(const struct backend_spec *b, char *err, size_t len)
{
    if (!b->plugin == !b->remote) {
        snprintf(err, len, "backend %s: needs a plugin or remote URLs, not both", b->name);
        return false;
    }
    if (!b->remote) return true;
    struct remote_url *urls;
    size_t count;
    char why[400];
    if (!remote_urls_parse(b->remote, &urls, &count, why, sizeof why)) {
        snprintf(err, len, "backend %s: %s", b->name, why);
        return false;
    }
    remote_urls_free(urls, count);
    return true;
}

const char *backend_spec_load_path(const struct backend_spec *b)
{
    return b->plugin_file ? b->plugin_file : b->plugin;
}

bool backend_spec_same_code(const struct backend_spec *a, const struct backend_spec *b)
{
    if (a->remote || b->remote)
        return a->remote && b->remote && strcmp(a->remote, b->remote) == 0;
    if (strcmp(a->plugin, b->plugin) != 0) return false;
    if (!a->plugin_digest || !b->plugin_digest) return !a->plugin_digest && !b->plugin_digest;
    return strcmp(a->plugin_digest, b->plugin_digest) == 0;
}

bool backend_spec_equal(const struct backend_spec *a, const struct backend_spec *b)
{
    return strcmp(a->name, b->name) == 0 && backend_spec_same_code(a, b) &&
           backend_options_equal(&a->options, &b->options) &&
           config_equal(a->config, b->config);
}

static bool shares_equal(const struct share *a, size_t na, const struct share *b, size_t nb)
{
    if (na != nb) return false;
    for (size_t i = 0; i < na; i++) {
        size_t j = 0;
        while (j < nb && strcmp(a[i].backend, b[j].backend) != 0) j++;
        if (j == nb || a[i].weight != b[j].weight) return false;
    }
    return true;
}

bool endpoint_spec_equal(const struct endpoint_spec *a, const struct endpoint_spec *b)
{
    bool routes_equal = (!a->route && !b->route) ||
                        (a->route && b->route && strcmp(a->route, b->route) == 0);
    return strcmp(a->name, b->name) == 0 && routes_equal && a->methods == b->methods &&
           shares_equal(a->traffic, a->traffic_count, b->traffic, b->traffic_count) &&
           shares_equal(a->shadows, a->shadow_count, b->shadows, b->shadow_count);
}

bool spec_name_valid(const char *kind, const char *name, char *err, size_t len)
{
    size_t n = name ? strlen(name) : 0;
    bool ok = n > 0 && n <= 64;
    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)name[i]) || strchr("_.-", name[i]);
    if (!ok)
        snprintf(err, len, "%s name '%s' is invalid: use 1-64 letters, digits, '_', '.' or '-'",
                 kind, name ? name : "");
    return ok;
}

bool route_valid(const char *route, char *err, size_t len)
{
    size_t n = strlen(route);
    bool ok = n > 0 && n <= 1024 && route[0] == '/';
    for (size_t i = 0; ok && i < n; i++)
        ok = route[i] > ' ' && route[i] < 127 && route[i] != '?' && route[i] != '#';
    if (ok && strncmp(route, "/-/", 3) == 0) {
        snprintf(err, len, "route '%s' is reserved: /-/ holds the server's own paths", route);
        return false;
    }
    if (ok && strcmp(route, "/metrics") == 0) {
        snprintf(err, len, "route '/metrics' is reserved for the server's metrics");
        return false;
    }
    if (!ok)
        snprintf(err, len, "route '%s' is invalid: it must start with '/' and hold no spaces, '?' or '#'",
                 route);
    return ok;
}

void backend_spec_pack(msgpack_packer *pk, const struct backend_spec *b)
{
    const struct backend_options *o = &b->options;
    msgpack_pack_map(pk, 19 + (b->plugin_file != NULL) + (b->plugin_digest != NULL));
    mp_pack_key(pk, "name");
    mp_pack_str(pk, b->name);
    mp_pack_key(pk, b->remote ? "remote" : "plugin");
    mp_pack_str(pk, b->remote ? b->remote : b->plugin);
    if (b->plugin_file) {
        mp_pack_key(pk, "plugin_file");
        mp_pack_str(pk, b->plugin_file);
    }
    if (b->plugin_digest) {
        mp_pack_key(pk, "plugin_digest");
        mp_pack_str(pk, b->plugin_digest);
    }
    mp_pack_key(pk, "num_replicas");
    msgpack_pack_uint32(pk, o->num_replicas);
    mp_pack_key(pk, "max_batch_size");
    msgpack_pack_uint32(pk, o->max_batch_size);
    mp_pack_key(pk, "max_concurrent_queries");
    msgpack_pack_uint32(pk, o->max_concurrent_queries);
    mp_pack_key(pk, "max_queued_requests");
    msgpack_pack_uint32(pk, o->max_queued_requests);
    mp_pack_key(pk, "batch_wait_timeout_ms");
    msgpack_pack_double(pk, o->batch_wait_timeout_ms);
    mp_pack_key(pk, "request_timeout_ms");
    msgpack_pack_double(pk, o->request_timeout_ms);
    mp_pack_key(pk, "isolation");
    mp_pack_str(pk, isolation_name(o->isolation));
    mp_pack_key(pk, "hang_timeout_ms");
    msgpack_pack_double(pk, o->hang_timeout_ms);
    mp_pack_key(pk, "max_memory");
    msgpack_pack_uint64(pk, o->max_memory);
    mp_pack_key(pk, "min_replicas");
    msgpack_pack_uint32(pk, o->min_replicas);
    mp_pack_key(pk, "max_replicas");
    msgpack_pack_uint32(pk, o->max_replicas);
    mp_pack_key(pk, "target_ongoing_requests");
    msgpack_pack_double(pk, o->target_ongoing_requests);
    mp_pack_key(pk, "upscale_delay_s");
    msgpack_pack_double(pk, o->upscale_delay_s);
    mp_pack_key(pk, "downscale_delay_s");
    msgpack_pack_double(pk, o->downscale_delay_s);
    mp_pack_key(pk, "latency_slo_ms");
    msgpack_pack_double(pk, o->latency_slo_ms);
    mp_pack_key(pk, "config");
    config_pack(pk, b->config);
    mp_pack_key(pk, "config_base");
    config_pack_bases(pk, b->config);
}

void config_pack(msgpack_packer *pk, const serve_config *c)
{
    size_t n = c ? c->count : 0;
    msgpack_pack_map(pk, n);
    for (size_t i = 0; i < n; i++) {
        mp_pack_str(pk, c->keys[i]);
        mp_pack_str(pk, c->values[i]);
    }
}

void config_pack_bases(msgpack_packer *pk, const serve_config *c)
{
    size_t n = c ? c->count : 0, with = 0;
    for (size_t i = 0; i < n; i++) with += c->bases[i] != NULL;
    msgpack_pack_map(pk, with);
    for (size_t i = 0; i < n; i++)
        if (c->bases[i]) {
            mp_pack_str(pk, c->keys[i]);
            mp_pack_str(pk, c->bases[i]);
        }
}

const char *config_base_in(const msgpack_object *bases, const char *key, char *buf, size_t len)
{
    const msgpack_object *o = mp_get(bases, key);
    if (!o || o->type != MSGPACK_OBJECT_STR || o->via.str.size >= len) return NULL;
    memcpy(buf, o->via.str.ptr, o->via.str.size);
    buf[o->via.str.size] = '\0';
    return buf;
}

static bool unpack_u32(const msgpack_object *map, const char *key, uint32_t *out,
                       char *err, size_t len)
{
    const msgpack_object *o = mp_get(map, key);
    if (!o) return true; /* absent: keep the default */
    uint64_t v;
    if (!mp_as_uint(o, &v) || v > UINT32_MAX) {
        snprintf(err, len, "%s must be a non-negative integer", key);
        return false;
    }
    *out = (uint32_t)v;
    return true;
}

static bool unpack_ms(const msgpack_object *map, const char *key, double *out,
                      char *err, size_t len)
{
    const msgpack_object *o = mp_get(map, key);
    if (!o) return true;
    if (!mp_as_double(o, out)) {
        snprintf(err, len, "%s must be a number", key);
        return false;
    }
    return true;
}

bool backend_spec_unpack(const msgpack_object *o, struct backend_spec *b,
                         char *err, size_t len)
{
    memset(b, 0, sizeof *b);
    backend_options_default(&b->options);
    struct backend_options *opt = &b->options;
    if (!mp_as_str(mp_get(o, "name"), &b->name)) {
        snprintf(err, len, "backend: name missing");
        goto fail;
    }
    if (!mp_as_str(mp_get(o, "plugin"), &b->plugin) &&
        !mp_as_str(mp_get(o, "remote"), &b->remote)) {
        snprintf(err, len, "backend %s: plugin missing", b->name);
        goto fail;
    }
    /* Both or neither: a copy is only known by its digest. */
    if (mp_as_str(mp_get(o, "plugin_file"), &b->plugin_file) &&
        !mp_as_str(mp_get(o, "plugin_digest"), &b->plugin_digest)) {
        free(b->plugin_file);
        b->plugin_file = NULL;
    }
    if (!unpack_u32(o, "num_replicas", &opt->num_replicas, err, len) ||
        !unpack_u32(o, "max_batch_size", &opt->max_batch_size, err, len) ||
        !unpack_u32(o, "max_concurrent_queries", &opt->max_concurrent_queries, err, len) ||
        !unpack_u32(o, "max_queued_requests", &opt->max_queued_requests, err, len) ||
        !unpack_ms(o, "batch_wait_timeout_ms", &opt->batch_wait_timeout_ms, err, len) ||
        !unpack_ms(o, "request_timeout_ms", &opt->request_timeout_ms, err, len) ||
        !unpack_ms(o, "hang_timeout_ms", &opt->hang_timeout_ms, err, len) ||
        !unpack_u32(o, "min_replicas", &opt->min_replicas, err, len) ||
        !unpack_u32(o, "max_replicas", &opt->max_replicas, err, len) ||
        !unpack_ms(o, "target_ongoing_requests", &opt->target_ongoing_requests, err, len) ||
        !unpack_ms(o, "upscale_delay_s", &opt->upscale_delay_s, err, len) ||
        !unpack_ms(o, "downscale_delay_s", &opt->downscale_delay_s, err, len) ||
        !unpack_ms(o, "latency_slo_ms", &opt->latency_slo_ms, err, len))
        goto fail;
    const msgpack_object *isolation = mp_get(o, "isolation");
    if (isolation) {
        char *name = NULL;
        opt->isolation = mp_as_str(isolation, &name) ? isolation_from_name(name) : ISOLATION_KINDS;
        free(name);
        if (opt->isolation >= ISOLATION_KINDS) {
            snprintf(err, len, "backend %s: isolation must be process or thread", b->name);
            goto fail;
        }
    }
    const msgpack_object *max_memory = mp_get(o, "max_memory");
    uint64_t bytes;
    if (max_memory) {
        if (!mp_as_uint(max_memory, &bytes)) {
            snprintf(err, len, "backend %s: max_memory must be a number of bytes", b->name);
            goto fail;
        }
        opt->max_memory = bytes;
    }
    b->config = config_new();
    if (!b->config) goto fail;
    const msgpack_object *cfg = mp_get(o, "config");
    if (cfg && cfg->type != MSGPACK_OBJECT_MAP && cfg->type != MSGPACK_OBJECT_NIL) {
        snprintf(err, len, "backend %s: config must be a map of strings", b->name);
        goto fail;
    }
    const msgpack_object *bases = mp_get(o, "config_base");
    for (uint32_t i = 0; cfg && cfg->type == MSGPACK_OBJECT_MAP && i < cfg->via.map.size; i++) {
        char *k = NULL, *v = NULL, base[4096];
        bool ok = mp_as_str(&cfg->via.map.ptr[i].key, &k) &&
                  mp_as_str(&cfg->via.map.ptr[i].val, &v) && *k &&
                  config_set_at(b->config, k, v, config_base_in(bases, k, base, sizeof base)) == 0;
        free(k);
        free(v);
        if (!ok) {
            snprintf(err, len, "backend %s: config keys and values must be strings", b->name);
            goto fail;
        }
    }
    if (!spec_name_valid("backend", b->name, err, len) ||
        !backend_options_valid(opt, err, len))
        goto fail;
    return true;
fail:
    backend_spec_free(b);
    return false;
}

static void pack_shares(msgpack_packer *pk, const struct share *shares, size_t n)
{
    msgpack_pack_map(pk, n);
    for (size_t i = 0; i < n; i++) {
        mp_pack_str(pk, shares[i].backend);
        msgpack_pack_double(pk, shares[i].weight);
    }
}

void endpoint_spec_pack(msgpack_packer *pk, const struct endpoint_spec *e)
{
    char methods[128];
    methods_format(e->methods, methods, sizeof methods);
    msgpack_pack_map(pk, 5);
    mp_pack_key(pk, "name");
    mp_pack_str(pk, e->name);
    mp_pack_key(pk, "route");
    mp_pack_str(pk, e->route);
    mp_pack_key(pk, "methods");
    mp_pack_str(pk, methods);
    mp_pack_key(pk, "traffic");
    pack_shares(pk, e->traffic, e->traffic_count);
    mp_pack_key(pk, "shadow");
    pack_shares(pk, e->shadows, e->shadow_count);
}

static bool unpack_shares(const msgpack_object *o, struct share **out, size_t *count)
{
    *out = NULL;
    *count = 0;
    if (!o || o->type == MSGPACK_OBJECT_NIL) return true;
    if (o->type != MSGPACK_OBJECT_MAP) return false;
    *out = calloc(o->via.map.size + 1, sizeof **out);
    if (!*out) return false;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        struct share *sh = &(*out)[i];
        if (!mp_as_str(&o->via.map.ptr[i].key, &sh->backend)) return false;
        (*count)++;
        if (!mp_as_double(&o->via.map.ptr[i].val, &sh->weight)) return false;
    }
    return true;
}

bool endpoint_spec_unpack(const msgpack_object *o, struct endpoint_spec *e,
                          char *err, size_t len)
{
    memset(e, 0, sizeof *e);
    e->methods = METHODS_DEFAULT;
    if (!mp_as_str(mp_get(o, "name"), &e->name)) {
        snprintf(err, len, "endpoint: name missing");
        goto fail;
    }
    char *backend = NULL;
    if (mp_as_str(mp_get(o, "backend"), &backend)) {
        bool ok = spec_name_valid("backend", backend, err, len) && endpoint_set_backend(e, backend);
        free(backend);
        if (!ok) goto fail;
    } else if (!unpack_shares(mp_get(o, "traffic"), &e->traffic, &e->traffic_count)) {
        snprintf(err, len, "endpoint %s: traffic must map backend names to weights", e->name);
        goto fail;
    }
    if (!unpack_shares(mp_get(o, "shadow"), &e->shadows, &e->shadow_count)) {
        snprintf(err, len, "endpoint %s: shadow must map backend names to fractions", e->name);
        goto fail;
    }
    const msgpack_object *route = mp_get(o, "route");
    if (route && route->type != MSGPACK_OBJECT_NIL && !mp_as_str(route, &e->route)) {
        snprintf(err, len, "endpoint %s: route must be a string", e->name);
        goto fail;
    }
    char *methods = NULL;
    if (mp_get(o, "methods")) {
        if (!mp_as_str(mp_get(o, "methods"), &methods)) {
            snprintf(err, len, "endpoint %s: methods must be a string", e->name);
            goto fail;
        }
        bool ok = methods_parse(methods, &e->methods, err, len);
        free(methods);
        if (!ok) goto fail;
    }
    if (!spec_name_valid("endpoint", e->name, err, len) ||
        (e->route && !route_valid(e->route, err, len)) || !endpoint_traffic_valid(e, err, len))
        goto fail;
    for (size_t i = 0; i < e->traffic_count; i++)
        if (!spec_name_valid("backend", e->traffic[i].backend, err, len)) goto fail;
    for (size_t i = 0; i < e->shadow_count; i++)
        if (!spec_name_valid("backend", e->shadows[i].backend, err, len)) goto fail;
    return true;
fail:
    endpoint_spec_free(e);
    return false;
}
