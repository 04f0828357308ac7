/* cmd_try.c - serve try: one plugin, one batch, no server.
 *
 * Runs the plugin as a backend of this process (a replica of its own, a
 * child process unless --isolation thread), sends the given bodies to it as
 * one batch, prints every answer and says what the plugin did wrong, if
 * anything. What is wrong is what the runtime reports in its log (a request
 * left unanswered, answered twice, a batch that failed, a replica that
 * died): this command reads its own log, its replica's included, through a
 * pipe on stderr, passes it on and keeps the problems. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../runtime/backend.h"
#include "../runtime/plugin_path.h"
#include "../runtime/request.h"
#include "../runtime/spec.h"
#include "cli.h"

#define MAX_BODIES 1024
#define MAX_PROBLEMS 64

/* ---- the log: passed on, its problems kept -------------------------- */

static struct {
    int fd_read, fd_out;
    pthread_t thread;
    pthread_mutex_t lock;
    char *problems[MAX_PROBLEMS];
    size_t count;
} watch = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* What in a log line is a problem of the plugin's, said for a user. */
static void classify(const char *line)
{
    static const struct {
        const char *marker, *says;
    } kinds[] = {
        {"plugin bug: returned without answering", "left a request unanswered"},
        {"plugin bug: answered the same request twice", "answered a request twice"},
        {"plugin bug: ", "broke the SDK's rules"},
        {"handle_batch returned ", "failed a batch:"},
        {" died (", "crashed: its replica"},
        {" hung (", "hung: its replica"},
    };
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
        const char *at = strstr(line, kinds[i].marker);
        if (!at) continue;
        const char *request = strstr(line, "request=");
        char text[600];
        if (request && request < at)
            snprintf(text, sizeof text, "the plugin %s (request %.*s)", kinds[i].says,
                     (int)strcspn(request + 8, ": "), request + 8);
        else
            /* The line up to its first ';' ("...; restarting in 100 ms"). */
            snprintf(text, sizeof text, "the plugin %s %.*s", kinds[i].says,
                     (int)strcspn(at + (at[0] == ' '), ";\n"), at + (at[0] == ' '));
        pthread_mutex_lock(&watch.lock);
        if (watch.count < MAX_PROBLEMS) watch.problems[watch.count++] = strdup(text);
        pthread_mutex_unlock(&watch.lock);
        return;
    }
}

static void *watch_main(void *arg)
{
    (void)arg;
    char buf[8192];
    size_t have = 0;
    for (;;) {
        ssize_t n = read(watch.fd_read, buf + have, sizeof buf - 1 - have);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        ssize_t ignored = write(watch.fd_out, buf + have, (size_t)n);
        (void)ignored;
        have += (size_t)n;
        buf[have] = '\0';
        char *start = buf, *nl;
        while ((nl = strchr(start, '\n'))) {
            *nl = '\0';
            classify(start);
            start = nl + 1;
        }
        have = (size_t)(buf + have - start);
        memmove(buf, start, have);
        if (have == sizeof buf - 1) have = 0; /* a line past the buffer: not ours to judge */
    }
    return NULL;
}

static bool watch_start(void)
{
    int p[2];
    if (pipe(p) != 0) return false;
    watch.fd_out = dup(STDERR_FILENO);
    watch.fd_read = p[0];
    if (watch.fd_out < 0 || dup2(p[1], STDERR_FILENO) < 0) return false;
    close(p[1]);
    return pthread_create(&watch.thread, NULL, watch_main, NULL) == 0;
}

/* Once no replica is left: stderr is the terminal's again, the pipe ends. */
static void watch_stop(void)
{
    dup2(watch.fd_out, STDERR_FILENO);
    pthread_join(watch.thread, NULL);
    close(watch.fd_read);
    close(watch.fd_out);
}

/* ---- the requests ---------------------------------------------------- */

static struct {
    pthread_mutex_t lock;
    pthread_cond_t done;
    size_t answered;
} answers = {.lock = PTHREAD_MUTEX_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};

/* Any thread: the answer is stored in the request; the execution
 * reference is ours to drop. */
