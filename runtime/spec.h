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
};

serve_config *config_new(void);
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
};

void backend_options_default(struct backend_options *o);
uint32_t backend_options_concurrency(const struct backend_options *o);

struct backend_spec {
    char *name;
    char *plugin; /* absolute path to the .so */
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

struct endpoint_spec {
    char *name;
    char *backend;
    char *route; /* NULL: reachable by handle only */
    unsigned methods;
};

void backend_spec_free(struct backend_spec *b);
void endpoint_spec_free(struct endpoint_spec *e);

/* Validation. Each returns true or writes one line to err. */
bool spec_name_valid(const char *kind, const char *name, char *err, size_t len);
bool route_valid(const char *route, char *err, size_t len);
bool backend_options_valid(const struct backend_options *o, char *err,
                           size_t len);

void backend_spec_pack(msgpack_packer *pk, const struct backend_spec *b);
bool backend_spec_unpack(const msgpack_object *o, struct backend_spec *b,
                         char *err, size_t len);
void endpoint_spec_pack(msgpack_packer *pk, const struct endpoint_spec *e);
bool endpoint_spec_unpack(const msgpack_object *o, struct endpoint_spec *e,
                          char *err, size_t len);

#endif
