/* cmd_bench.c - serve bench: options, target, runs, reports. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../runtime/mp.h"
#include "../cli.h"
#include "load.h"
#include "metrics_diff.h"
#include "plot.h"

#define MAX_BODIES 64
#define MAX_HEADERS 64
#define MAX_POINTS 64

struct bench_options {
    char target_url[2048];
    char host[256];   /* for the Host header */
    char path[1536];
    int port;
    const char *method;
    char *bodies[MAX_BODIES];
    size_t body_lens[MAX_BODIES];
    size_t body_count;
    const char *headers[MAX_HEADERS];
    size_t header_count;
    struct load_config load;
    bool json;
    bool stream; /* --stream: report the stream figures even if none came */
    const char *sweep_kind; /* "c" or "rate" */
    double sweep[MAX_POINTS];
    size_t sweep_count;
    const char *plot;
    double slo_ms;
    double max_error_rate;  /* < 0: none */
};

/* "500ms", "3s", "2m", "1h" or plain seconds. */
static bool parse_duration(const char *s, uint64_t *ns)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0 || !isfinite(v)) return false;
    double unit = 1e9;
    if (strcmp(end, "ms") == 0) unit = 1e6;
    else if (strcmp(end, "us") == 0) unit = 1e3;
    else if (strcmp(end, "s") == 0 || !*end) unit = 1e9;
    else if (strcmp(end, "m") == 0) unit = 60e9;
    else if (strcmp(end, "h") == 0) unit = 3600e9;
    else return false;
    *ns = (uint64_t)(v * unit);
    return true;
}

static char *read_body(const char *arg, size_t *len)
{
    if (arg[0] != '@') {
        *len = strlen(arg);
        return strdup(arg);
    }
    FILE *f = fopen(arg + 1, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = size >= 0 ? malloc((size_t)size + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)size, f) != (size_t)size) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = buf ? (size_t)size : 0;
    return buf;
}

/* http://host[:port][/path] */
static bool parse_url(struct bench_options *o, const char *url)
{
    if (strncmp(url, "http://", 7) != 0) return false;
    const char *h = url + 7, *slash = strchr(h, '/');
    size_t hostport = slash ? (size_t)(slash - h) : strlen(h);
    if (hostport == 0 || hostport >= sizeof o->host) return false;
    memcpy(o->host, h, hostport);
    o->host[hostport] = '\0';
    snprintf(o->path, sizeof o->path, "%s", slash ? slash : "/");
    snprintf(o->target_url, sizeof o->target_url, "%s", url);
    o->port = 80;
    char *colon = strrchr(o->host, ':');
    if (colon && !strchr(colon, ']')) {
        uint32_t port;
        if (!cli_parse_u32(colon + 1, 1, 65535, &port)) return false;
        o->port = (int)port;
    }
    return true;
}

/* An endpoint name of the local server: its URL and route, from status. */
static bool resolve_endpoint(struct bench_options *o, const char *name, const char *state_dir)
{
    struct cli_request req;
    cli_request_begin(&req, "status", 0);
    msgpack_unpacked reply;
    const msgpack_object *result;
    bool ok = cli_send("bench", state_dir, &req, &reply, &result);
    if (!ok) return false;
    char url[256] = "", route[1100] = "";
    bool found = false;
    cli_str(result, "url", url, sizeof url);
    const msgpack_object *eps = mp_get(result, "endpoints");
    for (uint32_t i = 0; eps && eps->type == MSGPACK_OBJECT_ARRAY && i < eps->via.array.size; i++) {
        char n[128];
        if (strcmp(cli_str(&eps->via.array.ptr[i], "name", n, sizeof n), name) != 0) continue;
        found = true;
        cli_str(&eps->via.array.ptr[i], "route", route, sizeof route);
    }
    cli_reply_free(&reply);
    if (!found) {
        cli_fail("bench", "no endpoint named %s on the server of %s (a target is a URL or an endpoint name)",
                 name, state_dir);
        return false;
    }
    if (strcmp(route, "-") == 0) {
        cli_fail("bench", "endpoint %s has no route; bench works over HTTP", name);
        return false;
    }
    char full[2048];
    snprintf(full, sizeof full, "%s%s", url, route);
    return parse_url(o, full);
}

