/* replica_spawn.c - one incarnation of a process replica: a child process
 * spawned from the serve binary, its shared-memory channel, and the
 * handshake that loads the plugin and runs its init there. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "log.h"
#include "replica_host.h"
#include "replica_process_internal.h"
#include "stream.h"
#include "signal_name.h"

extern char **environ;

static bool inc_gone(void *arg) { return atomic_load(&((struct incarnation *)arg)->gone); }

void incarnation_release(struct incarnation *inc)
{
    if (atomic_fetch_sub(&inc->refs, 1) != 1) return;
    shm_ring_end_destroy(&inc->work);
    shm_ring_end_destroy(&inc->results);
    shm_ring_end_destroy(&inc->answers);
    replica_channel_unmap(&inc->ch);
    if (inc->wake_fd >= 0) close(inc->wake_fd);
    if (inc->death_fd >= 0) close(inc->death_fd);
    if (inc->epoll_fd >= 0) close(inc->epoll_fd);
    pthread_mutex_destroy(&inc->slots_lock);
    free(inc->slots);
    free(inc->free_slots);
    wire_free(&inc->work_head);
    wire_free(&inc->results_head);
    free(inc);
}

bool incarnation_sleep(struct incarnation *inc, int timeout_ms)
{
    struct epoll_event events[2];
    int n = epoll_wait(inc->epoll_fd, events, 2, timeout_ms);
    for (int i = 0; i < n; i++)
        if (events[i].data.fd == inc->death_fd) return true;
    return false;
}

bool incarnation_wait(struct shm_ring_end *end, void *arg)
{
    struct incarnation *inc = arg;
    if (!shm_ring_reader_sleep(end)) return true;
    bool ended = incarnation_sleep(inc, -1);
    shm_ring_reader_awake(end);
    if (ended && shm_ring_readable(end) == 0) {
        atomic_store(&inc->gone, true);
        return false;
    }
    return true;
}

void put_config(struct wire_out *w, const serve_config *c)
{
    for (size_t i = 0; i < c->count; i++) {
        wire_str(w, c->keys[i]);
        wire_str(w, c->values[i]);
        wire_str(w, c->bases[i] ? c->bases[i] : "");
    }
}

void incarnation_reap(struct incarnation *inc, int *status)
{
    while (waitpid(inc->pid, status, 0) < 0 && errno == EINTR) {
    }
}

/* "died (SIGSEGV)", "died (exit status 3)" */
void describe_exit(int status, char *out, size_t len)
{
    if (WIFSIGNALED(status)) {
        const char *name = signal_name(WTERMSIG(status));
        if (strcmp(name, "signal") != 0)
            snprintf(out, len, "died (%s)", name);
        else
            snprintf(out, len, "died (signal %d)", WTERMSIG(status));
    } else {
        snprintf(out, len, "died (exit status %d)", WEXITSTATUS(status));
    }
}

/* Moves *fd above `floor` when it is not already. */
static bool fd_above(int *fd, int floor)
{
    if (*fd > floor) return true;
    int moved = fcntl(*fd, F_DUPFD_CLOEXEC, floor + 1);
    if (moved < 0) return false;
    close(*fd);
    *fd = moved;
    return true;
}

/* What the child runs: this very binary, /proc/self/exe (the file this
 * process started from, even if a newer build has replaced it on disk
 * since), unless this process runs under an interpreter such as valgrind,
 * whose /proc/self/exe is the interpreter: then the path it was given. */
static char executable[PATH_MAX] = "/proc/self/exe";
static bool hosts_replicas;

bool replica_process_supported(void) { return hosts_replicas; }

void replica_process_note_argv0(const char *argv0)
{
    hosts_replicas = true;
    struct stat self, given;
    char resolved[PATH_MAX];
    if (!argv0 || !strchr(argv0, '/') || !realpath(argv0, resolved)) return;
    if (stat("/proc/self/exe", &self) == 0 && stat(resolved, &given) == 0 &&
        (self.st_dev != given.st_dev || self.st_ino != given.st_ino))
        snprintf(executable, sizeof executable, "%s", resolved);
}

