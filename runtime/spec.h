/* spec.h - what a backend and an endpoint are, as the user declared them.
 *
 * These plain descriptions travel over the control socket, live in the
 * state file and drive the running objects. Validation lives here too, so the
 * CLI, the control plane and the state loader refuse the same things with the
 * same words. */
#ifndef SERVE_RUNTIME_SPEC_H
#define SERVE_RUNTIME_SPEC_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "serve/plugin.h"

/* serve_config (opaque in the SDK): sorted key/value strings. */
struct serve_config {
    size_t count;
    char **keys;
    char **values;
    /* Per entry: the folder a relative path value is relative to (the
     * deploy file's, or the working directory of the command that set it);
     * NULL when unknown. See serve_config_path. */
    char **bases;
};

serve_config *config_new(void);
/* Sets key to value, relative paths in it being relative to `base`
 * (NULL: unknown). 0, or -1 when out of memory. */
int config_set_at(serve_config *c, const char *key, const char *value, const char *base);
/* Removes key, if set. */
void config_unset(serve_config *c, const char *key);
serve_config *config_copy(const serve_config *c);
void config_free(serve_config *c);
int config_set(serve_config *c, const char *key, const char *value);
bool config_equal(const serve_config *a, const serve_config *b);

struct backend_options {
    uint32_t num_replicas;
    uint32_t max_batch_size;
    uint32_t max_concurrent_queries; /* 0 means: 2 x max batch, at least 8 */
    uint32_t max_queued_requests;
    double batch_wait_timeout_ms;
    double request_timeout_ms;       /* 0 means no timeout */
    uint32_t isolation;              /* enum isolation */
    double hang_timeout_ms;          /* 0 means none */
    uint64_t max_memory;             /* bytes; 0 means none (process replicas) */
    /* Autoscaling (autoscale.h), on when both bounds are set (not 0). Then
     * num_replicas is the count the autoscaler last chose: what the
     * backend starts with, kept within [min_replicas, max_replicas]. */
    uint32_t min_replicas;
    uint32_t max_replicas;
    double target_ongoing_requests;  /* per replica; default 2 */
    double upscale_delay_s;          /* default 5 */
    double downscale_delay_s;        /* default 30 */
    /* Adaptive batching (batch_tuner.h): p99 queue + execution target in
     * ms; 0 means off (max_batch_size and batch_wait_timeout_ms as given). */
    double latency_slo_ms;
};

/* True when the options turn autoscaling on. */
static inline bool backend_options_autoscaled(const struct backend_options *o)
{
    return o->max_replicas > 0;
}

/* num_replicas within the autoscaling bounds, where they are set. */
void backend_options_normalize(struct backend_options *o);

enum isolation { ISOLATION_PROCESS, ISOLATION_THREAD, ISOLATION_KINDS };

/* "process" or "thread"; ISOLATION_KINDS for anything else. */
uint32_t isolation_from_name(const char *name);
const char *isolation_name(uint32_t isolation);

/* "512M", "2G", "65536": bytes, with an optional binary suffix (K, M, G). */
bool size_parse(const char *s, uint64_t *out);
bool backend_options_equal(const struct backend_options *a, const struct backend_options *b);

void backend_options_default(struct backend_options *o);
uint32_t backend_options_concurrency(const struct backend_options *o);

struct backend_spec {
    char *name;
    char *plugin; /* absolute path to the .so, as the user named it; NULL when remote */
    /* A remote backend's URLs, "URL[,URL...]" (remote_url.h); NULL for a
     * plugin. Exactly one of plugin and remote is set. */
    char *remote;
    /* The private copy replicas load (plugin_store.h) and its content
     * digest; NULL until the control plane imports the file (and where
     * nothing does: unit tests, serve try), when replicas load `plugin`. */
    char *plugin_file;
    char *plugin_digest;
    struct backend_options options;
    serve_config *config;
};

/* HTTP methods an endpoint accepts, as a bit set. */
enum {
    METHOD_GET = 1 << 0,
    METHOD_POST = 1 << 1,
    METHOD_PUT = 1 << 2,
    METHOD_DELETE = 1 << 3,
    METHOD_PATCH = 1 << 4,
    METHOD_HEAD = 1 << 5,
    METHOD_OPTIONS = 1 << 6,
};
#define METHODS_DEFAULT (METHOD_GET | METHOD_POST)

unsigned method_bit(const char *name); /* 0 if unknown */
/* Parses "GET,POST" into *out; on error writes a message to err. */
bool methods_parse(const char *list, unsigned *out, char *err, size_t errlen);
/* Writes "GET,POST" into buf. */
void methods_format(unsigned methods, char *buf, size_t len);

/* A backend's part of an endpoint's traffic (weight) or of its shadow
 * copies (fraction). */
struct share {
    char *backend;
    double weight;
};

struct endpoint_spec {
    char *name;
    char *route;           /* NULL: reachable by handle only */
    unsigned methods;
    struct share *traffic; /* weights sum to 1 */
    size_t traffic_count;
    struct share *shadows; /* fractions in (0, 1] */
    size_t shadow_count;
};

/* True when the endpoint sends traffic or shadow copies to `backend`. */
bool endpoint_uses(const struct endpoint_spec *e, const char *backend);
/* Sets the traffic to one backend with weight 1. */
bool endpoint_set_backend(struct endpoint_spec *e, const char *backend);
/* Checks weights (sum to 1) and fractions; one line in err. */
bool endpoint_traffic_valid(const struct endpoint_spec *e, char *err, size_t len);

bool backend_spec_copy(struct backend_spec *dst, const struct backend_spec *src);
/* Exactly one of plugin and remote, and remote's URLs well formed; one
 * line in err. */
bool backend_source_valid(const struct backend_spec *b, char *err, size_t len);
bool endpoint_spec_copy(struct endpoint_spec *dst, const struct endpoint_spec *src);
/* What replicas dlopen: the private copy, or the plugin itself. */
const char *backend_spec_load_path(const struct backend_spec *b);
/* Same plugin path and same file content (where both were imported). */
bool backend_spec_same_code(const struct backend_spec *a, const struct backend_spec *b);
bool backend_spec_equal(const struct backend_spec *a, const struct backend_spec *b);
bool endpoint_spec_equal(const struct endpoint_spec *a, const struct endpoint_spec *b);

void backend_spec_free(struct backend_spec *b);
void endpoint_spec_free(struct endpoint_spec *e);

/* Validation. Each returns true or writes one line to err. */
bool spec_name_valid(const char *kind, const char *name, char *err, size_t len);
bool route_valid(const char *route, char *err, size_t len);
bool backend_options_valid(const struct backend_options *o, char *err,
                           size_t len);

/* The config as a map of strings; its bases as a map key -> folder. */
void config_pack(msgpack_packer *pk, const serve_config *c);
void config_pack_bases(msgpack_packer *pk, const serve_config *c);
/* key's folder in such a map of bases, copied into buf; NULL if none. */
const char *config_base_in(const msgpack_object *bases, const char *key, char *buf, size_t len);
void backend_spec_pack(msgpack_packer *pk, const struct backend_spec *b);
bool backend_spec_unpack(const msgpack_object *o, struct backend_spec *b,
                         char *err, size_t len);
void endpoint_spec_pack(msgpack_packer *pk, const struct endpoint_spec *e);
bool endpoint_spec_unpack(const msgpack_object *o, struct endpoint_spec *e,
                          char *err, size_t len);

#endif
