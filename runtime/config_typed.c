/* config_typed.c - the SDK's typed config getters (serve/plugin.h). */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_typed.h"
#include "spec.h"

/* Per thread: init and reconfigure run on one thread each, and the
 * runtime reads the reason on that thread once they return. */
static _Thread_local char last_error[512];

void config_error_clear(void) { last_error[0] = '\0'; }

void config_error_set(const char *reason)
{
    snprintf(last_error, sizeof last_error, "%s", reason ? reason : "");
}

SERVE_EXPORT const char *serve_config_error(void) { return last_error; }

static int refuse(const char *key, const char *value, const char *what)
{
    /* The value as far as a line shows it. */
    int shown = strlen(value) > 64 ? 61 : 64;
    snprintf(last_error, sizeof last_error, "config %s=%.*s%s: %s", key, shown, value,
             shown < 64 ? "..." : "", what);
    return SERVE_EINVAL;
}

/* The value, or NULL when absent (or the arguments are bad: *bad). */
static const char *lookup(const serve_config *c, const char *key, const void *out, int *rc)
{
    *rc = SERVE_OK;
    if (!key || !out) {
        *rc = SERVE_EINVAL;
        return NULL;
    }
    return serve_config_get(c, key);
}

SERVE_EXPORT int serve_config_int(const serve_config *c, const char *key, int64_t def,
                                  int64_t *out)
{
    int rc;
    const char *v = lookup(c, key, out, &rc);
    if (!v) {
        if (rc == SERVE_OK) *out = def;
        return rc;
    }
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (end == v || *end || v[0] == ' ') return refuse(key, v, "not an integer");
    if (errno == ERANGE || n < INT64_MIN || n > INT64_MAX) return refuse(key, v, "out of range");
    *out = (int64_t)n;
    return SERVE_OK;
}

SERVE_EXPORT int serve_config_number(const serve_config *c, const char *key, double def,
                                     double *out)
{
    int rc;
    const char *v = lookup(c, key, out, &rc);
    if (!v) {
        if (rc == SERVE_OK) *out = def;
        return rc;
    }
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (end == v || *end || v[0] == ' ') return refuse(key, v, "not a number");
    if (errno == ERANGE || !isfinite(d)) return refuse(key, v, "out of range");
    *out = d;
    return SERVE_OK;
}

SERVE_EXPORT int serve_config_bool(const serve_config *c, const char *key, int def, int *out)
{
    int rc;
    const char *v = lookup(c, key, out, &rc);
    if (!v) {
        if (rc == SERVE_OK) *out = def ? 1 : 0;
        return rc;
    }
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) return *out = 1, SERVE_OK;
        if (strcasecmp(v, no[i]) == 0) return *out = 0, SERVE_OK;
    }
    return refuse(key, v, "not a boolean (true/false, yes/no, on/off, 1/0)");
}

SERVE_EXPORT int serve_config_size(const serve_config *c, const char *key, uint64_t def,
                                   uint64_t *out)
{
    int rc;
    const char *v = lookup(c, key, out, &rc);
    if (!v) {
        if (rc == SERVE_OK) *out = def;
        return rc;
    }
    uint64_t bytes;
    if (!size_parse(v, &bytes)) return refuse(key, v, "not a size (bytes, or with K, M or G: 512M)");
    *out = bytes;
    return SERVE_OK;
}

SERVE_EXPORT int serve_config_path(const serve_config *c, const char *key, const char *def,
                                   char *out, size_t outlen)
{
    if (!key || !out || outlen == 0) return SERVE_EINVAL;
    const char *v = serve_config_get(c, key), *base = NULL;
    if (!v) {
        v = def ? def : "";
    } else {
        for (size_t i = 0; i < c->count; i++)
            if (c->values[i] == v) base = c->bases[i];
    }
    int n = v[0] == '/' || !base || !*v ? snprintf(out, outlen, "%s", v)
                                        : snprintf(out, outlen, "%s/%s", base, v);
    if (n < 0 || (size_t)n >= outlen) {
        out[0] = '\0';
        return refuse(key, v, "path too long");
    }
    return SERVE_OK;
}
