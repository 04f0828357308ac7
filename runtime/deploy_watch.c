/* deploy_watch.c - re-applies a deploy file when it changes (deploy_watch.h). */
#include "deploy_watch.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "deploy_file.h"
#include "deployment.h"
#include "log.h"
#include "server_internal.h"

#define POLL_MS 500

struct deploy_watch {
    struct server *server;
    char *path;
    struct event *tick;
    struct stat seen;     /* the file as last looked at */
    bool seen_ok;
    uint64_t content;     /* a hash of the bytes last read */
    bool missing_logged;
};

/* FNV-1a over the file's bytes; false when it cannot be read. */
static bool content_hash(const char *path, uint64_t *out)
{
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    uint64_t h = 1469598103934665603ull;
    unsigned char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        for (size_t i = 0; i < n; i++) h = (h ^ buf[i]) * 1099511628211ull;
    bool ok = !ferror(f);
    fclose(f);
    *out = h;
    return ok;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static void apply_file(struct deploy_watch *w)
{
    char err[4096];
    struct deployment desired;
    if (!deploy_file_load(w->path, &desired, err, sizeof err)) {
        LOG_ERROR("deploy file %s changed but was refused, the server keeps what it runs: %s",
                  w->path, err);
        return;
    }
    if (!server_apply(w->server, &desired, err, sizeof err)) {
        LOG_ERROR("deploy file %s changed but was refused, the server keeps what it runs: %s",
                  w->path, err);
        return;
    }
    LOG_INFO("deploy file %s changed: deployed", w->path);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct deploy_watch *w = arg;
    struct stat now;
    if (stat(w->path, &now) != 0) {
        if (!w->missing_logged)
            LOG_WARN("deploy file %s cannot be read; watching for it to come back", w->path);
        w->missing_logged = true;
        w->seen_ok = false;
        return;
    }
    w->missing_logged = false;
    if (w->seen_ok && same_file(&now, &w->seen)) return;
    uint64_t h;
    if (!content_hash(w->path, &h)) return; /* looked at again next time */
    w->seen = now;
    w->seen_ok = true;
    if (h == w->content) return;
    w->content = h;
    apply_file(w);
}

void deploy_watch_mark_take(const char *path, struct deploy_watch_mark *mark)
{
    memset(mark, 0, sizeof *mark);
    /* Hashed first: a change between the two shows as a new stat. */
    if (!content_hash(path, &mark->content)) mark->content = 0;
    mark->seen_ok = stat(path, &mark->seen) == 0;
}

struct deploy_watch *deploy_watch_start(struct event_base *base, struct server *s,
                                        const char *path,
                                        const struct deploy_watch_mark *applied)
{
    struct deploy_watch *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->server = s;
    w->path = strdup(path);
    w->tick = event_new(base, -1, EV_PERSIST, on_tick, w);
    if (!w->path || !w->tick) {
        deploy_watch_free(w);
        return NULL;
    }
    if (applied) {
        w->seen = applied->seen;
        w->seen_ok = applied->seen_ok;
        w->content = applied->content;
    }
    struct timeval every = {0, POLL_MS * 1000};
    event_add(w->tick, &every);
    return w;
}

void deploy_watch_free(struct deploy_watch *w)
{
    if (!w) return;
    if (w->tick) event_free(w->tick);
    free(w->path);
    free(w);
}
