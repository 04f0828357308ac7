/* cmd_traffic.c - serve update-backend, set-traffic, shadow-traffic and
 * deploy: the commands that change a running deployment. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/deploy_file.h"
#include "../runtime/mp.h"
#include "../runtime/plugin_path.h"
#include "../runtime/spec.h"
#include "cli.h"

/* Sends the packed request and prints `done` (printf with the result) or
 * the error. */
static int send_request(const char *cmd, const char *state_dir, struct cli_request *req,
                        void (*done)(const msgpack_object *result, void *arg), void *arg)
{
    msgpack_unpacked reply;
    const msgpack_object *result;
    bool ok = cli_send(cmd, state_dir, req, &reply, &result);
    if (!ok) return 1;
    done(result, arg);
    cli_reply_free(&reply);
    return 0;
}

static void print_message(const msgpack_object *result, void *arg)
{
    (void)result;
    printf("%s\n", (const char *)arg);
}

static void print_update(const msgpack_object *result, void *arg)
{
    const msgpack_object *changed = mp_get(result, "changed");
    if (changed && changed->type == MSGPACK_OBJECT_BOOLEAN && !changed->via.boolean)
        printf("serve: backend %s: no changes\n", (const char *)arg);
    else
        printf("serve: backend %s updated\n", (const char *)arg);
}

static int run_update_backend(int argc, char **argv, const char *state_dir)
{
    static const struct option extra[] = {{"plugin", required_argument, NULL, 'P'},
                                          {"unset-config", required_argument, NULL, 'U'}};
    struct option options[32];
    size_t n = 0;
    while (backend_long_options[n].name) options[n] = backend_long_options[n], n++;
    options[n++] = extra[0];
    options[n++] = extra[1];
    options[n] = (struct option){0, 0, 0, 0};

    /* Out-of-range markers: whatever the user did not give stays as it is. */
    struct backend_spec spec = {.config = config_new()};
    struct backend_options *o = &spec.options;
    o->num_replicas = o->max_batch_size = o->max_concurrent_queries = o->max_queued_requests =
        UINT32_MAX;
    o->batch_wait_timeout_ms = o->request_timeout_ms = o->hang_timeout_ms = -1;
    o->isolation = UINT32_MAX;
    o->max_memory = UINT64_MAX;
    o->min_replicas = o->max_replicas = UINT32_MAX;
    o->target_ongoing_requests = o->upscale_delay_s = o->downscale_delay_s = o->latency_slo_ms = -1;
    const char *plugin = NULL, *unset[64];
    size_t unset_count = 0;
    int c, rc = 1;
    optind = 1;
    while ((c = cli_getopt("update-backend", argc, argv, options)) != -1) {
        if (c == 'P') {
            plugin = optarg;
        } else if (c == 'U') {
            if (unset_count == 64) {
                cli_fail("update-backend", "at most 64 --unset-config");
                goto out;
            }
            unset[unset_count++] = optarg;
        } else if (parse_backend_option(c, &spec) != 0) {
            goto out;
        }
    }
    if (argc - optind != 1) {
        cli_fail("update-backend", "usage: serve update-backend NAME [options]");
        goto out;
    }
    if (plugin && spec.remote) {
        cli_fail("update-backend", "--plugin and --remote exclude each other");
        goto out;
    }
    char path[PATH_MAX], err[4096];
    if (plugin && !plugin_path_resolve(plugin, path, sizeof path, err, sizeof err)) {
        cli_fail("update-backend", "%s", err);
        goto out;
    }
    struct cli_request req;
    cli_request_begin(&req, "update-backend", 2);
    msgpack_packer *pk = &req.pk;
    mp_pack_key(pk, "name");
    mp_pack_str(pk, argv[optind]);
    mp_pack_key(pk, "changes");
    const struct {
        const char *key;
        uint32_t value;
    } counts[] = {{"num_replicas", o->num_replicas},
                  {"max_batch_size", o->max_batch_size},
                  {"max_concurrent_queries", o->max_concurrent_queries},
                  {"max_queued_requests", o->max_queued_requests},
                  {"min_replicas", o->min_replicas},
                  {"max_replicas", o->max_replicas}};
    const struct {
        const char *key;
        double value;
    } amounts[] = {{"target_ongoing_requests", o->target_ongoing_requests},
                   {"upscale_delay_s", o->upscale_delay_s},
                   {"downscale_delay_s", o->downscale_delay_s},
                   {"latency_slo_ms", o->latency_slo_ms}};
    const size_t ncounts = sizeof counts / sizeof *counts, namounts = sizeof amounts / sizeof *amounts;
    size_t fields = 3;
    for (size_t i = 0; i < ncounts; i++) fields += counts[i].value != UINT32_MAX;
    for (size_t i = 0; i < namounts; i++) fields += amounts[i].value >= 0;
    fields += (o->batch_wait_timeout_ms >= 0) + (o->request_timeout_ms >= 0) + (plugin != NULL);
    fields += !plugin && spec.remote;
    fields += (o->hang_timeout_ms >= 0) + (o->isolation != UINT32_MAX) +
              (o->max_memory != UINT64_MAX);
    msgpack_pack_map(pk, fields);
    for (size_t i = 0; i < ncounts; i++)
        if (counts[i].value != UINT32_MAX) {
            mp_pack_key(pk, counts[i].key);
            msgpack_pack_uint32(pk, counts[i].value);
        }
    for (size_t i = 0; i < namounts; i++)
        if (amounts[i].value >= 0) {
            mp_pack_key(pk, amounts[i].key);
            msgpack_pack_double(pk, amounts[i].value);
        }
    if (o->batch_wait_timeout_ms >= 0) {
        mp_pack_key(pk, "batch_wait_timeout_ms");
        msgpack_pack_double(pk, o->batch_wait_timeout_ms);
    }
    if (o->request_timeout_ms >= 0) {
        mp_pack_key(pk, "request_timeout_ms");
        msgpack_pack_double(pk, o->request_timeout_ms);
    }
    if (o->hang_timeout_ms >= 0) {
        mp_pack_key(pk, "hang_timeout_ms");
        msgpack_pack_double(pk, o->hang_timeout_ms);
    }
    if (o->isolation != UINT32_MAX) {
        mp_pack_key(pk, "isolation");
        mp_pack_str(pk, isolation_name(o->isolation));
    }
    if (o->max_memory != UINT64_MAX) {
        mp_pack_key(pk, "max_memory");
        msgpack_pack_uint64(pk, o->max_memory);
    }
    if (plugin) {
        mp_pack_key(pk, "plugin");
        mp_pack_str(pk, path);
    } else if (spec.remote) {
        mp_pack_key(pk, "remote");
        mp_pack_str(pk, spec.remote);
    }
    mp_pack_key(pk, "config");
    config_pack(pk, spec.config);
    mp_pack_key(pk, "config_base");
    config_pack_bases(pk, spec.config);
    mp_pack_key(pk, "unset_config");
    msgpack_pack_array(pk, unset_count);
    for (size_t i = 0; i < unset_count; i++) mp_pack_str(pk, unset[i]);
    rc = send_request("update-backend", state_dir, &req, print_update, argv[optind]);
out:
    backend_spec_free(&spec);
    return rc;
}

