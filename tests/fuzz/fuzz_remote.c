/* fuzz_remote.c - libFuzzer target for what a remote backend reads: the
 * answers of another server (runtime/replica_remote.c).
 *
 * A real data plane (one I/O thread) routes /r to a remote backend whose
 * URL is a fake server of this process. For each input, a client asks
 * GET /r (or HEAD /r, by the input's first byte); the fake server reads
 * the forwarded request and answers with the input's bytes, whole or in
 * two writes, then closes. Whatever the bytes, the node must stay up and
 * answer its client in HTTP: the remote's answer passed on, a stream, or
 * 502 when it is not HTTP. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
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
static struct backend *remote;
static int port;
static int fake_fd;

/* The answer the fake remote gives next: a copy of the current input, for
 * a connection may come after its input is done (a retry, say). */
static pthread_mutex_t answer_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *answer;
static size_t answer_len;
static uint8_t answer_mode;

static struct backend *lookup(void *ctx, const char *name)
{
    (void)ctx;
    (void)name;
    return remote;
}

/* The fake remote: one connection at a time, one answer each. */
static void *fake_remote(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(fake_fd, NULL, NULL);
        if (fd < 0) continue;
        struct timeval tv = {2, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char head[8192];
        size_t got = 0;
        while (got < sizeof head - 1) { /* the forwarded request's head */
            ssize_t n = recv(fd, head + got, sizeof head - 1 - got, 0);
            if (n <= 0) break;
            got += (size_t)n;
            head[got] = '\0';
            if (strstr(head, "\r\n\r\n")) break;
        }
        pthread_mutex_lock(&answer_lock);
        fuzz_send(fd, answer, answer_len, answer_mode & 2, answer_mode);
        pthread_mutex_unlock(&answer_lock);
        /* Closed after one answer, so no connection of the node's pool
         * holds this single-connection server up. A moment to read what
         * is left first, so that the close is a close, not a reset. */
        shutdown(fd, SHUT_WR);
        struct timeval brief = {0, 20000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &brief, sizeof brief);
        char drain[4096];
        while (recv(fd, drain, sizeof drain, 0) > 0) {
        }
        close(fd);
    }
    return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    fake_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fake_fd < 0 || bind(fake_fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(fake_fd, 64) != 0 || getsockname(fake_fd, (struct sockaddr *)&addr, &len) != 0) {
        perror("fuzz_remote: the fake remote");
        abort();
    }
    pthread_t thread;
    pthread_create(&thread, NULL, fake_remote, NULL);
    char url[64], err[1024];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/m", ntohs(addr.sin_port));
    struct backend_spec spec = {.name = "r", .remote = url};
    backend_options_default(&spec.options);
    spec.options.request_timeout_ms = 2000;
    spec.config = config_new();
    remote = backend_create(&spec, err, sizeof err);
    config_free(spec.config);
    if (!remote) {
        fprintf(stderr, "fuzz_remote: %s\n", err);
        abort();
    }
    struct http_options o = {.host = "127.0.0.1", .threads = 1, .max_body = 1 << 20,
                             .max_header = 8192, .idle_timeout_s = 5, .read_timeout_s = 5};
    server = http_server_start(&o, err, sizeof err);
    if (!server) {
        fprintf(stderr, "fuzz_remote: %s\n", err);
        abort();
    }
    port = http_server_port(server);
    struct share share = {"r", 1.0};
    struct endpoint_spec ep = {.name = "r", .route = "/r",
                               .methods = METHOD_GET | METHOD_HEAD,
                               .traffic = &share, .traffic_count = 1};
    struct routes *routes = routes_build(&ep, 1, lookup, NULL);
    http_server_publish_routes(server, routes);
    routes_release(routes);
    http_server_accept(server);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    pthread_mutex_lock(&answer_lock);
    answer_mode = data[0];
    uint8_t *copy = realloc(answer, size);
    if (!copy) abort();
    answer = copy;
    memcpy(answer, data + 1, size - 1);
    answer_len = size - 1;
    pthread_mutex_unlock(&answer_lock);
    int fd = fuzz_connect(port, "fuzz_remote");
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const char *request = data[0] & 1 ? "HEAD /r HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                                      : "GET /r HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    fuzz_send_all(fd, (const uint8_t *)request, strlen(request));
    shutdown(fd, SHUT_WR);
    char head[8] = "", rest[16384];
    size_t got = 0;
    bool timed_out = false;
    for (;;) {
        bool in_head = got < 7;
        ssize_t n = in_head ? recv(fd, head + got, 7 - got, 0) : recv(fd, rest, sizeof rest, 0);
        if (n < 0 && errno == EINTR) continue;
        timed_out = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    /* A stream the remote broke is cut with a reset, which may take the
     * head with it: nothing at all is fine, an answer that is not HTTP or
     * none in 5 s is not. */
    if (got == 0 && timed_out) {
        fprintf(stderr, "fuzz_remote: no answer from the node in 5 s\n");
        abort();
    }
    if (got > 0 && memcmp(head, "HTTP/1.", got < 7 ? got : 7) != 0) {
        fprintf(stderr, "fuzz_remote: the node's answer is not HTTP: %.*s\n", (int)got, head);
        abort();
    }
    return 0;
}
