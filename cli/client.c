/* client.c - the CLI's side of the control socket, and small helpers. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "../runtime/clock.h"
#include "../runtime/frame.h"
#include "../runtime/mp.h"
#include "../runtime/state_dir.h"
#include "cli.h"

int cli_fail(const char *cmd, const char *fmt, ...)
{
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "serve: %s: %s\n", cmd, msg);
    return 1;
}

int cli_getopt(const char *cmd, int argc, char **argv, const struct option *options)
{
    opterr = 0; /* our own one-line messages */
    int index = -1;
    int c = getopt_long(argc, argv, ":", options, &index);
    if (c == -1) return -1;
    const char *token = argv[optind - 1];
    if (c == ':' || c == '?') {
        fprintf(stderr, "serve: %s: %s %s; see `serve %s --help`\n", cmd,
                c == ':' ? "missing value for option" : "unknown option", token, cmd);
        exit(2);
    }
    /* getopt_long takes any unique prefix ("--num-rep"); a typo must not pass
     * as an option, so only the whole name is accepted. */
    if (strncmp(token, "--", 2) != 0 && optind >= 2) token = argv[optind - 2];
    size_t len = strcspn(token + 2, "=");
    if (strncmp(token, "--", 2) != 0 || strlen(options[index].name) != len ||
        strncmp(token + 2, options[index].name, len) != 0) {
        fprintf(stderr, "serve: %s: unknown option %.*s (did you mean --%s?)\n", cmd,
                (int)(len + 2), token, options[index].name);
        exit(2);
    }
    return c;
}

bool cli_parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+') return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max) return false;
    *out = (uint32_t)v;
    return true;
}

bool cli_parse_double(const char *s, double min, double max, double *out)
{
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < min || v > max) return false;
    *out = v;
    return true;
}

/* The raw bytes behind the last reply (one control call at a time). */
static char *reply_data;

void cli_reply_free(msgpack_unpacked *reply)
{
    msgpack_unpacked_destroy(reply);
    free(reply_data);
    reply_data = NULL;
}

double cli_control_timeout_s = 30;
void (*cli_on_chunk)(const void *data, size_t len);

/* Connects to the server's socket. A server whose listen queue is full
 * would hold a blocking connect(2): SO_SNDTIMEO bounds it. */