const struct cli_command cmd_update_backend = {
    .name = "update-backend",
    .usage = "update-backend NAME [options] [--config KEY=VALUE]... [--plugin PATH]",
    .summary = "Change a backend without failing a request.",
    .help = "Only the options given change; the defaults shown below are those of\n"
            "create-backend, and an option left out keeps the backend's current value.\n"
            "A change of user config alone goes to the\n"
            "running replicas through the plugin's reconfigure, between batches (a plugin\n"
            "without reconfigure gets new replicas instead). Any other change starts new\n"
            "replicas, routes to them, then drains and stops the old ones.\n"
            "On an autoscaled backend, --num-replicas N moves the replica count to N (kept\n"
            "within the bounds) at once, without new replicas for the others; the\n"
            "autoscaler goes on from there.\n\n"
            "Options:\n" BACKEND_OPTIONS_HELP
            "  --unset-config KEY            remove a key from the user config (repeatable)\n"
            "  --plugin PATH                 serve a different plugin .so (or bare name)\n"
            "                                (--remote URLs make it a remote backend, --plugin\n"
            "                                a local one again)\n",
    .run = run_update_backend,
};

static int run_set_traffic(int argc, char **argv, const char *state_dir)
{
    if (argc < 3 || argv[1][0] == '-')
        return cli_fail("set-traffic", "usage: serve set-traffic ENDPOINT BACKEND=WEIGHT...");
    struct cli_request req;
    cli_request_begin(&req, "set-traffic", 2);
    msgpack_packer *pk = &req.pk;
    mp_pack_key(pk, "endpoint");
    mp_pack_str(pk, argv[1]);
    mp_pack_key(pk, "traffic");
    msgpack_pack_map(pk, (size_t)(argc - 2));
    double sum = 0;
    for (int i = 2; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        double w;
        if (!eq || eq == argv[i] || !cli_parse_double(eq + 1, 0, 1, &w)) {
            msgpack_sbuffer_destroy(&req.sbuf);
            return cli_fail("set-traffic", "%s: expected BACKEND=WEIGHT with a weight from 0 to 1",
                            argv[i]);
        }
        sum += w;
        msgpack_pack_str(pk, (size_t)(eq - argv[i]));
        msgpack_pack_str_body(pk, argv[i], (size_t)(eq - argv[i]));
        msgpack_pack_double(pk, w);
    }
    if (sum < 1 - 1e-6 || sum > 1 + 1e-6) {
        msgpack_sbuffer_destroy(&req.sbuf);
        return cli_fail("set-traffic", "weights must sum to 1, these sum to %g", sum);
    }
    char done[256];
    snprintf(done, sizeof done, "serve: traffic of endpoint %s set", argv[1]);
    return send_request("set-traffic", state_dir, &req, print_message, done);
}

