/* fuzz_http.c - libFuzzer target for serve's HTTP request path.
 *
 * A real data plane (http_server_start, one I/O thread) serves /echo from
 * the echo plugin and /stream from the tokens plugin (chunked answers,
 * continuous batching; no simulated cost), loaded with dlopen as in
 * production. Each input is sent
 * raw on a new loopback connection, half-closed, and read back until the
 * server closes. Whatever the bytes, the server must stay up and every
 * answer must be HTTP. The input's first byte picks how it is sent: whole,
 * or split in two writes, to reach the parser's partial-read paths. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "backend.h"
#include "loopback.h"
#include "http_server.h"
#include "routes.h"
#include "spec.h"

static struct http_server *server;
static struct backend *echo, *tokens;
static int port;

static struct backend *lookup(void *ctx, const char *name)
{
    (void)ctx;
    return strcmp(name, "tokens") == 0 ? tokens : echo;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* As `serve start` does (server.c): libevent writes answers with
     * writev, and a client that has gone must cost an EPIPE, not the
     * process. Without this, the run died of SIGPIPE with no report. */
    signal(SIGPIPE, SIG_IGN);
    char err[1024];
    struct backend_spec spec = {.name = "echo", .plugin = SERVE_FUZZ_ECHO_PLUGIN};
    backend_options_default(&spec.options);
    spec.options.request_timeout_ms = 1000;
    /* The data plane is under test: the replica as a thread of this
     * process (a process replica would spawn this fuzzer binary). */
    spec.options.isolation = ISOLATION_THREAD;
    spec.config = config_new();
    echo = backend_create(&spec, err, sizeof err);
    config_free(spec.config);
    if (!echo) {
        fprintf(stderr, "fuzz_http: %s\n", err);
        abort();
    }
    spec.name = "tokens";
    spec.plugin = SERVE_FUZZ_TOKENS_PLUGIN;
    spec.options.max_batch_size = 8;
    spec.config = config_new();
    config_set(spec.config, "prefill_us", "0");
    config_set(spec.config, "step_us", "0");
    config_set(spec.config, "step_per_item_us", "0");
    tokens = backend_create(&spec, err, sizeof err);
    config_free(spec.config);
    if (!tokens) {
        fprintf(stderr, "fuzz_http: %s\n", err);
        abort();
    }
    struct http_options o = {.host = "127.0.0.1", .threads = 1, .max_body = 1 << 20,
                             .max_header = 8192, .idle_timeout_s = 5, .read_timeout_s = 5};
    server = http_server_start(&o, err, sizeof err);
    if (!server) {
        fprintf(stderr, "fuzz_http: %s\n", err);
        abort();
    }
    port = http_server_port(server);
    struct share share = {"echo", 1.0}, stream_share = {"tokens", 1.0};
    struct endpoint_spec ep[] = {{.name = "echo", .route = "/echo",
                                  .methods = METHOD_GET | METHOD_POST | METHOD_PUT,
                                  .traffic = &share, .traffic_count = 1},
                                 {.name = "tokens", .route = "/stream",
                                  .methods = METHOD_GET | METHOD_POST | METHOD_HEAD,
                                  .traffic = &stream_share, .traffic_count = 1}};
    struct routes *routes = routes_build(ep, 2, lookup, NULL);
    http_server_publish_routes(server, routes);
    routes_release(routes);
    http_server_accept(server);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    uint8_t mode = data[0];
    data++;
    size--;
    int fd = fuzz_connect(port, "fuzz_http");
    struct timeval tv = {3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    fuzz_send(fd, data, size, mode & 1, mode);
    shutdown(fd, SHUT_WR);
    /* Only the first bytes are kept: the answer must start as HTTP. */
    char head[8] = "", rest[16384];
    size_t got = 0;
    for (;;) {
        bool in_head = got < 7;
        ssize_t n = in_head ? recv(fd, head + got, 7 - got, 0) : recv(fd, rest, sizeof rest, 0);
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    if (got > 0 && memcmp(head, "HTTP/1.", got < 7 ? got : 7) != 0) {
        fprintf(stderr, "fuzz_http: an answer that is not HTTP: %.7s\n", head);
        abort();
    }
    return 0;
}
