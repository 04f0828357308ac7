/* cmd_backend.c - serve create-backend, delete-backend, list-backends. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../runtime/mp.h"
#include "../runtime/plugin_path.h"
#include "../runtime/remote_url.h"
#include "../runtime/spec.h"
#include "cli.h"

const struct option backend_long_options[] = {
    {"num-replicas", required_argument, NULL, 'r'},
    {"max-batch-size", required_argument, NULL, 'b'},
    {"batch-wait-timeout-ms", required_argument, NULL, 'w'},
    {"max-concurrent-queries", required_argument, NULL, 'c'},
    {"max-queued-requests", required_argument, NULL, 'q'},
    {"request-timeout-ms", required_argument, NULL, 't'},
    {"isolation", required_argument, NULL, 'I'},
    {"hang-timeout-ms", required_argument, NULL, 'h'},
    {"max-memory", required_argument, NULL, 'M'},
    {"config", required_argument, NULL, 'C'},
    {"remote", required_argument, NULL, 'R'},
    {"min-replicas", required_argument, NULL, 'n'},
    {"max-replicas", required_argument, NULL, 'x'},
    {"target-ongoing-requests", required_argument, NULL, 'g'},
    {"upscale-delay", required_argument, NULL, 'u'},
    {"downscale-delay", required_argument, NULL, 'd'},
    {"latency-slo-ms", required_argument, NULL, 'L'},
    {0, 0, 0, 0}};

int parse_backend_option(int c, struct backend_spec *spec)
{
    struct backend_options *o = &spec->options;
    const char *name = NULL;
    bool ok = true;
    switch (c) {
    case 'r': name = "--num-replicas"; ok = cli_parse_u32(optarg, 1, 256, &o->num_replicas); break;
    case 'b': name = "--max-batch-size"; ok = cli_parse_u32(optarg, 1, 65536, &o->max_batch_size); break;
    case 'w':
        name = "--batch-wait-timeout-ms";
        ok = cli_parse_double(optarg, 0, 3600000, &o->batch_wait_timeout_ms);
        break;
    case 'c':
        name = "--max-concurrent-queries";
        ok = cli_parse_u32(optarg, 1, 1000000, &o->max_concurrent_queries);
        break;
    case 'q':
        name = "--max-queued-requests";
        ok = cli_parse_u32(optarg, 1, 10000000, &o->max_queued_requests);
        break;
    case 't':
        name = "--request-timeout-ms";
        ok = cli_parse_double(optarg, 0, 86400000, &o->request_timeout_ms);
        break;
    case 'I':
        name = "--isolation";
        o->isolation = isolation_from_name(optarg);
        if (o->isolation >= ISOLATION_KINDS)
            return cli_fail("create-backend", "--isolation %s: expected process or thread", optarg);
        break;
    case 'n': name = "--min-replicas"; ok = cli_parse_u32(optarg, 0, 256, &o->min_replicas); break;
    case 'x': name = "--max-replicas"; ok = cli_parse_u32(optarg, 0, 256, &o->max_replicas); break;
    case 'g':
        name = "--target-ongoing-requests";
        ok = cli_parse_double(optarg, 0.001, 1000000, &o->target_ongoing_requests);
        break;
    case 'u': name = "--upscale-delay"; ok = cli_parse_double(optarg, 0, 86400, &o->upscale_delay_s); break;
    case 'd':
        name = "--downscale-delay";
        ok = cli_parse_double(optarg, 0, 86400, &o->downscale_delay_s);
        break;
    case 'L': name = "--latency-slo-ms"; ok = cli_parse_double(optarg, 0, 3600000, &o->latency_slo_ms); break;
    case 'h':
        name = "--hang-timeout-ms";
        ok = cli_parse_double(optarg, 0, 86400000, &o->hang_timeout_ms);
        break;
    case 'M':
        name = "--max-memory";
        ok = size_parse(optarg, &o->max_memory);
        if (!ok)
            return cli_fail("create-backend", "--max-memory %s: expected a size in bytes or with "
                            "K, M or G (512M, 4G)", optarg);
        break;
    case 'C': {
        const char *eq = strchr(optarg, '=');
        if (!eq || eq == optarg)
            return cli_fail("create-backend", "--config %s: expected KEY=VALUE", optarg);
        char *key = strndup(optarg, (size_t)(eq - optarg));
        /* A relative path in a value is relative to where the user is. */
        char cwd[PATH_MAX];
        int rc = key ? config_set_at(spec->config, key, eq + 1,
                                     getcwd(cwd, sizeof cwd) ? cwd : NULL) : -1;
        free(key);
        return rc == 0 ? 0 : cli_fail("create-backend", "out of memory");
    }
    case 'R': {
        struct remote_url *urls;
        size_t count;
        char why[512];
        if (!remote_urls_parse(optarg, &urls, &count, why, sizeof why))
            return cli_fail("create-backend", "--remote: %s", why);
        remote_urls_free(urls, count);
        free(spec->remote);
        spec->remote = strdup(optarg);
        return spec->remote ? 0 : cli_fail("create-backend", "out of memory");
    }
    default: return cli_fail("create-backend", "unknown option; see `serve create-backend --help`");
    }
    if (!ok) return cli_fail("create-backend", "%s %s: not a valid value", name, optarg);
    return 0;
}

