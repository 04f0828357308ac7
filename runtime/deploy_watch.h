/* deploy_watch.h - `serve start --deploy FILE --watch`: the deploy file is
 * applied again whenever it changes, on the control thread, through the
 * same path as `serve deploy FILE`.
 *
 * The file is polled (stat every 500 ms, following symlinks), not watched
 * with inotify: a Kubernetes ConfigMap is updated by swapping a symlink
 * two levels up, which a poll sees as any other change. A change whose
 * bytes are the same as the last version read is ignored. A version that
 * does not load or apply is refused whole and logged with its reason; the
 * server keeps what it runs, and the next change is tried again. */
#ifndef SERVE_RUNTIME_DEPLOY_WATCH_H
#define SERVE_RUNTIME_DEPLOY_WATCH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

struct event_base;
struct server;
struct deploy_watch;

/* The file as it was when read: taken just before `--deploy` loads it, so
 * that an edit made while the start applies it (which can take as long as
 * the models load) is seen as a change. */
struct deploy_watch_mark {
    struct stat seen;
    bool seen_ok;
    uint64_t content; /* a hash of its bytes; 0 when unread */
};
void deploy_watch_mark_take(const char *path, struct deploy_watch_mark *mark);

/* Starts polling `path` on `base` (the control thread's), applying its
 * changes to s. `applied`: the file as this process applied it (`--deploy`
 * at start); NULL for a restarted server process, which restored the state
 * dir: its first look applies the file, in case it changed while no server
 * ran. NULL when out of memory. */
struct deploy_watch *deploy_watch_start(struct event_base *base, struct server *s,
                                        const char *path,
                                        const struct deploy_watch_mark *applied);
void deploy_watch_free(struct deploy_watch *w);

#endif
