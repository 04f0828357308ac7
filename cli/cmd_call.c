/* cmd_call.c - serve call: one request through the handle path. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../runtime/mp.h"
#include "cli.h"

/* A piece of a streamed answer: out at once. */
static void print_chunk(const void *data, size_t len)
{
    fwrite(data, 1, len, stdout);
    fflush(stdout);
}

static int run_call(int argc, char **argv, const char *state_dir)
{
    static const struct option long_options[] = {{"data", required_argument, NULL, 'd'},
                                                 {"query", required_argument, NULL, 'q'},
                                                 {0, 0, 0, 0}};
    const char *data_arg = NULL;
    const char *queries[64];
    int query_count = 0, c;
    optind = 1;
    while ((c = cli_getopt("call", argc, argv, long_options)) != -1) {
        if (c == 'd') {
            data_arg = optarg;
        } else if (c == 'q') {
            if (!strchr(optarg, '=') || query_count == 64)
                return cli_fail("call", "--query %s: expected KEY=VALUE (at most 64)", optarg);
            queries[query_count++] = optarg;
        } else {
            return cli_fail("call", "usage: serve call ENDPOINT [--data STR|@FILE] [--query K=V]...");
        }
    }
    if (argc - optind != 1)
        return cli_fail("call", "usage: serve call ENDPOINT [--data STR|@FILE] [--query K=V]...");
    size_t len = 0;
    char *data = data_arg ? cli_read_data(data_arg, &len) : strdup("");
    if (!data) return cli_fail("call", "--data %s: %s", data_arg, strerror(errno));

    struct cli_request req;
    cli_request_begin(&req, "call", 4);
    mp_pack_key(&req.pk, "stream"); /* pieces as they come, when the target streams */
    msgpack_pack_true(&req.pk);
    cli_on_chunk = print_chunk;
    msgpack_packer *pk = &req.pk;
    mp_pack_key(pk, "endpoint");
    mp_pack_str(pk, argv[optind]);
    mp_pack_key(pk, "body");
    msgpack_pack_bin(pk, len);
    msgpack_pack_bin_body(pk, data, len);
    mp_pack_key(pk, "query");
    msgpack_pack_map(pk, (size_t)query_count);
    for (int i = 0; i < query_count; i++) {
        const char *eq = strchr(queries[i], '=');
        msgpack_pack_str(pk, (size_t)(eq - queries[i]));
        msgpack_pack_str_body(pk, queries[i], (size_t)(eq - queries[i]));
        mp_pack_str(pk, eq + 1);
    }
    free(data);
    msgpack_unpacked reply;
    const msgpack_object *result;
    bool ok = cli_send("call", state_dir, &req, &reply, &result);
    if (!ok) return 1;
    uint64_t status = cli_uint(result, "status");
    const msgpack_object *body = mp_get(result, "body");
    const char *bytes = body && body->type == MSGPACK_OBJECT_BIN ? body->via.bin.ptr : "";
    size_t n = body && body->type == MSGPACK_OBJECT_BIN ? body->via.bin.size : 0;
    int rc = 0;
    if (status >= 200 && status < 300) {
        fwrite(bytes, 1, n, stdout);
        if (n && bytes[n - 1] != '\n' && isatty(1)) putchar('\n');
    } else {
        fprintf(stderr, "serve: call: %s answered %llu: %.*s\n", argv[optind],
                (unsigned long long)status, (int)n, bytes);
        rc = status >= 500 ? 5 : 4;
    }
    cli_reply_free(&reply);
    return rc;
}

const struct cli_command cmd_call = {
    .name = "call",
    .usage = "call ENDPOINT [--data STR|@FILE] [--query KEY=VALUE]...",
    .summary = "Send one request to an endpoint through the handle path (no HTTP).",
    .help = "Works for endpoints without a route. Prints the answer's body on success;\n"
            "a streamed answer piece by piece, as the target writes it.\n"
            "When the answer is not 2xx, prints \"serve: call: ENDPOINT answered STATUS: BODY\"\n"
            "on stderr and exits 4 (4xx) or 5 (5xx).\n\n"
            "Options:\n"
            "  --data STR|@FILE    the request body; @FILE reads a file, @- standard input\n"
            "  --query KEY=VALUE   a query parameter for the plugin (repeatable)\n",
    .run = run_call,
};
