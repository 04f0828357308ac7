/* cli.h - what the subcommand files share: the command table entry, the
 * control-socket client and output helpers. */
#ifndef SERVE_CLI_H
#define SERVE_CLI_H

#include <getopt.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

struct cli_command {
    const char *name;
    const char *usage;   /* the synopsis after "serve " */
    const char *summary; /* one line for `serve --help` */
    const char *help;    /* the options, for `serve NAME --help` */
    int (*run)(int argc, char **argv, const char *state_dir);
};

/* One entry per subcommand, defined in the cmd_*.c files. */
extern const struct cli_command cmd_start, cmd_stop, cmd_status;
extern const struct cli_command cmd_create_backend, cmd_delete_backend, cmd_list_backends;
extern const struct cli_command cmd_create_endpoint, cmd_delete_endpoint, cmd_list_endpoints;
extern const struct cli_command cmd_call;
extern const struct cli_command cmd_update_backend, cmd_set_traffic, cmd_shadow_traffic, cmd_deploy;
extern const struct cli_command cmd_bench, cmd_try;

/* The backend options shared by create-backend and update-backend. */
#define BACKEND_OPTIONS_HELP                                                              \
    "  --num-replicas N              independent instances, each with its own state (default 1)\n" \
    "  --max-batch-size N            largest batch handed to the plugin (default 1)\n"      \
    "  --batch-wait-timeout-ms T     wait at most T ms after a batch's first request for\n"  \
    "                                the batch to fill; fractions allowed (default 0)\n"    \
    "  --max-concurrent-queries N    requests in flight per replica, queued in its batch\n" \
    "                                or executing (default 2 x max batch size, at least 8)\n" \
    "  --max-queued-requests N       requests waiting for a replica; beyond it requests\n"  \
    "                                get 503 at once (default 1024)\n"                      \
    "  --request-timeout-ms T        answer 504 when a request is not answered in T ms\n"   \
    "                                (default: no timeout)\n"                               \
    "  --isolation process|thread    process: each replica in a child process; a crash,\n"  \
    "                                hang or runaway memory costs only its requests and it\n" \
    "                                restarts; thread: threads of the server (trusted\n"     \
    "                                plugins) (default process)\n"                          \
    "  --hang-timeout-ms T           a replica inside handle_batch for over T ms is hung:\n" \
    "                                killed, restarted, its requests get 504 (process);\n"  \
    "                                logged (thread) (default: none)\n"                     \
    "  --max-memory SIZE             restart a process replica whose resident memory\n"     \
    "                                passes SIZE (512M, 4G) (default: none)\n"              \
    "  --min-replicas N, --max-replicas M\n"                                               \
    "                                autoscaling: the replica count follows the ongoing\n"  \
    "                                requests (queued, or held by a replica) within [N, M],\n" \
    "                                1 <= N <= M; --num-replicas is where it starts;\n"     \
    "                                0 0: off (default off)\n"                              \
    "  --target-ongoing-requests X   ongoing requests per replica to aim at (default 2)\n"   \
    "  --upscale-delay S             seconds (a number) of sustained load before adding\n"   \
    "                                replicas (default 5)\n"                                 \
    "  --downscale-delay S           seconds of sustained low load before draining\n"        \
    "                                replicas (default 30)\n"                                \
    "  --latency-slo-ms P            adaptive batching: choose the batch size (up to\n"      \
    "                                --max-batch-size, above 1) and wait that give the most\n" \
    "                                throughput with p99 queue + execution <= P ms;\n"       \
    "                                replaces --batch-wait-timeout-ms (default off; 0: off)\n" \
    "  --config KEY=VALUE            user config for the plugin (repeatable)\n"              \
    "  --remote URL[,URL...]         no plugin: forward to http://HOST:PORT/PATH (see above)\n"
struct backend_spec;
extern const struct option backend_long_options[];
/* Applies one getopt result of backend_long_options to spec; 0 or 1 (error
 * printed). */
int parse_backend_option(int c, struct backend_spec *spec);

/* --data STR or --data @FILE ("-" for standard input) into a malloc'd
 * buffer; NULL with errno set when the file cannot be read. */
char *cli_read_data(const char *arg, size_t *len);

/* Prints "serve: CMD: MESSAGE" to stderr; returns 1 (for `return fail(...)`). */
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* getopt_long with one-line errors, whole option names only; exits 2 on a
 * bad option. */
int cli_getopt(const char *cmd, int argc, char **argv, const struct option *options);

/* Parses a whole decimal number within [min, max]. */
bool cli_parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out);
bool cli_parse_double(const char *s, double min, double max, double *out);

/* A control request being packed: begin it with the command name and the
 * number of further map entries, pack those entries with r.pk, then send. */
struct cli_request {
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
};
void cli_request_begin(struct cli_request *r, const char *cmd, size_t more_fields);
/* cli_call on a request begun with cli_request_begin; frees the request. */
bool cli_send(const char *cmd, const char *state_dir, struct cli_request *r,
              msgpack_unpacked *reply, const msgpack_object **result);

/* How long cli_call waits for the server, from connect to the whole answer
 * (--control-timeout); 0: without limit. */
extern double cli_control_timeout_s;

/* When set, replies may be preceded by {"chunk": BIN} frames (a streamed
 * `serve call`): each goes here as it arrives. */
extern void (*cli_on_chunk)(const void *data, size_t len);

/* Sends one control request (the packed map in `request`) to the server of
 * state_dir and waits for its answer, at most cli_control_timeout_s. Refuses
 * a state dir that is not private (state_dir.h). On success *reply holds the
 * unpacked answer and *result points at its "result". On failure prints the
 * error as "serve: CMD: ..." and returns false. */
bool cli_call(const char *cmd, const char *state_dir, const msgpack_sbuffer *request,
              msgpack_unpacked *reply, const msgpack_object **result);

/* Frees what a successful cli_call returned. */
void cli_reply_free(msgpack_unpacked *reply);

/* Writes `o` as JSON to stdout. */
void cli_print_json(const msgpack_object *o);

/* String field `key` of map `o` as a printable C string in buf ("-" if
 * absent or nil). */
const char *cli_str(const msgpack_object *o, const char *key, char *buf, size_t len);
uint64_t cli_uint(const msgpack_object *o, const char *key);
double cli_double(const msgpack_object *o, const char *key);

/* Tables for list output: backends and endpoints as the server sends them. */
void cli_print_backends(const msgpack_object *backends);
void cli_print_endpoints(const msgpack_object *endpoints);
/* The same with the last 10 s from status's "live" map (NULL: without). */
void cli_print_backends_live(const msgpack_object *backends, const msgpack_object *live);
void cli_print_endpoints_live(const msgpack_object *endpoints, const msgpack_object *live);

/* Sends {"cmd": cmd, "name": argv[1]} and prints done_fmt with the name. */
int cli_simple_named(const char *cmd, int argc, char **argv, const char *state_dir,
                     const char *done_fmt);

/* Sends {"cmd": cmd} and prints the result with `print`, or as JSON with
 * --json. */
int cli_list(const char *cmd, int argc, char **argv, const char *state_dir,
             void (*print)(const msgpack_object *));

/* Prints a command's --help. */
void cli_print_help(const struct cli_command *c);

#endif