static void delivered(serve_request *req)
{
    pthread_mutex_lock(&answers.lock);
    answers.answered++;
    pthread_cond_signal(&answers.done);
    pthread_mutex_unlock(&answers.lock);
    request_release(req);
}

static serve_request *make_request(size_t index, void *body, size_t len,
                                   const char *content_type)
{
    serve_request *req = request_new(0, NULL);
    if (!req) return NULL;
    req->method = "POST";
    req->path = "/";
    snprintf(req->id_buf, sizeof req->id_buf, "%zu", index + 1);
    req->id = req->id_buf;
    req->owned_body = body;
    req->free_owned_body = free;
    req->body = body;
    req->body_len = len;
    req->deliver = delivered;
    req->received_ns = 0;
    if (content_type) {
        const char **headers = malloc(2 * sizeof *headers);
        char *name = strdup("Content-Type"), *value = strdup(content_type);
        if (headers && name && value) {
            headers[0] = name;
            headers[1] = value;
            req->headers = headers;
            req->header_count = 1;
            req->owns_headers = true;
        } else {
            free(headers);
            free(name);
            free(value);
        }
    }
    return req;
}

static void print_answer(const serve_request *req)
{
    printf("--- request %s: %d\n", req->id, req->status);
    if (req->content_type) printf("Content-Type: %s\n", req->content_type);
    for (size_t i = 0; i < req->response_header_count; i++)
        printf("%s: %s\n", req->response_headers[i].name, req->response_headers[i].value);
    printf("\n");
    if (req->response_len) fwrite(req->response_body, 1, req->response_len, stdout);
    if (req->response_len && ((const char *)req->response_body)[req->response_len - 1] != '\n')
        printf("\n");
}

/* ---- the command ----------------------------------------------------- */

