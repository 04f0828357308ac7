/* cmd_endpoint.c - serve create-endpoint, delete-endpoint, list-endpoints. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/mp.h"
#include "../runtime/spec.h"
#include "cli.h"

static int run_create_endpoint(int argc, char **argv, const char *state_dir)
{
    static const struct option long_options[] = {{"backend", required_argument, NULL, 'b'},
                                                 {"route", required_argument, NULL, 'r'},
                                                 {"methods", required_argument, NULL, 'm'},
                                                 {0, 0, 0, 0}};
    struct endpoint_spec spec = {.methods = METHODS_DEFAULT};
    char err[1024];
    const char *backend = NULL, *route = NULL;
    int c;
    optind = 1;
    while ((c = cli_getopt("create-endpoint", argc, argv, long_options)) != -1) {
        switch (c) {
        case 'b': backend = optarg; break;
        case 'r': route = optarg; break;
        case 'm':
            if (!methods_parse(optarg, &spec.methods, err, sizeof err))
                return cli_fail("create-endpoint", "%s", err);
            break;
        default: return cli_fail("create-endpoint", "unknown option; see `serve create-endpoint --help`");
        }
    }
    if (argc - optind != 1 || !backend)
        return cli_fail("create-endpoint",
                        "usage: serve create-endpoint NAME --backend BACKEND [--route /PATH] [--methods GET,POST]");
    if (!spec_name_valid("endpoint", argv[optind], err, sizeof err) ||
        !spec_name_valid("backend", backend, err, sizeof err) ||
        (route && !route_valid(route, err, sizeof err)))
        return cli_fail("create-endpoint", "%s", err);
    spec.name = strdup(argv[optind]);
    spec.route = route ? strdup(route) : NULL;
    if (!spec.name || (route && !spec.route) || !endpoint_set_backend(&spec, backend)) {
        endpoint_spec_free(&spec);
        return cli_fail("create-endpoint", "out of memory");
    }

    struct cli_request req;
    cli_request_begin(&req, "create-endpoint", 1);
    msgpack_packer *pk = &req.pk;
    mp_pack_key(pk, "endpoint");
    endpoint_spec_pack(pk, &spec);
    msgpack_unpacked reply;
    const msgpack_object *result;
    bool ok = cli_send("create-endpoint", state_dir, &req, &reply, &result);
    if (!ok) {
        endpoint_spec_free(&spec);
        return 1;
    }
    if (route)
        printf("serve: endpoint %s created at route %s -> backend %s\n", spec.name, route, backend);
    else
        printf("serve: endpoint %s created (handle only, no route) -> backend %s\n", spec.name, backend);
    cli_reply_free(&reply);
    endpoint_spec_free(&spec);
    return 0;
}

const struct cli_command cmd_create_endpoint = {
    .name = "create-endpoint",
    .usage = "create-endpoint NAME --backend BACKEND [--route /PATH] [--methods GET,POST]",
    .summary = "Expose a backend as endpoint NAME, over HTTP when it has a route.",
    .help = "Routes match by longest prefix on path segments: /a serves /a and /a/b, not /ab.\n\n"
            "Options:\n"
            "  --backend B         the backend that serves this endpoint (required)\n"
            "  --route /PATH       the HTTP route; without it the endpoint is reachable\n"
            "                      by handle only\n"
            "  --methods LIST      allowed HTTP methods, comma-separated (default GET,POST)\n",
    .run = run_create_endpoint,
};

static int run_delete_endpoint(int argc, char **argv, const char *state_dir)
{
    return cli_simple_named("delete-endpoint", argc, argv, state_dir,
                            "serve: endpoint %s deleted\n");
}

const struct cli_command cmd_delete_endpoint = {
    .name = "delete-endpoint",
    .usage = "delete-endpoint NAME",
    .summary = "Remove an endpoint; its backends stay.",
    .help = "Options:\n",
    .run = run_delete_endpoint,
};

static int run_list_endpoints(int argc, char **argv, const char *state_dir)
{
    return cli_list("list-endpoints", argc, argv, state_dir, cli_print_endpoints);
}

const struct cli_command cmd_list_endpoints = {
    .name = "list-endpoints",
    .usage = "list-endpoints [--json]",
    .summary = "List endpoints with their route, methods and backend.",
    .help = "Options:\n"
            "  --json              print a JSON array\n",
    .run = run_list_endpoints,
};