const struct cli_command cmd_set_traffic = {
    .name = "set-traffic",
    .usage = "set-traffic ENDPOINT BACKEND=WEIGHT [BACKEND=WEIGHT]...",
    .summary = "Split an endpoint's traffic over backends by weight (weights sum to 1).",
    .help = "A request with the header X-Serve-Shard-Key (or a handle call with a shard key)\n"
            "always lands on the same backend for the same key and split.\n\n"
            "Options:\n",
    .run = run_set_traffic,
};

static int run_shadow_traffic(int argc, char **argv, const char *state_dir)
{
    double fraction;
    if (argc != 4 || argv[1][0] == '-')
        return cli_fail("shadow-traffic", "usage: serve shadow-traffic ENDPOINT BACKEND FRACTION");
    if (!cli_parse_double(argv[3], 0, 1, &fraction))
        return cli_fail("shadow-traffic", "FRACTION %s: expected a number from 0 to 1", argv[3]);
    struct cli_request req;
    cli_request_begin(&req, "shadow-traffic", 3);
    msgpack_packer *pk = &req.pk;
    mp_pack_key(pk, "endpoint");
    mp_pack_str(pk, argv[1]);
    mp_pack_key(pk, "backend");
    mp_pack_str(pk, argv[2]);
    mp_pack_key(pk, "fraction");
    msgpack_pack_double(pk, fraction);
    char done[256];
    if (fraction == 0)
        snprintf(done, sizeof done, "serve: no more shadow copies of %s to %s", argv[1], argv[2]);
    else
        snprintf(done, sizeof done, "serve: %g of %s's requests copied to %s", fraction, argv[1],
                 argv[2]);
    return send_request("shadow-traffic", state_dir, &req, print_message, done);
}

const struct cli_command cmd_shadow_traffic = {
    .name = "shadow-traffic",
    .usage = "shadow-traffic ENDPOINT BACKEND FRACTION",
    .summary = "Copy a fraction of an endpoint's requests to a backend; 0 stops it.",
    .help = "The copies' answers are discarded and the client never waits for them. One\n"
            "draw per request decides every shadow, so a smaller fraction sees a subset of\n"
            "the requests a larger one sees.\n\n"
            "Options:\n",
    .run = run_shadow_traffic,
};

static void print_changes(const msgpack_object *result, void *arg)
{
    static const char *const keys[] = {"created", "updated", "deleted"};
    bool any = false;
    for (int k = 0; k < 3; k++) {
        const msgpack_object *list = mp_get(result, keys[k]);
        for (uint32_t i = 0; list && list->type == MSGPACK_OBJECT_ARRAY && i < list->via.array.size; i++) {
            const msgpack_object *item = &list->via.array.ptr[i];
            printf("  %s %.*s\n", keys[k], (int)item->via.str.size, item->via.str.ptr);
            any = true;
        }
    }
    printf("serve: deployed %s%s\n", (const char *)arg, any ? "" : ": no changes");
}

static int run_deploy(int argc, char **argv, const char *state_dir)
{
    if (argc != 2 || argv[1][0] == '-') return cli_fail("deploy", "usage: serve deploy FILE");
    struct deployment d;
    char err[4096];
    if (!deploy_file_load(argv[1], &d, err, sizeof err)) return cli_fail("deploy", "%s", err);
    struct cli_request req;
    cli_request_begin(&req, "deploy", 1);
    msgpack_packer *pk = &req.pk;
    mp_pack_key(pk, "deployment");
    deployment_pack(pk, &d);
    deployment_free(&d);
    return send_request("deploy", state_dir, &req, print_changes, argv[1]);
}

const struct cli_command cmd_deploy = {
    .name = "deploy",
    .usage = "deploy FILE",
    .summary = "Make the server's backends and endpoints match a deploy file (YAML).",
    .help = "Creates, updates, re-splits and removes until the server runs exactly what\n"
            "FILE declares, without failing a request; applying the same file again\n"
            "changes nothing. A file that does not parse or names what does not exist is\n"
            "refused whole (FILE:LINE: reason) and the server is left as it was.\n"
            "man 5 serve-deploy (man/serve-deploy.5) describes the format.\n\n"
            "Options:\n",
    .run = run_deploy,
};