static int run_try(int argc, char **argv, const char *state_dir)
{
    (void)state_dir; /* no server: nothing of the state dir is used */
    static const struct option options[] = {
        {"config", required_argument, NULL, 'C'},
        {"max-batch-size", required_argument, NULL, 'b'},
        {"isolation", required_argument, NULL, 'I'},
        {"data", required_argument, NULL, 'd'},
        {"content-type", required_argument, NULL, 'T'},
        {"timeout", required_argument, NULL, 't'},
        {0, 0, 0, 0}};
    struct backend_spec spec = {0};
    backend_options_default(&spec.options);
    spec.config = config_new();
    const char *data[MAX_BODIES], *content_type = NULL;
    size_t count = 0;
    double timeout_s = 30;
    uint32_t max_batch = 0;
    int c, rc = 1;
    optind = 1;
    while ((c = cli_getopt("try", argc, argv, options)) != -1) {
        switch (c) {
        case 'C': case 'I':
            if (parse_backend_option(c, &spec) != 0) goto out;
            break;
        case 'b':
            if (!cli_parse_u32(optarg, 1, 65536, &max_batch)) {
                cli_fail("try", "--max-batch-size %s: not a valid value", optarg);
                goto out;
            }
            break;
        case 'd':
            if (count == MAX_BODIES) {
                cli_fail("try", "at most %d --data", MAX_BODIES);
                goto out;
            }
            data[count++] = optarg;
            break;
        case 'T': content_type = optarg; break;
        case 't':
            if (!cli_parse_double(optarg, 0.001, 86400, &timeout_s)) {
                cli_fail("try", "--timeout %s: not a valid value", optarg);
                goto out;
            }
            break;
        default: goto out;
        }
    }
    if (argc - optind != 1 || count == 0) {
        cli_fail("try", "usage: serve try PLUGIN [--config KEY=VALUE]... (--data STR|@FILE)...");
        goto out;
    }
    char err[4096], path[PATH_MAX];
    if (!plugin_path_resolve(argv[optind], path, sizeof path, err, sizeof err)) {
        cli_fail("try", "%s", err);
        goto out;
    }
    void *bodies[MAX_BODIES];
    size_t lens[MAX_BODIES];
    for (size_t i = 0; i < count; i++)
        if (!(bodies[i] = cli_read_data(data[i], &lens[i]))) {
            cli_fail("try", "--data %s: %s", data[i], strerror(errno));
            while (i--) free(bodies[i]);
            goto out;
        }
    spec.name = strdup("try");
    spec.plugin = strdup(path);
    /* One batch of all the bodies (or batches of --max-batch-size), formed
     * before the replica takes any: they all wait for the last. */
    spec.options.max_batch_size = max_batch ? max_batch : (uint32_t)count;
    spec.options.max_concurrent_queries = (uint32_t)count;
    spec.options.max_queued_requests = (uint32_t)count;
    spec.options.batch_wait_timeout_ms = 1000;

    if (!watch_start()) {
        cli_fail("try", "cannot watch the log: %s", strerror(errno));
        for (size_t i = 0; i < count; i++) free(bodies[i]);
        goto out;
    }
    struct backend *b = backend_create(&spec, err, sizeof err);
    if (!b) {
        watch_stop();
        cli_fail("try", "%s", err);
        for (size_t i = 0; i < count; i++) free(bodies[i]);
        goto out;
    }
    serve_request *reqs[MAX_BODIES];
    size_t sent = 0;
    for (size_t i = 0; i < count; i++) {
        reqs[i] = make_request(i, bodies[i], lens[i], content_type);
        if (!reqs[i]) {
            free(bodies[i]);
            continue;
        }
        if (backend_enqueue(b, reqs[i]) == ENQUEUE_OK) sent++;
        else request_answer_runtime(reqs[i], 503, "the backend refused the request");
    }
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (time_t)timeout_s;
    deadline.tv_nsec += (long)((timeout_s - (double)(time_t)timeout_s) * 1e9);
    if (deadline.tv_nsec >= 1000000000L) deadline.tv_sec++, deadline.tv_nsec -= 1000000000L;
    bool timed_out = false;
    pthread_mutex_lock(&answers.lock);
    while (answers.answered < sent && !timed_out)
        timed_out = pthread_cond_timedwait(&answers.done, &answers.lock, &deadline) == ETIMEDOUT;
    pthread_mutex_unlock(&answers.lock);
    backend_stop(b); /* answers what is still out 503, ends the replica */
    backend_release(b);
    watch_stop();

    for (size_t i = 0; i < count; i++) {
        if (!reqs[i]) continue;
        if (atomic_load(&reqs[i]->state) == REQ_ANSWERED) print_answer(reqs[i]);
        else printf("--- request %zu: no answer\n", i + 1);
        request_release(reqs[i]);
    }
    fflush(stdout);
    if (timed_out)
        fprintf(stderr, "serve: try: the plugin did not answer every request within %g s\n",
                timeout_s);
    for (size_t i = 0; i < watch.count; i++) {
        fprintf(stderr, "serve: try: %s\n", watch.problems[i]);
        free(watch.problems[i]);
    }
    rc = timed_out || watch.count ? 1 : 0;
out:
    backend_spec_free(&spec);
    return rc;
}

const struct cli_command cmd_try = {
    .name = "try",
    .usage = "try PLUGIN [--config KEY=VALUE]... [--max-batch-size N] (--data STR|@FILE)...",
    .summary = "Run a plugin on a few bodies without a server, and check it.",
    .help = "Loads PLUGIN (a path or a bare name, as create-backend) in a replica of its\n"
            "own, runs its init, sends the bodies as one batch, prints each answer\n"
            "(status, headers, body) and exits 1 naming the problem when the plugin\n"
            "leaves a request unanswered, answers one twice, fails the batch, crashes or\n"
            "does not answer in time; 0 when every request got its one answer. Nothing\n"
            "is started in the background and no state dir is used.\n\n"
            "Options:\n"
            "  --data STR|@FILE          a request body, or a file's bytes (@- for standard\n"
            "                            input); repeatable, the requests are numbered from\n"
            "                            1 in this order\n"
            "  --config KEY=VALUE        user config for the plugin (repeatable)\n"
            "  --max-batch-size N        batches of at most N (default: all the bodies)\n"
            "  --isolation process|thread  where the replica runs (default process; a\n"
            "                            crash in thread mode ends this command)\n"
            "  --content-type TYPE       the requests' Content-Type (default: none)\n"
            "  --timeout S               wait at most S seconds for the answers (default 30)\n",
    .run = run_try,
};
