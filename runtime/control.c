/* control.c - the control socket: a Unix socket in the state dir, mode
 * 0600, one thread, blocking I/O, one msgpack frame in and one out per
 * command. Commands run one at a time, which is what makes the
 * apply-persist-acknowledge sequence of commands.c safe without locks. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "frame.h"
#include "handles.h"
#include "clock.h"
#include "live_stats.h"
#include "log.h"
#include "mp.h"
#include "mp_bounds.h"
#include "server_internal.h"

static void reply(int fd, bool ok, const char *err, const msgpack_sbuffer *result)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    mp_pack_key(&pk, "ok");
    ok ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
    if (ok) {
        mp_pack_key(&pk, "result");
        if (result->size)
            msgpack_sbuffer_write(&sbuf, result->data, result->size);
        else
            msgpack_pack_nil(&pk);
    } else {
        mp_pack_key(&pk, "error");
        mp_pack_str(&pk, err);
    }
    if (frame_write(fd, sbuf.data, sbuf.size) != 0)
        LOG_WARN("control: cannot send reply: %s", strerror(errno));
    msgpack_sbuffer_destroy(&sbuf);
}

/* `serve call`: the answer comes later, on whatever thread the target
 * answers on; the connection goes with the call and is closed by it. */
static void call_answered(const serve_result *result, void *arg)
{
    int fd = (int)(intptr_t)arg;
    size_t len = 0;
    const void *body = serve_result_body(result, &len);
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    mp_pack_key(&pk, "ok");
    msgpack_pack_true(&pk);
    mp_pack_key(&pk, "result");
    msgpack_pack_map(&pk, 3);
    mp_pack_key(&pk, "status");
    msgpack_pack_int(&pk, serve_result_status(result));
    mp_pack_key(&pk, "content_type");
    mp_pack_str(&pk, serve_result_content_type(result));
    mp_pack_key(&pk, "body");
    msgpack_pack_bin(&pk, len);
    msgpack_pack_bin_body(&pk, body, len);
    if (frame_write(fd, sbuf.data, sbuf.size) != 0)
        LOG_WARN("control: cannot send the answer of a call: %s", strerror(errno));
    msgpack_sbuffer_destroy(&sbuf);
    close(fd);
}

/* Returns true when the call took the connection. */
static bool start_call(const msgpack_object *req, int fd, char *err, size_t errlen)
{
    char *endpoint = NULL;
    if (!mp_as_str(mp_get(req, "endpoint"), &endpoint)) {
        snprintf(err, errlen, "call: endpoint missing");
        return false;
    }
    serve_call *call = handles_call_new(endpoint, NULL);
    free(endpoint);
    const msgpack_object *body = mp_get(req, "body");
    const msgpack_object *query = mp_get(req, "query");
    bool ok = call != NULL;
    if (ok && body && body->type == MSGPACK_OBJECT_BIN)
        ok = serve_call_set_body(call, body->via.bin.ptr, body->via.bin.size) == SERVE_OK;
    for (uint32_t i = 0; ok && query && query->type == MSGPACK_OBJECT_MAP && i < query->via.map.size; i++) {
        char *k = NULL, *v = NULL;
        ok = mp_as_str(&query->via.map.ptr[i].key, &k) && mp_as_str(&query->via.map.ptr[i].val, &v) &&
             serve_call_add_query(call, k, v) == SERVE_OK;
        free(k);
        free(v);
    }
    if (!ok) {
        if (call) serve_call_send(call, NULL, NULL); /* consumes it */
        snprintf(err, errlen, "call: malformed request or out of memory");
        return false;
    }
    serve_call_send(call, call_answered, (void *)(intptr_t)fd);
    return true;
}

static bool serve_connection(struct server *s, int fd)
{
    for (;;) {
        char *data = NULL;
        size_t len = 0;
        int rc = frame_read(fd, &data, &len, FRAME_MAX);
        if (rc == -2) {
            reply(fd, false, "control frame too large", NULL);
            return false;
        }
        if (rc != 0) return false; /* EOF or a client that went away */
        msgpack_unpacked msg;
        msgpack_unpacked_init(&msg);
        size_t off = 0;
        msgpack_sbuffer result;
        msgpack_sbuffer_init(&result);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &result, msgpack_sbuffer_write);
        char err[2048] = "";
        bool ok;
        if (!mp_bounded(data, len, NULL) ||
            msgpack_unpack_next(&msg, data, len, &off) != MSGPACK_UNPACK_SUCCESS ||
            msg.data.type != MSGPACK_OBJECT_MAP) {
            snprintf(err, sizeof err, "malformed control frame: expected a msgpack map");
            ok = false;
        } else if (mp_str_eq(mp_get(&msg.data, "cmd"), "call")) {
            bool taken = start_call(&msg.data, fd, err, sizeof err);
            if (taken) {
                msgpack_sbuffer_destroy(&result);
                msgpack_unpacked_destroy(&msg);
                free(data);
                return true;
            }
            ok = false;
        } else {
            ok = command_run(s, &msg.data, &pk, err, sizeof err);
        }
        reply(fd, ok, err, &result);
        msgpack_sbuffer_destroy(&result);
        msgpack_unpacked_destroy(&msg);
        free(data);
    }
}