static bool build_requests(struct bench_options *o)
{
    if (o->body_count == 0) {
        o->bodies[0] = strdup("");
        o->body_lens[0] = 0;
        o->body_count = 1;
    }
    const char *method = o->method ? o->method : (o->body_lens[0] || o->body_count > 1 ? "POST" : "GET");
    o->load.requests = calloc(o->body_count, sizeof *o->load.requests);
    o->load.request_lens = calloc(o->body_count, sizeof *o->load.request_lens);
    if (!o->load.requests || !o->load.request_lens) return false;
    for (size_t i = 0; i < o->body_count; i++) {
        size_t cap = strlen(o->path) + strlen(o->host) + o->body_lens[i] + 256;
        for (size_t h = 0; h < o->header_count; h++) cap += strlen(o->headers[h]) + 2;
        char *req = malloc(cap);
        if (!req) return false;
        int n = snprintf(req, cap, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, o->path, o->host);
        for (size_t h = 0; h < o->header_count; h++)
            n += snprintf(req + n, cap - (size_t)n, "%s\r\n", o->headers[h]);
        bool body = o->body_lens[i] || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
                    strcmp(method, "PATCH") == 0;
        if (body) n += snprintf(req + n, cap - (size_t)n, "Content-Length: %zu\r\n", o->body_lens[i]);
        n += snprintf(req + n, cap - (size_t)n, "\r\n");
        memcpy(req + n, o->bodies[i], o->body_lens[i]);
        o->load.requests[i] = req;
        o->load.request_lens[i] = (size_t)n + o->body_lens[i];
    }
    o->load.request_count = o->body_count;
    return true;
}

static bool resolve_address(struct bench_options *o)
{
    char host[256];
    snprintf(host, sizeof host, "%s", o->host);
    char *colon = strrchr(host, ':');
    if (colon && !strchr(colon, ']')) *colon = '\0';
    char *name = host;
    if (name[0] == '[') {
        name++;
        name[strcspn(name, "]")] = '\0';
    }
    char port[16];
    snprintf(port, sizeof port, "%d", o->port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(name, port, &hints, &res) != 0 || !res) return false;
    memcpy(&o->load.addr, res->ai_addr, res->ai_addrlen);
    o->load.addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    return true;
}

static uint64_t errors_total(const struct load_result *r)
{
    uint64_t n = r->errors_connect + r->errors_read + r->errors_timeout;
    for (int s = 0; s < 600; s++)
        if (s < 200 || s >= 400) n += r->by_status[s];
    return n;
}

static double error_rate(const struct load_result *r)
{
    uint64_t attempts = r->requests + r->errors_connect + r->errors_read + r->errors_timeout;
    return attempts ? (double)errors_total(r) / (double)attempts : 0;
}

static double mean_batch(const struct server_stats *s)
{
    double req = 0, batches = 0;
    for (size_t i = 0; i < s->count; i++) {
        req += s->backends[i].batch_sum;
        batches += s->backends[i].batch_count;
    }
    return batches ? req / batches : 0;
}