static int run_create_backend(int argc, char **argv, const char *state_dir)
{
    struct backend_spec spec = {0};
    backend_options_default(&spec.options);
    spec.config = config_new();
    int c, rc = 1;
    optind = 1;
    while ((c = cli_getopt("create-backend", argc, argv, backend_long_options)) != -1)
        if (parse_backend_option(c, &spec) != 0) goto out;
    if (argc - optind != (spec.remote ? 1 : 2)) {
        cli_fail("create-backend", spec.remote
                                       ? "usage: serve create-backend NAME --remote URL[,URL...] "
                                         "[options] (no PLUGIN)"
                                       : "usage: serve create-backend NAME PLUGIN [options]");
        goto out;
    }
    char err[4096], path[PATH_MAX];
    if (!spec_name_valid("backend", argv[optind], err, sizeof err) ||
        !backend_options_valid(&spec.options, err, sizeof err) ||
        (!spec.remote &&
         !plugin_path_resolve(argv[optind + 1], path, sizeof path, err, sizeof err))) {
        cli_fail("create-backend", "%s", err);
        goto out;
    }
    spec.name = strdup(argv[optind]);
    if (!spec.remote) spec.plugin = strdup(path);

    struct cli_request req;
    cli_request_begin(&req, "create-backend", 1);
    msgpack_packer *pk = &req.pk;
    mp_pack_key(pk, "backend");
    backend_spec_pack(pk, &spec);
    msgpack_unpacked reply;
    const msgpack_object *result;
    bool ok = cli_send("create-backend", state_dir, &req, &reply, &result);
    if (ok) {
        if (spec.remote)
            printf("serve: backend %s created: remote %s\n", spec.name, spec.remote);
        else
            printf("serve: backend %s created: %u replica(s) of %s\n", spec.name,
                   spec.options.num_replicas, spec.plugin);
        cli_reply_free(&reply);
        rc = 0;
    }
out:
    backend_spec_free(&spec);
    return rc;
}

const struct cli_command cmd_create_backend = {
    .name = "create-backend",
    .usage = "create-backend NAME PLUGIN|--remote URL[,URL...] [options] [--config KEY=VALUE]...",
    .summary = "Load a plugin and start its replicas as backend NAME.",
    .help = "PLUGIN is a path to a .so, or a bare name (counter) looked up as PLUGIN.so in\n"
            "each folder of SERVE_PLUGIN_PATH, beside the serve binary (plugins/) and in\n"
            "the installed plugin folder.\n\n"
            "With --remote instead of PLUGIN, nothing is loaded: requests routed to NAME\n"
            "(HTTP, handle calls, shadows, split shares) are forwarded to another serve\n"
            "node (or any HTTP server) over pooled keep-alive HTTP/1.1 connections, the\n"
            "URL's path taking the place of the endpoint's route; requests take the URLs\n"
            "in turn. A request is tried again, on the next URL, only when it cannot have\n"
            "run: none of it was sent, or a stopping serve node refused it (503,\n"
            "X-Serve-Unprocessed); an unreachable remote answers 502 \"remote backend\n"
            "NAME unreachable: REASON\". Each replica is a client loop of up to\n"
            "--max-concurrent-queries connections. Give it a --request-timeout-ms.\n\n"
            "Options:\n" BACKEND_OPTIONS_HELP,
    .run = run_create_backend,
};

int cli_simple_named(const char *cmd, int argc, char **argv, const char *state_dir,
                        const char *done_fmt)
{
    if (argc != 2 || argv[1][0] == '-') return cli_fail(cmd, "usage: serve %s NAME", cmd);
    struct cli_request req;
    cli_request_begin(&req, cmd, 1);
    msgpack_packer *pk = &req.pk;
    mp_pack_key(pk, "name");
    mp_pack_str(pk, argv[1]);
    msgpack_unpacked reply;
    const msgpack_object *result;
    bool ok = cli_send(cmd, state_dir, &req, &reply, &result);
    if (!ok) return 1;
    printf(done_fmt, argv[1]);
    cli_reply_free(&reply);
    return 0;
}

static int run_delete_backend(int argc, char **argv, const char *state_dir)
{
    return cli_simple_named("delete-backend", argc, argv, state_dir, "serve: backend %s deleted\n");
}

const struct cli_command cmd_delete_backend = {
    .name = "delete-backend",
    .usage = "delete-backend NAME",
    .summary = "Stop and remove a backend; refused while an endpoint uses it.",
    .help = "Requests already queued for the backend are answered before its replicas stop.\n\n"
            "Options:\n",
    .run = run_delete_backend,
};

int cli_list(const char *cmd, int argc, char **argv, const char *state_dir,
             void (*print)(const msgpack_object *))
{
    static const struct option long_options[] = {{"json", no_argument, NULL, 'j'}, {0, 0, 0, 0}};
    bool json = false;
    int c;
    optind = 1;
    while ((c = cli_getopt(cmd, argc, argv, long_options)) != -1) {
        if (c != 'j') return cli_fail(cmd, "usage: serve %s [--json]", cmd);
        json = true;
    }
    if (optind < argc) return cli_fail(cmd, "unexpected argument '%s'", argv[optind]);
    struct cli_request req;
    cli_request_begin(&req, cmd, 0);
    msgpack_unpacked reply;
    const msgpack_object *result;
    bool ok = cli_send(cmd, state_dir, &req, &reply, &result);
    if (!ok) return 1;
    if (json) {
        cli_print_json(result);
        printf("\n");
    } else {
        print(result);
    }
    cli_reply_free(&reply);
    return 0;
}

static int run_list_backends(int argc, char **argv, const char *state_dir)
{
    return cli_list("list-backends", argc, argv, state_dir, cli_print_backends);
}

const struct cli_command cmd_list_backends = {
    .name = "list-backends",
    .usage = "list-backends [--json]",
    .summary = "List backends with their plugin, options, queue and counts.",
    .help = "Options:\n"
            "  --json              print a JSON array\n",
    .run = run_list_backends,
};
