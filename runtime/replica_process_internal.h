/* replica_process_internal.h - what the three files of the process
 * replica kind share: replica_process.c (the kind and its monitor thread's
 * life: start, restarts, stop), replica_spawn.c (one incarnation: the
 * child process and its channel) and replica_watch.c (what the monitor
 * does while a child lives: its messages, its health, its death). */
#ifndef SERVE_RUNTIME_REPLICA_PROCESS_INTERNAL_H
#define SERVE_RUNTIME_REPLICA_PROCESS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/types.h>

#include "park.h"
#include "replica_channel.h"
#include "replica_kind.h"

/* The group's data: what the first replica's child said of the plugin. */
struct process_group {
    char label[128];
};

/* One child process and its channel. Whoever writes to it holds a
 * reference, so a restart never pulls a ring from under a writer. */
struct incarnation {
    atomic_int refs;
    struct replica_channel ch;
    struct shm_ring_end work, results, answers;
    int wake_fd; /* the child writes it when the answers ring has news */
    pid_t pid;
    /* Readable once the child is gone: its pidfd, or (where pidfd_open is
     * missing, as under valgrind) the read end of a pipe whose only write
     * end the child holds. */
    int death_fd;
    int epoll_fd; /* both of the above */
    atomic_bool gone;

    pthread_mutex_t slots_lock;
    serve_request **slots; /* requests the child holds, by slot */
    uint32_t slot_cap;
    uint32_t *free_slots;
    uint32_t free_count;
    bool closed;           /* the child died: no more slots */

    struct park worker_park; /* the worker waits for a reconfigure's end here */
    atomic_uint reconfigures_done;
    atomic_uint batches_sent;    /* by the worker */
    atomic_uint batches_done;    /* by the monitor, as the child reports them */
    atomic_int reconfigure_rc;
    char reconfigure_why[512]; /* the child's reason for a refusal (under slots_lock) */
    struct wire_out work_head;    /* under work's lock */
    struct wire_out results_head; /* under results' lock */
};

/* One replica of the kind. */
struct process_replica {
    struct replica_base *base;
    pthread_t monitor;
    pthread_mutex_t lock;
    pthread_cond_t started;
    struct incarnation *current; /* NULL while down */
    bool stopping;
    int start_state;             /* 0 starting, 1 up, -1 failed */
    char start_err[1024];
    struct park backoff_park;    /* the monitor sleeps here between restarts */
    int killed_for;              /* -1, or CRASH_HANG / CRASH_MEMORY */
    char kill_text[160];
};


/* replica_spawn.c */
/* Spawns a child for p's replica and runs its init; NULL with one line in
 * err when that fails (the child reaped). */
struct incarnation *incarnation_spawn(struct process_replica *p, char *err, size_t errlen);
void incarnation_release(struct incarnation *inc);
/* The monitor's wait on the answers ring (see ring_wait_fn): false once the
 * child is gone and nothing more can come. */
bool incarnation_wait(struct shm_ring_end *end, void *inc);
/* Sleeps until the child writes to the answers ring, the child ends, or
 * timeout_ms passes (-1: no limit). True when the child has ended. */
bool incarnation_sleep(struct incarnation *inc, int timeout_ms);
void incarnation_reap(struct incarnation *inc, int *status);
/* "died (SIGSEGV)", "died (exit status 3)" */
void describe_exit(int status, char *out, size_t len);
void put_config(struct wire_out *w, const serve_config *c);

/* replica_watch.c */
/* How many request ids a crash's log line names before "...". */
#define LOGGED_IDS 16

/* Serves the incarnation until its child is gone (died, killed for a hang
 * or memory, or broke the protocol: p->killed_for says which). */
void incarnation_watch(struct process_replica *p, struct incarnation *inc);
/* After a death: the requests the child held get `status` with a message
 * made of `text`; returns how many, their ids in ids (for the log). */
size_t incarnation_fail_held(struct process_replica *p, struct incarnation *inc, int status,
                             const char *text, char *ids, size_t idslen);

#endif