static void json_result(const struct bench_options *o, const struct load_result *r,
                        const struct server_stats *s, const char *point)
{
    const struct latency_histogram *h = &r->latency;
    printf("{\"target\": \"%s\", ", o->target_url);
    if (point) printf("\"point\": \"%s\", ", point);
    printf("\"mode\": \"%s\", \"connections\": %d, \"threads\": %d, \"rate\": %g, "
           "\"requests\": %llu, \"duration_s\": %.3f, \"throughput_rps\": %.1f, \"bytes\": %llu, ",
           o->load.rate > 0 ? "open" : "closed", o->load.connections, o->load.threads,
           o->load.rate, (unsigned long long)r->requests, r->duration_s,
           r->duration_s > 0 ? (double)r->requests / r->duration_s : 0,
           (unsigned long long)r->bytes);
    printf("\"errors\": {\"total\": %llu, \"connect\": %llu, \"read\": %llu, \"timeout\": %llu, "
           "\"status\": {",
           (unsigned long long)errors_total(r), (unsigned long long)r->errors_connect,
           (unsigned long long)r->errors_read, (unsigned long long)r->errors_timeout);
    bool first = true;
    for (int st = 0; st < 600; st++)
        if (r->by_status[st] && (st < 200 || st >= 400)) {
            printf("%s\"%d\": %llu", first ? "" : ", ", st, (unsigned long long)r->by_status[st]);
            first = false;
        }
    printf("}}, \"error_rate\": %.6f, \"late\": %llu, \"unsent\": %llu, ", error_rate(r),
           (unsigned long long)r->late, (unsigned long long)r->unsent);
    printf("\"latency_us\": {\"p50\": %llu, \"p90\": %llu, \"p99\": %llu, \"p99.9\": %llu, "
           "\"max\": %llu, \"mean\": %.1f}",
           (unsigned long long)lat_quantile(h, 0.5), (unsigned long long)lat_quantile(h, 0.9),
           (unsigned long long)lat_quantile(h, 0.99), (unsigned long long)lat_quantile(h, 0.999),
           (unsigned long long)h->max_us, lat_mean(h));
    if (o->stream || r->streams) {
        const struct latency_histogram *f = &r->first_byte, *b = &r->between_chunks;
        printf(", \"stream\": {\"streams\": %llu, \"chunks\": %llu, \"chunks_per_s\": %.1f, "
               "\"first_byte_us\": {\"p50\": %llu, \"p99\": %llu, \"mean\": %.1f}, "
               "\"between_chunks_us\": {\"p50\": %llu, \"p99\": %llu, \"mean\": %.1f}}",
               (unsigned long long)r->streams, (unsigned long long)r->chunks,
               r->duration_s > 0 ? (double)r->chunks / r->duration_s : 0,
               (unsigned long long)lat_quantile(f, 0.5), (unsigned long long)lat_quantile(f, 0.99),
               lat_mean(f), (unsigned long long)lat_quantile(b, 0.5),
               (unsigned long long)lat_quantile(b, 0.99), lat_mean(b));
    }
    if (s->valid) {
        printf(", \"server\": {\"mean_batch_size\": %.3f, \"backends\": {", mean_batch(s));
        for (size_t i = 0; i < s->count; i++) {
            const struct backend_stats *b = &s->backends[i];
            printf("%s\"%s\": {\"requests\": %.0f, \"batches\": %.0f, \"mean_batch_size\": %.3f, "
                   "\"mean_queue_ms\": %.3f, \"mean_exec_ms\": %.3f, \"batch_sizes\": {",
                   i ? ", " : "", b->name, b->requests, b->batches,
                   b->batch_count ? b->batch_sum / b->batch_count : 0,
                   b->queue_count ? 1e3 * b->queue_sum / b->queue_count : 0,
                   b->exec_count ? 1e3 * b->exec_sum / b->exec_count : 0);
            double below = 0;
            bool any = false;
            for (int k = 0; k < BATCH_BOUNDS; k++) {
                double n = b->batch_le[k] - below;
                below = b->batch_le[k];
                if (n <= 0) continue;
                printf("%s\"<=%s\": %.0f", any ? ", " : "", batch_bound_labels[k], n);
                any = true;
            }
            printf("}}");
        }
        printf("}}");
    }
    printf("}");
}