static int connect_control(const struct sockaddr_un *addr, uint64_t deadline_ns)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (deadline_ns) {
        uint64_t now = serve__now_ns();
        /* At least 1 us: a zero timeval would mean no limit. */
        uint64_t left_us = deadline_ns > now + 1000 ? (deadline_ns - now) / 1000 : 1;
        struct timeval tv = {(time_t)(left_us / 1000000), (suseconds_t)(left_us % 1000000)};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) != 0) {
        int e = errno == EAGAIN || errno == EINPROGRESS ? ETIMEDOUT : errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

bool cli_call(const char *cmd, const char *state_dir, const msgpack_sbuffer *request,
              msgpack_unpacked *reply, const msgpack_object **result)
{
    /* Another user who can write the state dir could have put a server of
     * their own there, to read what we send and answer what they like. */
    char err[4200];
    if (!state_dir_check(state_dir, err, sizeof err)) {
        cli_fail(cmd, "%s", err);
        return false;
    }
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int n = snprintf(addr.sun_path, sizeof addr.sun_path, "%s/control.sock", state_dir);
    if (n >= (int)sizeof addr.sun_path) {
        cli_fail(cmd, "state dir %s is too deep for a Unix socket path", state_dir);
        return false;
    }
    uint64_t deadline_ns = cli_control_timeout_s > 0
                               ? serve__now_ns() + (uint64_t)(cli_control_timeout_s * 1e9)
                               : 0;
    int fd = connect_control(&addr, deadline_ns);
    if (fd < 0) {
        if (errno == ENOENT || errno == ECONNREFUSED)
            cli_fail(cmd, "no server is running on state dir %s (start one with `serve start`)",
                     state_dir);
        else if (errno == ETIMEDOUT)
            cli_fail(cmd, "no answer from the server in %g s", cli_control_timeout_s);
        else
            cli_fail(cmd, "cannot reach the server at %s: %s", addr.sun_path, strerror(errno));
        return false;
    }
    char *data = NULL;
    size_t len = 0;
    bool read_ok = frame_write(fd, request->data, request->size, deadline_ns) == 0 &&
                   frame_read(fd, &data, &len, FRAME_MAX, deadline_ns) == 0;
    /* A streamed `serve call`: {"chunk": BIN} frames before the reply. */
    while (read_ok && cli_on_chunk) {
        msgpack_unpacked frame;
        msgpack_unpacked_init(&frame);
        size_t at = 0;
        const msgpack_object *chunk = NULL;
        if (msgpack_unpack_next(&frame, data, len, &at) == MSGPACK_UNPACK_SUCCESS)
            chunk = mp_get(&frame.data, "chunk");
        if (chunk && chunk->type == MSGPACK_OBJECT_BIN)
            cli_on_chunk(chunk->via.bin.ptr, chunk->via.bin.size);
        msgpack_unpacked_destroy(&frame);
        if (!chunk) break;
        free(data);
        data = NULL;
        read_ok = frame_read(fd, &data, &len, FRAME_MAX, deadline_ns) == 0;
    }
    if (!read_ok) {
        int e = errno;
        close(fd);
        free(data);
        if (e == ETIMEDOUT)
            cli_fail(cmd, "no answer from the server in %g s", cli_control_timeout_s);
        else
            cli_fail(cmd, "the server closed the control connection without an answer");
        return false;
    }
    close(fd);
    msgpack_unpacked_init(reply);
    size_t off = 0;
    if (msgpack_unpack_next(reply, data, len, &off) != MSGPACK_UNPACK_SUCCESS) {
        free(data);
        msgpack_unpacked_destroy(reply);
        cli_fail(cmd, "the server sent a malformed answer");
        return false;
    }
    /* Strings in the unpacked object point into data: keep it with them. */
    reply_data = data;
    bool ok = false;
    mp_as_bool(mp_get(&reply->data, "ok"), &ok);
    if (!ok) {
        char *err = NULL;
        mp_as_str(mp_get(&reply->data, "error"), &err);
        cli_fail(cmd, "%s", err ? err : "failed");
        free(err);
        cli_reply_free(reply);
        return false;
    }
    *result = mp_get(&reply->data, "result");
    return true;
}

void cli_request_begin(struct cli_request *r, const char *cmd, size_t more_fields)
{
    msgpack_sbuffer_init(&r->sbuf);
    msgpack_packer_init(&r->pk, &r->sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&r->pk, 1 + more_fields);
    mp_pack_key(&r->pk, "cmd");
    mp_pack_str(&r->pk, cmd);
}

bool cli_send(const char *cmd, const char *state_dir, struct cli_request *r,
              msgpack_unpacked *reply, const msgpack_object **result)
{
    bool ok = cli_call(cmd, state_dir, &r->sbuf, reply, result);
    msgpack_sbuffer_destroy(&r->sbuf);
    return ok;
}

static void print_json_string(const char *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

void cli_print_json(const msgpack_object *o)
{
    if (!o) {
        printf("null");
        return;
    }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: printf("null"); break;
    case MSGPACK_OBJECT_BOOLEAN: printf(o->via.boolean ? "true" : "false"); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: printf("%llu", (unsigned long long)o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: printf("%lld", (long long)o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: printf("%.17g", o->via.f64); break;
    case MSGPACK_OBJECT_STR: print_json_string(o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN: print_json_string(o->via.bin.ptr, o->via.bin.size); break;
    case MSGPACK_OBJECT_ARRAY:
        putchar('[');
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i) printf(", ");
            cli_print_json(&o->via.array.ptr[i]);
        }
        putchar(']');
        break;
    case MSGPACK_OBJECT_MAP:
        putchar('{');
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            if (i) printf(", ");
            cli_print_json(&o->via.map.ptr[i].key);
            printf(": ");
            cli_print_json(&o->via.map.ptr[i].val);
        }
        putchar('}');
        break;
    default: printf("null"); break;
    }
}

const char *cli_str(const msgpack_object *o, const char *key, char *buf, size_t len)
{
    const msgpack_object *v = mp_get(o, key);
    if (!v || v->type != MSGPACK_OBJECT_STR) return "-";
    snprintf(buf, len, "%.*s", (int)v->via.str.size, v->via.str.ptr);
    return buf;
}

uint64_t cli_uint(const msgpack_object *o, const char *key)
{
    uint64_t v = 0;
    mp_as_uint(mp_get(o, key), &v);
    return v;
}

double cli_double(const msgpack_object *o, const char *key)
{
    double v = 0;
    mp_as_double(mp_get(o, key), &v);
    return v;
}

void cli_print_backends(const msgpack_object *backends) { cli_print_backends_live(backends, NULL); }

void cli_print_backends_live(const msgpack_object *backends, const msgpack_object *live)
{
    printf("%-16s %-10s %8s %9s %8s %11s %6s %9s %5s %9s", "BACKEND", "PLUGIN", "REPLICAS",
           "MAX_BATCH", "WAIT_MS", "CONCURRENCY", "QUEUED", "IN_FLIGHT", "BUSY", "REQUESTS");
    if (live) printf(" %9s %9s", "RPS_10S", "BATCH_10S");
    printf("  CONFIG\n");
    for (uint32_t i = 0; backends && backends->type == MSGPACK_OBJECT_ARRAY &&
                         i < backends->via.array.size; i++) {
        const msgpack_object *b = &backends->via.array.ptr[i];
        const msgpack_object *spec = mp_get(b, "spec");
        char name[128], plugin[128], remote[1024] = "";
        cli_str(spec, "name", name, sizeof name);
        /* A remote backend's URLs would break the columns: CONFIG has them. */
        if (mp_get(spec, "remote")) cli_str(spec, "remote", remote, sizeof remote);
        printf("%-16s %-10s %8llu %9llu %8g %11llu %6llu %9llu %5llu %9llu", name,
               remote[0] ? "remote" : cli_str(b, "plugin_name", plugin, sizeof plugin),
               (unsigned long long)(mp_get(b, "replicas") ? cli_uint(b, "replicas")
                                                          : cli_uint(spec, "num_replicas")),
               (unsigned long long)cli_uint(spec, "max_batch_size"),
               cli_double(spec, "batch_wait_timeout_ms"), (unsigned long long)cli_uint(b, "concurrency"),
               (unsigned long long)cli_uint(b, "queued"), (unsigned long long)cli_uint(b, "in_flight"),
               (unsigned long long)cli_uint(b, "busy_replicas"), (unsigned long long)cli_uint(b, "requests"));
        if (live) {
            const msgpack_object *l = mp_get(mp_get(live, "backends"), name);
            printf(" %9.1f %9.2f", cli_double(l, "rps"), cli_double(l, "mean_batch_size"));
        }
        printf("  ");
        const msgpack_object *cfg = mp_get(spec, "config");
        if (remote[0])
            printf("%s%s", remote, cfg && cfg->type == MSGPACK_OBJECT_MAP && cfg->via.map.size ? " " : "");
        for (uint32_t k = 0; cfg && cfg->type == MSGPACK_OBJECT_MAP && k < cfg->via.map.size; k++) {
            const msgpack_object_kv *kv = &cfg->via.map.ptr[k];
            printf("%s%.*s=%.*s", k ? "," : "", (int)kv->key.via.str.size, kv->key.via.str.ptr,
                   (int)kv->val.via.str.size, kv->val.via.str.ptr);
        }
        printf("\n");
    }
    /* Replica crashes (process isolation), under the table: rare, long. */
    for (uint32_t i = 0; backends && backends->type == MSGPACK_OBJECT_ARRAY &&
                         i < backends->via.array.size; i++) {
        const msgpack_object *b = &backends->via.array.ptr[i];
        char name[128], last[320], unavailable[1300];
        cli_str(mp_get(b, "spec"), "name", name, sizeof name);
        uint64_t crashes = cli_uint(b, "crashes");
        if (crashes)
            printf("backend %s: %llu replica crash(es); last: %s\n", name,
                   (unsigned long long)crashes, cli_str(b, "last_crash", last, sizeof last));
        if (*cli_str(b, "unavailable", unavailable, sizeof unavailable))
            printf("backend %s: unavailable: %s\n", name, unavailable);
        const msgpack_object *spec = mp_get(b, "spec");
        const msgpack_object *scaling = mp_get(b, "autoscaling");
        if (scaling)
            printf("backend %s: autoscaling: %llu replica(s) running, target %llu within %llu..%llu; "
                   "%.1f ongoing request(s) (target %g per replica)\n",
                   name, (unsigned long long)cli_uint(b, "replicas"),
                   (unsigned long long)cli_uint(b, "target_replicas"),
                   (unsigned long long)cli_uint(spec, "min_replicas"),
                   (unsigned long long)cli_uint(spec, "max_replicas"),
                   cli_double(scaling, "mean_ongoing"), cli_double(spec, "target_ongoing_requests"));
        const msgpack_object *adaptive = mp_get(b, "adaptive_batching");
        if (adaptive)
            printf("backend %s: adaptive batching: max batch %llu, wait %.2f ms; p99 queue + "
                   "execution %.1f ms against the %g ms SLO\n",
                   name, (unsigned long long)cli_uint(adaptive, "max_batch_size"),
                   cli_double(adaptive, "batch_wait_timeout_ms"), cli_double(adaptive, "p99_ms"),
                   cli_double(adaptive, "latency_slo_ms"));
    }
}

/* "a=0.9,b=0.1", or "a" alone for a single backend with weight 1. */
static void format_shares(const msgpack_object *m, char *buf, size_t len, bool always_weights)
{
    size_t n = 0;
    buf[0] = '\0';
    for (uint32_t i = 0; m && m->type == MSGPACK_OBJECT_MAP && i < m->via.map.size; i++) {
        const msgpack_object_kv *kv = &m->via.map.ptr[i];
        double w = 0;
        mp_as_double(&kv->val, &w);
        if (!always_weights && m->via.map.size == 1 && w == 1)
            n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "%.*s",
                                  (int)kv->key.via.str.size, kv->key.via.str.ptr);
        else
            n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "%s%.*s=%g", i ? "," : "",
                                  (int)kv->key.via.str.size, kv->key.via.str.ptr, w);
    }
    if (!buf[0]) snprintf(buf, len, "-");
}