static void *control_main(void *arg)
{
    struct server *s = arg;
    uint64_t next_sample_ns = 0;
    for (;;) {
        struct pollfd fds[2] = {{s->control_fd, POLLIN, 0}, {s->control_wake[0], POLLIN, 0}};
        /* Once a second, between commands: the sample behind status's
         * live figures. */
        uint64_t now = serve__now_ns();
        if (now >= next_sample_ns) {
            live_stats_sample(s);
            next_sample_ns = now + 1000000000u;
        }
        int wait_ms = (int)((next_sample_ns - now) / 1000000u) + 1;
        int ready = poll(fds, 2, wait_ms);
        if (ready == 0) continue;
        if (ready < 0) {
            if (errno == EINTR) continue;
            LOG_ERROR("control: poll: %s", strerror(errno));
            break;
        }
        if (fds[1].revents) break;
        if (!(fds[0].revents & POLLIN)) continue;
        int fd = accept4(s->control_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) continue;
        /* A client that stops talking must not hold the control plane. */
        struct timeval tv = {10, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (!serve_connection(s, fd)) close(fd);
    }
    return NULL;
}

/* A socket of ours left here belongs to a server that is gone (we hold the
 * state dir's lock). Anything else was not left by serve: it stays, and the
 * start fails. */
static bool remove_stale_socket(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT) return true;
        snprintf(err, errlen, "control socket %s: %s", path, strerror(errno));
        return false;
    }
    if (!S_ISSOCK(st.st_mode) || st.st_uid != geteuid()) {
        snprintf(err, errlen, "control socket %s exists and is not a socket of yours (%s); remove it",
                 path, S_ISLNK(st.st_mode)   ? "a symlink"
                       : S_ISSOCK(st.st_mode) ? "another user's socket"
                       : S_ISDIR(st.st_mode)  ? "a folder"
                                              : "a file");
        return false;
    }
    if (unlink(path) != 0) {
        snprintf(err, errlen, "control socket %s: cannot remove the stale one: %s", path,
                 strerror(errno));
        return false;
    }
    return true;
}

bool control_start(struct server *s, char *err, size_t errlen)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(s->socket_path) >= sizeof addr.sun_path) {
        snprintf(err, errlen, "control socket path %s is too long (state dir too deep)",
                 s->socket_path);
        return false;
    }
    strcpy(addr.sun_path, s->socket_path);
    if (!remove_stale_socket(s->socket_path, err, errlen)) return false;
    s->control_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    mode_t old_mask = umask(0177); /* the socket is created 0600 */
    int rc = s->control_fd < 0 ? -1
                               : bind(s->control_fd, (struct sockaddr *)&addr, sizeof addr);
    umask(old_mask);
    if (rc != 0 || chmod(s->socket_path, 0600) != 0 || listen(s->control_fd, 64) != 0 ||
        pipe2(s->control_wake, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "control socket %s: %s", s->socket_path, strerror(errno));
        return false;
    }
    if (pthread_create(&s->control_thread, NULL, control_main, s) != 0) {
        snprintf(err, errlen, "cannot start the control thread");
        return false;
    }
    s->control_started = true;
    return true;
}

void control_stop(struct server *s)
{
    if (s->control_started) {
        ssize_t ignored = write(s->control_wake[1], "x", 1);
        (void)ignored;
        pthread_join(s->control_thread, NULL);
        s->control_started = false;
        live_stats_free();
    }
    /* Only a server that opened the socket (and so holds the state dir's
     * lock) may remove it: a refused second server must not. */
    if (s->control_fd >= 0) {
        close(s->control_fd);
        unlink(s->socket_path);
    }
    s->control_fd = -1;
    for (int i = 0; i < 2; i++)
        if (s->control_wake[i] >= 0) close(s->control_wake[i]);
    s->control_wake[0] = s->control_wake[1] = -1;
}