static void text_result(const struct bench_options *o, const struct load_result *r,
                        const struct server_stats *s)
{
    const struct latency_histogram *h = &r->latency;
    printf("serve bench %s: %s loop, %d connection(s), %d thread(s)", o->target_url,
           o->load.rate > 0 ? "open" : "closed", o->load.connections, o->load.threads);
    if (o->load.rate > 0) printf(", %g req/s scheduled", o->load.rate);
    printf("\n  requests   %llu in %.2f s = %.1f req/s, %.1f MB read\n",
           (unsigned long long)r->requests, r->duration_s,
           r->duration_s > 0 ? (double)r->requests / r->duration_s : 0, (double)r->bytes / 1e6);
    printf("  latency    p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms  mean %.3f ms\n",
           lat_quantile(h, 0.5) / 1e3, lat_quantile(h, 0.9) / 1e3, lat_quantile(h, 0.99) / 1e3,
           lat_quantile(h, 0.999) / 1e3, h->max_us / 1e3, lat_mean(h) / 1e3);
    printf("  errors     %llu (%.2f%%): connect %llu, read %llu, timeout %llu",
           (unsigned long long)errors_total(r), 100 * error_rate(r),
           (unsigned long long)r->errors_connect, (unsigned long long)r->errors_read,
           (unsigned long long)r->errors_timeout);
    for (int st = 0; st < 600; st++)
        if (r->by_status[st] && (st < 200 || st >= 400))
            printf(", HTTP %d: %llu", st, (unsigned long long)r->by_status[st]);
    printf("\n");
    if (o->stream || r->streams) {
        const struct latency_histogram *f = &r->first_byte, *b = &r->between_chunks;
        printf("  streams    %llu chunked answers, %llu chunks = %.1f chunks/s\n",
               (unsigned long long)r->streams, (unsigned long long)r->chunks,
               r->duration_s > 0 ? (double)r->chunks / r->duration_s : 0);
        printf("  first byte p50 %.3f ms  p99 %.3f ms   between chunks p50 %.3f ms  p99 %.3f ms\n",
               lat_quantile(f, 0.5) / 1e3, lat_quantile(f, 0.99) / 1e3, lat_quantile(b, 0.5) / 1e3,
               lat_quantile(b, 0.99) / 1e3);
    }
    if (o->load.rate > 0)
        printf("  schedule   %llu sent more than 1 ms late, %llu never sent (counted with their wait)\n",
               (unsigned long long)r->late, (unsigned long long)r->unsent);
    if (!s->valid || !s->count) return;
    printf("server (from its /metrics, this run only):\n");
    for (size_t i = 0; i < s->count; i++) {
        const struct backend_stats *b = &s->backends[i];
        printf("  backend %-14s %.0f requests in %.0f batches, mean batch %.2f, queue %.3f ms, exec %.3f ms\n",
               b->name, b->requests, b->batches, b->batch_count ? b->batch_sum / b->batch_count : 0,
               b->queue_count ? 1e3 * b->queue_sum / b->queue_count : 0,
               b->exec_count ? 1e3 * b->exec_sum / b->exec_count : 0);
        printf("    batch sizes:");
        double below = 0;
        for (int k = 0; k < BATCH_BOUNDS; k++) {
            double n = b->batch_le[k] - below;
            below = b->batch_le[k];
            if (n > 0) printf(" <=%s: %.0f", batch_bound_labels[k], n);
        }
        printf("\n");
    }
}

static bool run_once(struct bench_options *o, struct load_result *r, struct server_stats *s)
{
    struct server_stats before;
    server_stats_fetch((struct sockaddr *)&o->load.addr, o->load.addr_len, o->host, &before);
    char err[512];
    if (!load_run(&o->load, r, err, sizeof err)) return cli_fail("bench", "%s", err) == 0;
    if (before.valid) {
        server_stats_fetch((struct sockaddr *)&o->load.addr, o->load.addr_len, o->host, s);
        server_stats_diff(s, &before);
    } else {
        memset(s, 0, sizeof *s);
    }
    return true;
}