struct incarnation *incarnation_spawn(struct process_replica *p, char *err, size_t errlen)
{
    const struct backend_spec *spec = p->base->spec;
    struct incarnation *inc = calloc(1, sizeof *inc);
    if (!inc) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    atomic_init(&inc->refs, 1);
    inc->wake_fd = inc->death_fd = inc->epoll_fd = -1;
    int life[2] = {-1, -1};
    inc->ch.memfd = -1;
    pthread_mutex_init(&inc->slots_lock, NULL);
    if (!replica_channel_create(&inc->ch) ||
        (inc->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        snprintf(err, errlen, "cannot set up the replica's channel: %s", strerror(errno));
        goto fail_early;
    }
    /* The child's fds 3 and 4 are set by dup2 in turn: neither source may
     * be the other's target. */
    if (pipe2(life, O_CLOEXEC) != 0 || !fd_above(&inc->ch.memfd, 5) ||
        !fd_above(&inc->wake_fd, 5) || !fd_above(&life[1], 5)) {
        snprintf(err, errlen, "cannot set up the replica's channel: %s", strerror(errno));
        goto fail_early;
    }
    shm_ring_end_init(&inc->work, inc->ch.work, -1, inc_gone, inc);
    shm_ring_end_init(&inc->results, inc->ch.results, -1, inc_gone, inc);
    shm_ring_end_init(&inc->answers, inc->ch.answers, -1, NULL, NULL);

    /* The child gets the channel as fds 3 and 4, the pipe's write end as
     * 5, and nothing else of ours;
     * its own process group keeps a terminal's Ctrl-C for the server. */
    char parent[32];
    snprintf(parent, sizeof parent, "%ld", (long)getpid());
    /* The last two are for ps(1) and top(1) only: which replica this is. */
    char backend_arg[160], replica_arg[32];
    snprintf(backend_arg, sizeof backend_arg, "backend=%s", spec->name);
    snprintf(replica_arg, sizeof replica_arg, "replica=%d", p->base->index);
    char *argv[] = {"serve", "__replica-host", "3", "4", parent, backend_arg, replica_arg, NULL};
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, inc->ch.memfd, 3);
    posix_spawn_file_actions_adddup2(&actions, inc->wake_fd, 4);
    posix_spawn_file_actions_adddup2(&actions, life[1], 5);
    posix_spawn_file_actions_addclosefrom_np(&actions, 6);
    posix_spawnattr_init(&attr);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGINT);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                        POSIX_SPAWN_SETPGROUP);
    int rc = posix_spawn(&inc->pid, executable, &actions, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the replica process: %s", strerror(rc));
        goto fail_early;
    }
    close(life[1]);
    life[1] = -1;
    inc->death_fd = (int)syscall(SYS_pidfd_open, inc->pid, 0);
    if (inc->death_fd >= 0) {
        close(life[0]);
    } else {
        inc->death_fd = life[0];
    }
    life[0] = -1;
    /* The eventfd edge-triggered: a wake-up costs the child's write and the
     * monitor's epoll_wait, never a read to reset it. */
    struct epoll_event wake = {.events = EPOLLIN | EPOLLET, .data.fd = inc->wake_fd};
    struct epoll_event death = {.events = EPOLLIN, .data.fd = inc->death_fd};
    if ((inc->epoll_fd = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
        epoll_ctl(inc->epoll_fd, EPOLL_CTL_ADD, inc->wake_fd, &wake) != 0 ||
        epoll_ctl(inc->epoll_fd, EPOLL_CTL_ADD, inc->death_fd, &death) != 0) {
        snprintf(err, errlen, "epoll: %s", strerror(errno));
        kill(inc->pid, SIGKILL);
        int status;
        incarnation_reap(inc, &status);
        goto fail_early;
    }

    struct wire_out *w = &inc->work_head;
    wire_reset(w);
    wire_str(w, spec->name);
    wire_str(w, spec->plugin);
    wire_str(w, backend_spec_load_path(spec));
    wire_u32(w, (uint32_t)p->base->index);
    wire_u32(w, spec->options.num_replicas);
    wire_u32(w, (uint32_t)spec->options.max_batch_size);
    wire_u64(w, stream_bound());
    put_config(w, spec->config);
    shm_ring_lock(&inc->work);
    channel_put(&inc->work, MSG_INIT, w, (uint32_t)spec->config->count, NULL, 0);
    shm_ring_end_message(&inc->work);
    shm_ring_unlock(&inc->work);

    struct wire_out head = {0};
    uint32_t type = 0;
    struct wire_prefix prefix;
    bool got = channel_get(&inc->answers, incarnation_wait, inc, &type, &prefix, &head) &&
               channel_skip(&inc->answers, prefix.body_len, incarnation_wait, inc);
    struct wire_in r = wire_in_of(&head);
    const char *text = got ? wire_get_str(&r) : "";
    uint32_t value = got ? wire_get_u32(&r) : 0;
    if (got && type == MSG_READY && !r.bad) {
        struct replica_group *g = p->base->group;
        struct process_group *pg = g->data;
        const char *metadata = wire_get_str(&r);
        if (p->base->index == 0) {
            snprintf(pg->label, sizeof pg->label, "%s", text);
            g->can_reconfigure = value != 0;
            /* Set once: I/O threads read it once the backend is routed
             * to, and a restart loads the same plugin. */
            if (!g->tensor_metadata && !r.bad && metadata[0]) g->tensor_metadata = strdup(metadata);
        }
        wire_free(&head);
        return inc;
    }
    if (got && type == MSG_INIT_FAILED) {
        snprintf(err, errlen, "%s", text);
    } else {
        int status = 0;
        kill(inc->pid, SIGKILL);
        incarnation_reap(inc, &status);
        inc->pid = 0;
        char how[64];
        describe_exit(status, how, sizeof how);
        snprintf(err, errlen, "plugin %s: init failed: the replica process %s", spec->plugin, how);
    }
    wire_free(&head);
    if (inc->pid) {
        int status;
        incarnation_reap(inc, &status);
    }
    incarnation_release(inc);
    return NULL;
fail_early:
    if (life[0] >= 0) close(life[0]);
    if (life[1] >= 0) close(life[1]);
    incarnation_release(inc);
    return NULL;
}