void cli_print_endpoints(const msgpack_object *endpoints) { cli_print_endpoints_live(endpoints, NULL); }

void cli_print_endpoints_live(const msgpack_object *endpoints, const msgpack_object *live)
{
    printf("%-16s %-24s %-10s %-24s %-16s", "ENDPOINT", "ROUTE", "METHODS", "TRAFFIC", "SHADOW");
    if (live) printf(" %9s %9s %9s", "RPS_10S", "P50_MS<=", "P99_MS<=");
    printf("\n");
    for (uint32_t i = 0; endpoints && endpoints->type == MSGPACK_OBJECT_ARRAY &&
                         i < endpoints->via.array.size; i++) {
        const msgpack_object *e = &endpoints->via.array.ptr[i];
        char name[128], route[1100], methods[128], traffic[512], shadow[512];
        format_shares(mp_get(e, "traffic"), traffic, sizeof traffic, false);
        format_shares(mp_get(e, "shadow"), shadow, sizeof shadow, true);
        cli_str(e, "name", name, sizeof name);
        printf("%-16s %-24s %-10s %-24s %-16s", name, cli_str(e, "route", route, sizeof route),
               cli_str(e, "methods", methods, sizeof methods), traffic, shadow);
        if (live) {
            const msgpack_object *l = mp_get(mp_get(live, "endpoints"), name);
            printf(" %9.1f %9g %9g", cli_double(l, "rps"), cli_double(l, "p50_ms_at_most"),
                   cli_double(l, "p99_ms_at_most"));
        }
        printf("\n");
    }
}

char *cli_read_data(const char *arg, size_t *len)
{
    if (arg[0] != '@') {
        *len = strlen(arg);
        return strdup(arg);
    }
    FILE *f = strcmp(arg + 1, "-") == 0 ? stdin : fopen(arg + 1, "rb");
    if (!f) return NULL;
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
        if (n == cap) {
            char *grown = realloc(buf, cap * 2);
            if (!grown) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
            cap *= 2;
        }
    }
    bool failed = ferror(f);
    if (f != stdin) fclose(f);
    if (failed) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}