static int run_sweep(struct bench_options *o)
{
    struct plot_point points[MAX_POINTS];
    long best = -1;
    if (o->json) printf("{\"sweep\": \"%s\", \"points\": [", o->sweep_kind);
    else
        printf("%-12s %12s %10s %10s %10s %8s %10s\n", "point", "req/s", "p50_ms", "p99_ms",
               "errors", "err%", "mean_batch");
    struct load_result *r = malloc(sizeof *r);
    struct server_stats *s = malloc(sizeof *s);
    if (!r || !s) return cli_fail("bench", "out of memory");
    for (size_t i = 0; i < o->sweep_count; i++) {
        if (strcmp(o->sweep_kind, "c") == 0) o->load.connections = (int)o->sweep[i];
        else o->load.rate = o->sweep[i];
        struct plot_point *p = &points[i];
        snprintf(p->label, sizeof p->label, "%s=%g", o->sweep_kind, o->sweep[i]);
        if (!run_once(o, r, s)) return 1;
        p->throughput = r->duration_s > 0 ? (double)r->requests / r->duration_s : 0;
        p->p50_ms = lat_quantile(&r->latency, 0.5) / 1e3;
        p->p99_ms = lat_quantile(&r->latency, 0.99) / 1e3;
        /* A point counts only when it was answered: no requests, or more
         * than 1% errors, is no throughput at any latency. */
        bool answered = r->requests > 0 && error_rate(r) <= 0.01;
        if (o->slo_ms > 0 && answered && p->p99_ms <= o->slo_ms &&
            (best < 0 || p->throughput > points[best].throughput))
            best = (long)i;
        if (o->json) {
            if (i) printf(", ");
            json_result(o, r, s, p->label);
        } else {
            printf("%-12s %12.1f %10.3f %10.3f %10llu %7.2f%% %10.2f\n", p->label, p->throughput,
                   p->p50_ms, p->p99_ms, (unsigned long long)errors_total(r), 100 * error_rate(r),
                   s->valid ? mean_batch(s) : 0.0);
            fflush(stdout);
        }
    }
    free(r);
    free(s);
    if (o->json) printf("], \"slo_ms\": %g, \"slo_point\": %ld}\n", o->slo_ms, best);
    else if (o->slo_ms > 0 && best >= 0)
        printf("highest throughput with p99 <= %g ms: %s, %.1f req/s\n", o->slo_ms, points[best].label,
               points[best].throughput);
    else if (o->slo_ms > 0)
        printf("no point kept p99 <= %g ms\n", o->slo_ms);
    if (o->plot) {
        char title[2200];
        snprintf(title, sizeof title, "serve bench %s (sweep over %s)", o->target_url, o->sweep_kind);
        if (!plot_write(o->plot, title, points, o->sweep_count, o->slo_ms, best))
            return cli_fail("bench", "--plot %s: %s", o->plot, strerror(errno));
    }
    return o->slo_ms > 0 && best < 0 ? 3 : 0;
}

static bool parse_sweep(struct bench_options *o, const char *arg)
{
    const char *eq = strchr(arg, '=');
    if (!eq) return false;
    if (strncmp(arg, "c=", 2) == 0) o->sweep_kind = "c";
    else if (strncmp(arg, "rate=", 5) == 0) o->sweep_kind = "rate";
    else return false;
    char list[1024];
    snprintf(list, sizeof list, "%s", eq + 1);
    char *save = NULL;
    for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        double v;
        if (o->sweep_count == MAX_POINTS || !cli_parse_double(t, 1, 1e8, &v)) return false;
        o->sweep[o->sweep_count++] = v;
    }
    return o->sweep_count > 0;
}

