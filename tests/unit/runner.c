/* runner.c - runs the unit tests of test-list.h, each in a child process
 * with a time limit, one line per test, then "N passed, M failed".
 *   unit            every test
 *   unit NAME...    only those (in the list's order)
 *   unit --list     the names
 * Exits 0 when every test run passed, 1 when one failed, 2 on bad usage. */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "replica_host.h"
#include "unit.h"

/* Generous for sanitizer builds on a loaded machine; a test that takes
 * this long is stuck. */
#define UNIT_TIMEOUT_S 60

#define UNIT_TEST(name) TEST_IMPL(name);
#include "test-list.h"
#undef UNIT_TEST

struct unit_test {
    const char *name;
    int (*run)(void);
};

static const struct unit_test unit_tests[] = {
#define UNIT_TEST(name) {#name, unit_test_##name},
#include "test-list.h"
#undef UNIT_TEST
};

#define UNIT_TEST_COUNT (sizeof unit_tests / sizeof unit_tests[0])

void unit_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

static double runner_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Waits for the child, killing it at the time limit. SIGCHLD is blocked
 * (main), so sigtimedwait sleeps until the child ends or time is up.
 * Returns 0 with *status set, or -1 when the child was killed for time. */
static int runner_wait(pid_t pid, int *status)
{
    double deadline = runner_now_s() + UNIT_TIMEOUT_S;
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    for (;;) {
        pid_t done = waitpid(pid, status, WNOHANG);
        if (done == pid) return 0;
        if (done < 0 && errno != EINTR) {
            perror("unit: waitpid");
            exit(2);
        }
        double left = deadline - runner_now_s();
        if (left <= 0) {
            kill(pid, SIGKILL);
            while (waitpid(pid, status, 0) < 0 && errno == EINTR) continue;
            return -1;
        }
        struct timespec ts = {(time_t)left, (long)((left - (double)(time_t)left) * 1e9)};
        sigtimedwait(&chld, NULL, &ts);
    }
}

/* Runs one test in a child; prints its line; true when it passed. */
static bool runner_run(const struct unit_test *t, const sigset_t *parent_mask)
{
    fflush(stdout); /* or the child would print what the parent buffered */
    double start = runner_now_s();
    pid_t pid = fork();
    if (pid < 0) {
        perror("unit: fork");
        exit(2);
    }
    if (pid == 0) {
        sigprocmask(SIG_SETMASK, parent_mask, NULL);
        /* exit, not _exit: sanitizers check for leaks at exit. */
        exit(t->run() == 0 ? 0 : 1);
    }
    int status = 0;
    bool timed_out = runner_wait(pid, &status) != 0;
    double ms = (runner_now_s() - start) * 1e3;
    if (timed_out)
        printf("FAIL %s: timed out after %d s\n", t->name, UNIT_TIMEOUT_S);
    else if (WIFSIGNALED(status))
        printf("FAIL %s: killed by signal %d (%s)\n", t->name, WTERMSIG(status),
               strsignal(WTERMSIG(status)));
    else if (WEXITSTATUS(status) != 0)
        printf("FAIL %s: exit status %d\n", t->name, WEXITSTATUS(status));
    else
        printf("ok   %s (%.0f ms)\n", t->name, ms);
    return !timed_out && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* With no names given, every test is run. */
static bool runner_named(int argc, char **argv, const char *name)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0) return true;
    return argc == 1;
}

int main(int argc, char **argv)
{
    /* Backends made by the tests run process replicas, spawned from the
     * binary that made them: this one. */
    if (argc > 1 && strcmp(argv[1], "__replica-host") == 0) return replica_host_main(argc, argv);
    replica_process_note_argv0(argv[0]);
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < UNIT_TEST_COUNT; i++) puts(unit_tests[i].name);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        size_t k = 0;
        while (k < UNIT_TEST_COUNT && strcmp(unit_tests[k].name, argv[i]) != 0) k++;
        if (k == UNIT_TEST_COUNT) {
            fprintf(stderr, "unit: no test named %s (unit --list names them)\n", argv[i]);
            return 2;
        }
    }
    sigset_t chld, parent_mask;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, &parent_mask);
    size_t passed = 0, failed = 0;
    for (size_t i = 0; i < UNIT_TEST_COUNT; i++) {
        if (!runner_named(argc, argv, unit_tests[i].name)) continue;
        if (runner_run(&unit_tests[i], &parent_mask))
            passed++;
        else
            failed++;
    }
    printf("%zu passed, %zu failed\n", passed, failed);
    return failed ? 1 : 0;
}