static int run_bench(int argc, char **argv, const char *state_dir)
{
    static const struct option long_options[] = {
        {"connections", required_argument, NULL, 'c'}, {"threads", required_argument, NULL, 't'},
        {"duration", required_argument, NULL, 'd'},    {"requests", required_argument, NULL, 'n'},
        {"rate", required_argument, NULL, 'r'},        {"warmup", required_argument, NULL, 'w'},
        {"method", required_argument, NULL, 'm'},      {"data", required_argument, NULL, 'D'},
        {"header", required_argument, NULL, 'H'},      {"timeout", required_argument, NULL, 'T'},
        {"stream", no_argument, NULL, 'R'},
        {"json", no_argument, NULL, 'j'},              {"sweep", required_argument, NULL, 's'},
        {"plot", required_argument, NULL, 'p'},        {"slo-ms", required_argument, NULL, 'S'},
        {"max-error-rate", required_argument, NULL, 'E'}, {0, 0, 0, 0}};
    struct bench_options *o = calloc(1, sizeof *o);
    if (!o) return cli_fail("bench", "out of memory");
    o->load.connections = 16;
    o->load.threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    o->load.timeout_ns = 30000000000ull;
    o->max_error_rate = -1;
    uint64_t duration = 0;
    uint32_t u;
    int c, rc = 2;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":c:t:d:n:H:", long_options, NULL)) != -1) {
        const char *bad = NULL;
        switch (c) {
        case 'c': if (!cli_parse_u32(optarg, 1, 100000, &u)) bad = "-c"; else o->load.connections = (int)u; break;
        case 't': if (!cli_parse_u32(optarg, 1, 256, &u)) bad = "-t"; else o->load.threads = (int)u; break;
        case 'd': if (!parse_duration(optarg, &duration) || !duration) bad = "-d"; break;
        case 'n': {
            double n;
            if (!cli_parse_double(optarg, 1, 1e12, &n)) bad = "-n";
            else o->load.count = (uint64_t)n;
            break;
        }
        case 'r': if (!cli_parse_double(optarg, 0.001, 1e8, &o->load.rate)) bad = "--rate"; break;
        case 'w': if (!parse_duration(optarg, &o->load.warmup_ns)) bad = "--warmup"; break;
        case 'T': if (!parse_duration(optarg, &o->load.timeout_ns) || !o->load.timeout_ns) bad = "--timeout"; break;
        case 'm': o->method = optarg; break;
        case 'D':
            if (o->body_count == MAX_BODIES) { bad = "--data (at most 64)"; break; }
            o->bodies[o->body_count] = read_body(optarg, &o->body_lens[o->body_count]);
            if (!o->bodies[o->body_count]) bad = "--data";
            else o->body_count++;
            break;
        case 'H':
            if (!strchr(optarg, ':') || o->header_count == MAX_HEADERS) bad = "-H (expected 'Name: value')";
            else o->headers[o->header_count++] = optarg;
            break;
        case 'j': o->json = true; break;
        case 'R': o->stream = true; break;
        case 's': if (!parse_sweep(o, optarg)) bad = "--sweep (expected c=1,4,16 or rate=100,200)"; break;
        case 'p': o->plot = optarg; break;
        case 'S': if (!cli_parse_double(optarg, 0.001, 1e9, &o->slo_ms)) bad = "--slo-ms"; break;
        case 'E': if (!cli_parse_double(optarg, 0, 1, &o->max_error_rate)) bad = "--max-error-rate (0..1)"; break;
        case ':': fprintf(stderr, "serve: bench: missing value for option %s\n", argv[optind - 1]); goto out;
        default: fprintf(stderr, "serve: bench: unknown option %s; see `serve bench --help`\n", argv[optind - 1]); goto out;
        }
        if (bad) {
            fprintf(stderr, "serve: bench: %s %s: not a valid value\n", bad, optarg);
            goto out;
        }
    }
    if (argc - optind != 1) {
        fprintf(stderr, "serve: bench: usage: serve bench TARGET [options] (TARGET: a URL or an endpoint name)\n");
        goto out;
    }
    if (duration && o->load.count) {
        fprintf(stderr, "serve: bench: give -d or -n, not both\n");
        goto out;
    }
    if (o->plot && !o->sweep_count) {
        fprintf(stderr, "serve: bench: --plot draws a --sweep\n");
        goto out;
    }
    o->load.duration_ns = o->load.count ? 0 : duration ? duration : 10000000000ull;
    rc = 1;
    const char *target = argv[optind];
    if (strstr(target, "://") ? !parse_url(o, target) : !resolve_endpoint(o, target, state_dir)) {
        if (strstr(target, "://")) cli_fail("bench", "%s: expected http://HOST[:PORT][/PATH]", target);
        goto out;
    }
    if (!resolve_address(o)) {
        cli_fail("bench", "%s: cannot resolve %s", o->target_url, o->host);
        goto out;
    }
    if (!build_requests(o)) {
        cli_fail("bench", "out of memory");
        goto out;
    }
    o->load.progress = !o->json && isatty(STDERR_FILENO);
    if (o->sweep_count) {
        rc = run_sweep(o);
        goto out;
    }
    struct load_result *r = malloc(sizeof *r);
    struct server_stats *s = malloc(sizeof *s);
    if (!r || !s || !run_once(o, r, s)) {
        free(r);
        free(s);
        goto out;
    }
    if (o->json) {
        json_result(o, r, s, NULL);
        printf("\n");
    } else {
        text_result(o, r, s);
    }
    rc = 0;
    if (o->max_error_rate >= 0 && error_rate(r) > o->max_error_rate) {
        fprintf(stderr, "serve: bench: error rate %.4f is above --max-error-rate %g\n", error_rate(r),
                o->max_error_rate);
        rc = 3;
    }
    double p99_ms = lat_quantile(&r->latency, 0.99) / 1e3;
    if (o->slo_ms > 0 && p99_ms > o->slo_ms) {
        fprintf(stderr, "serve: bench: p99 %.3f ms is above --slo-ms %g\n", p99_ms, o->slo_ms);
        rc = 3;
    }
    free(r);
    free(s);
out:
    for (size_t i = 0; i < o->body_count; i++) free(o->bodies[i]);
    for (size_t i = 0; o->load.requests && i < o->load.request_count; i++) free(o->load.requests[i]);
    free(o->load.requests);
    free(o->load.request_lens);
    free(o);
    return rc;
}

const struct cli_command cmd_bench = {
    .name = "bench",
    .usage = "bench TARGET [-c N | --rate R] [-d DURATION | -n COUNT] [options]",
    .summary = "Load-test a URL or an endpoint of the local server.",
    .help = "TARGET is http://HOST[:PORT][/PATH] or the name of an endpoint of the server of\n"
            "--state-dir. Closed loop by default: -c connections, each with one request out.\n"
            "--rate sends on a fixed schedule instead and measures latency from each request's\n"
            "intended send time, so a stalled server cannot hide. When the target is a serve\n"
            "server, its /metrics before and after give the run's batch sizes, queue and exec time.\n"
            "Durations: 500ms, 3s, 2m. Exit status 3 when --max-error-rate or --slo-ms is exceeded.\n\n"
            "Options:\n"
            "  -c, --connections N      keep-alive connections (default 16)\n"
            "  -t, --threads N          event loops (default: one per core)\n"
            "  -d, --duration D         measure for D (default 10s)\n"
            "  -n, --requests N         or send exactly N requests\n"
            "      --rate R             open loop: R requests/s in total\n"
            "      --warmup D           send for D first without measuring\n"
            "      --method M           HTTP method (default GET, POST with --data)\n"
            "      --data STR|@FILE     request body; several are sent in turn\n"
            "  -H, --header 'K: V'      extra request header (repeatable)\n"
            "      --timeout D          a request not answered in D is an error (default 30s)\n"
            "      --stream             report streamed answers: time to first byte and\n"
            "                           between chunks (p50, p99), chunks/s (shown anyway\n"
            "                           when answers come chunked)\n"
            "      --json               one JSON object with every figure\n"
            "      --sweep c=1,4,16|rate=100,200\n"
            "                           one run of -d per point, as a table\n"
            "      --plot FILE.svg      draw the sweep: latency against throughput\n"
            "      --slo-ms X           mark the highest throughput whose p99 <= X ms;\n"
            "                           exit 3 when none (sweep) or when p99 > X (one run)\n"
            "      --max-error-rate F   exit 3 when more than this fraction of requests failed\n"
            "                           (single runs; a sweep's exit status follows --slo-ms)\n",
    .run = run_bench,
};
