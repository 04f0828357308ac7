/* control.c - the control socket: a Unix socket in the state dir, mode
 * 0600, one msgpack frame in and one out per command.
 *
 * One thread runs an event loop of its own for every control connection,
 * all non-blocking: a client that is idle, sends its frame byte by byte or
 * does not read its reply holds only its own connection, and only until a
 * deadline. Commands still run one at a time on this thread, which is what
 * makes the apply-persist-acknowledge sequence of commands.c safe without
 * locks. The answer of a `serve call` comes on whatever thread the target
 * answers on: it is packed there and handed to this thread through a mailbox
 * (mutex + event_active), so that thread never waits for the client. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "deploy_watch.h"
#include "frame.h"
#include "handles.h"
#include "live_stats.h"
#include "log.h"
#include "mp.h"
#include "mp_bounds.h"
#include "server_internal.h"

/* A connection with no frame begun is closed after CONTROL_IDLE_S; so is one
 * whose frame has not arrived whole CONTROL_FRAME_S after its first byte, and
 * one that has not taken its whole reply CONTROL_REPLY_S after it was ready. */
#define CONTROL_IDLE_S 5
#define CONTROL_FRAME_S 5
#define CONTROL_REPLY_S 10

/* What a connection waits for; the phase's deadline starts as it begins. */
enum phase { PHASE_IDLE, PHASE_FRAME, PHASE_REPLY, PHASE_CALL };

struct control_conn {
    struct control *control;
    struct control_conn *prev, *next;
    int fd;                   /* -1 once closed; kept while its call is awaited */
    enum phase phase;
    bool no_more_frames;      /* the client closed its side, or broke the framing */
    struct event *read_ev, *write_ev, *deadline_ev;
    struct evbuffer *in, *out;
};

/* A `serve call`'s answer on its way from the target's thread to the loop. */
struct control_answer {
    struct control_answer *next;
    struct control_conn *conn; /* touched on the control thread only */
    msgpack_sbuffer frame;
    bool partial;              /* a piece of a streamed answer; the reply follows */
};

struct control {
    struct server *server;
    struct event_base *base;
    int listen_fd;            /* -1 before bind and once closed */
    struct event *accept_ev, *accept_pause_ev, *sample_ev, *autoscale_ev, *answers_ev, *close_ev,
        *stop_ev;
    struct control_conn *conns; /* open ones, and closed ones awaiting their call */
    bool closing;             /* no new connection or command */
    bool stopping;            /* leave the loop once every reply is out */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mutex;    /* guards closed */
    pthread_cond_t closed_cond;
    bool closed;
    struct control_answer *answers, *answers_tail; /* guarded by answers_mutex; in order */
    struct deploy_watch *watch; /* --watch: the deploy file, polled on this thread */
};

/* The mailbox's lock and the loop it delivers to: NULL once the control
 * plane stopped, and a late answer is dropped (its client is gone). Not in
 * struct control: a late answer may come after that is freed. */
static pthread_mutex_t answers_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct control *answers_to;

static void conn_run(struct control_conn *c);

static void arm(struct event *ev, int seconds)
{
    struct timeval tv = {seconds, 0};
    event_add(ev, &tv);
}

/* -- frames ------------------------------------------------------------- */

/* Starts a reply frame with room for its head (see frame_finish). */
static void frame_start(msgpack_sbuffer *frame, msgpack_packer *pk)
{
    msgpack_sbuffer_init(frame);
    msgpack_packer_init(pk, frame, msgpack_sbuffer_write);
    msgpack_sbuffer_write(frame, "\0\0\0\0", FRAME_HEAD);
}

/* Fills in the head; false when the frame is over FRAME_MAX. */
static bool frame_finish(msgpack_sbuffer *frame)
{
    if (frame->size < FRAME_HEAD || frame->size - FRAME_HEAD > FRAME_MAX) return false;
    frame_head_write((unsigned char *)frame->data, frame->size - FRAME_HEAD);
    return true;
}

static void error_frame(msgpack_sbuffer *frame, const char *message)
{
    msgpack_packer pk;
    frame_start(frame, &pk);
    msgpack_pack_map(&pk, 2);
    mp_pack_key(&pk, "ok");
    msgpack_pack_false(&pk);
    mp_pack_key(&pk, "error");
    mp_pack_str(&pk, message);
    frame_finish(frame);
}

/* {"ok": true, "result": R} with R packed in `result` (empty: nil). */
static void result_frame(msgpack_sbuffer *frame, const msgpack_sbuffer *result)
{
    msgpack_packer pk;
    frame_start(frame, &pk);
    msgpack_pack_map(&pk, 2);
    mp_pack_key(&pk, "ok");
    msgpack_pack_true(&pk);
    mp_pack_key(&pk, "result");
    if (result->size)
        msgpack_sbuffer_write(frame, result->data, result->size);
    else
        msgpack_pack_nil(&pk);
    if (frame_finish(frame)) return;
    msgpack_sbuffer_destroy(frame);
    error_frame(frame, "the reply is larger than a control frame (16 MiB)");
}

/* 1 when `in` holds a whole frame (*len bytes after its head), 0 when not
 * yet, -1 when its head announces more than FRAME_MAX. */
static int frame_whole(struct evbuffer *in, size_t *len)
{
    unsigned char head[FRAME_HEAD];
    if (evbuffer_copyout(in, head, FRAME_HEAD) < FRAME_HEAD) return 0;
    *len = frame_head_read(head);
    if (*len > FRAME_MAX) return -1;
    return evbuffer_get_length(in) >= FRAME_HEAD + *len;
}

/* -- connections ---------------------------------------------------------- */

static void conn_free_io(struct control_conn *c)
{
    if (c->read_ev) event_free(c->read_ev);
    if (c->write_ev) event_free(c->write_ev);
    if (c->deadline_ev) event_free(c->deadline_ev);
    if (c->in) evbuffer_free(c->in);
    if (c->out) evbuffer_free(c->out);
    if (c->fd >= 0) close(c->fd);
    c->read_ev = c->write_ev = c->deadline_ev = NULL;
    c->in = c->out = NULL;
    c->fd = -1;
}

static void conn_free(struct control_conn *c)
{
    conn_free_io(c);
    if (c->prev) c->prev->next = c->next;
    else c->control->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    free(c);
}

/* The loop ends on stop once no connection has a reply left to write. */
static void finish_if_done(struct control *ctl)
{
    for (struct control_conn *c = ctl->conns; c; c = c->next)
        if (c->fd >= 0) return;
    event_base_loopbreak(ctl->base);
}

static void conn_close(struct control_conn *c)
{
    struct control *ctl = c->control;
    /* A call's answer will still come for it, and free it then. */
    if (c->phase == PHASE_CALL) conn_free_io(c);
    else conn_free(c);
    if (ctl->stopping) finish_if_done(ctl);
}

/* Enters phase p: reads only while a frame is awaited, and starts the
 * phase's deadline. */
static void conn_enter(struct control_conn *c, enum phase p)
{
    if (c->phase == p) return;
    c->phase = p;
    if ((p == PHASE_IDLE || p == PHASE_FRAME) && !c->no_more_frames)
        event_add(c->read_ev, NULL);
    else
        event_del(c->read_ev);
    if (p == PHASE_IDLE) arm(c->deadline_ev, CONTROL_IDLE_S);
    else if (p == PHASE_FRAME) arm(c->deadline_ev, CONTROL_FRAME_S);
    else if (p == PHASE_REPLY) arm(c->deadline_ev, CONTROL_REPLY_S);
    else event_del(c->deadline_ev); /* a call has its own timeout, if any */
}

/* Reads nothing more: what is buffered is served, then the connection
 * closes. */
static void conn_stop_reading(struct control_conn *c)
{
    c->no_more_frames = true;
    event_del(c->read_ev);
}

static void free_frame(const void *data, size_t len, void *arg)
{
    (void)len, (void)arg;
    free((void *)data);
}

/* Queues a whole frame (taken over) for the client. */
static void conn_send(struct control_conn *c, msgpack_sbuffer *frame)
{
    size_t len = frame->size;
    char *data = msgpack_sbuffer_release(frame);
    if (c->phase == PHASE_REPLY) arm(c->deadline_ev, CONTROL_REPLY_S); /* a pipelined frame's */
    else conn_enter(c, PHASE_REPLY);
    if (evbuffer_add_reference(c->out, data, len, free_frame, NULL) != 0) {
        free(data);
        LOG_ERROR("control: out of memory for a reply; closing its connection");
        evbuffer_drain(c->in, evbuffer_get_length(c->in));
        conn_stop_reading(c);
    }
}

static void reply_error(struct control_conn *c, const char *message)
{
    msgpack_sbuffer frame;
    error_frame(&frame, message);
    conn_send(c, &frame);
}

/* Reads what the socket has, up to a whole frame. False on a socket error;
 * at EOF, what is buffered is still served. */
static bool conn_read(struct control_conn *c)
{
    size_t len;
    while (frame_whole(c->in, &len) == 0) {
        int n = evbuffer_read(c->in, c->fd, 65536);
        if (n > 0) continue;
        if (n == 0) {
            conn_stop_reading(c);
            return true;
        }
        if (errno == EINTR) continue;
        return errno == EAGAIN || errno == EWOULDBLOCK;
    }
    return true;
}

enum flush { FLUSH_DONE, FLUSH_WAITING, FLUSH_FAILED };

/* Writes what the socket takes now; waits for it to drain when it is full. */
static enum flush conn_flush(struct control_conn *c)
{
    while (evbuffer_get_length(c->out)) {
        int n = evbuffer_write(c->out, c->fd);
        if (n > 0 || (n < 0 && errno == EINTR)) continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) return FLUSH_FAILED;
        event_add(c->write_ev, NULL);
        return FLUSH_WAITING;
    }
    event_del(c->write_ev);
    return FLUSH_DONE;
}

/* -- commands ------------------------------------------------------------- */

static void pack_call_answer(msgpack_sbuffer *frame, const serve_result *result)
{
    size_t len = 0;
    const void *body = serve_result_body(result, &len);
    msgpack_packer pk;
    frame_start(frame, &pk);
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
    bool packed = msgpack_pack_bin_body(&pk, body, len) == 0;
    if (packed && frame_finish(frame)) return;
    msgpack_sbuffer_destroy(frame);
    char message[256];
    if (packed)
        snprintf(message, sizeof message,
                 "call: the answer (%zu bytes) does not fit in a control frame (%u bytes)", len,
                 FRAME_MAX);
    else
        snprintf(message, sizeof message, "call: out of memory for the answer (%zu bytes)", len);
    error_frame(frame, message);
}

/* Any thread: posts a packed frame to the control loop, after those
 * posted before (a streamed answer's pieces keep their order). */
static void post_answer(struct control_answer *answer)
{
    pthread_mutex_lock(&answers_mutex);
    struct control *ctl = answers_to;
    if (ctl) {
        answer->next = NULL;
        if (ctl->answers_tail)
            ctl->answers_tail->next = answer;
        else
            ctl->answers = answer;
        ctl->answers_tail = answer;
        event_active(ctl->answers_ev, EV_READ, 0);
    }
    pthread_mutex_unlock(&answers_mutex);
    if (!ctl) {
        msgpack_sbuffer_destroy(&answer->frame);
        free(answer);
    }
}

/* Any thread: packs the answer there, and posts it to the control loop. */
static void call_answered(const serve_result *result, void *arg)
{
    struct control_answer *answer = arg;
    pack_call_answer(&answer->frame, result);
    post_answer(answer);
}

/* Any thread: a piece of the target's stream, as {"ok": true, "chunk": BIN}. */
static void call_chunk(const void *data, size_t len, void *arg)
{
    struct control_answer *reply = arg;
    struct control_answer *piece = calloc(1, sizeof *piece);
    if (!piece) return;
    piece->conn = reply->conn;
    piece->partial = true;
    msgpack_packer pk;
    frame_start(&piece->frame, &pk);
    msgpack_pack_map(&pk, 2);
    mp_pack_key(&pk, "ok");
    msgpack_pack_true(&pk);
    mp_pack_key(&pk, "chunk");
    msgpack_pack_bin(&pk, len);
    msgpack_pack_bin_body(&pk, data, len);
    if (!frame_finish(&piece->frame)) {
        msgpack_sbuffer_destroy(&piece->frame);
        free(piece);
        return;
    }
    post_answer(piece);
}

/* Returns true when the call took the connection: its answer is the reply. */
static bool start_call(struct control_conn *c, const msgpack_object *req, char *err, size_t errlen)
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
    struct control_answer *answer = ok ? calloc(1, sizeof *answer) : NULL;
    if (!answer) {
        if (call) serve_call_send(call, NULL, NULL); /* consumes it */
        snprintf(err, errlen, "call: malformed request or out of memory");
        return false;
    }
    answer->conn = c;
    conn_enter(c, PHASE_CALL);
    bool stream = false;
    if (mp_as_bool(mp_get(req, "stream"), &stream) && stream) serve_call_on_chunk(call, call_chunk);
    serve_call_send(call, call_answered, answer);
    return true;
}

/* Runs the frame at the front of c->in (len bytes after its head) and
 * queues its reply, or leaves the connection to a call's answer. */
static void serve_frame(struct control_conn *c, size_t len)
{
    evbuffer_drain(c->in, FRAME_HEAD);
    const char *data = len ? (const char *)evbuffer_pullup(c->in, (ev_ssize_t)len) : "";
    if (!data) {
        reply_error(c, "out of memory for a control frame");
        evbuffer_drain(c->in, len);
        return;
    }
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    size_t off = 0;
    msgpack_sbuffer result;
    msgpack_sbuffer_init(&result);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &result, msgpack_sbuffer_write);
    char err[2048] = "";
    if (!mp_bounded(data, len, NULL) ||
        msgpack_unpack_next(&msg, data, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        msg.data.type != MSGPACK_OBJECT_MAP) {
        reply_error(c, "malformed control frame: expected a msgpack map");
    } else if (mp_str_eq(mp_get(&msg.data, "cmd"), "call")) {
        if (!start_call(c, &msg.data, err, sizeof err)) reply_error(c, err);
    } else if (command_run(c->control->server, &msg.data, &pk, err, sizeof err)) {
        msgpack_sbuffer frame;
        result_frame(&frame, &result);
        conn_send(c, &frame);
    } else {
        reply_error(c, err);
    }
    msgpack_sbuffer_destroy(&result);
    msgpack_unpacked_destroy(&msg);
    evbuffer_drain(c->in, len);
}

/* Moves a connection on as far as it can without waiting: writes its
 * reply, then serves the next frame it holds whole, one at a time (a
 * client's pipelined frames wait in the socket, not in our memory), then
 * waits for what is missing. */
static void conn_run(struct control_conn *c)
{
    struct control *ctl = c->control;
    for (;;) {
        enum flush flushed = conn_flush(c);
        if (flushed == FLUSH_FAILED) {
            conn_close(c);
            return;
        }
        if (flushed == FLUSH_WAITING || c->phase == PHASE_CALL) return;
        size_t len = 0;
        int whole = ctl->closing ? 0 : frame_whole(c->in, &len);
        if (whole > 0) {
            serve_frame(c, len);
        } else if (whole < 0) {
            evbuffer_drain(c->in, evbuffer_get_length(c->in));
            conn_stop_reading(c);
            reply_error(c, "control frame too large");
        } else if (c->no_more_frames || ctl->closing) {
            conn_close(c);
            return;
        } else {
            conn_enter(c, evbuffer_get_length(c->in) ? PHASE_FRAME : PHASE_IDLE);
            return;
        }
    }
}

static void conn_on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct control_conn *c = arg;
    if (conn_read(c)) conn_run(c);
    else conn_close(c);
}

static void conn_on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    conn_run(arg);
}

/* The phase's time is up. The loop may have been busy with a long command
 * meanwhile, so what the socket has (or takes) now counts first: only a
 * client that is really late is closed. */
static void conn_on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct control_conn *c = arg;
    if (c->phase == PHASE_REPLY) {
        enum flush flushed = conn_flush(c);
        if (flushed == FLUSH_DONE) {
            conn_run(c);
            return;
        }
        if (flushed == FLUSH_WAITING)
            LOG_WARN("control: a client did not take its whole reply within %d s (%zu bytes "
                     "left); closing its connection", CONTROL_REPLY_S, evbuffer_get_length(c->out));
        conn_close(c);
        return;
    }
    size_t len;
    bool was_idle = c->phase == PHASE_IDLE;
    if (conn_read(c) && ((was_idle && evbuffer_get_length(c->in)) || frame_whole(c->in, &len))) {
        conn_run(c);
        return;
    }
    if (!was_idle)
        LOG_WARN("control: a client's frame has not arrived whole %d s after its first byte; "
                 "closing its connection", CONTROL_FRAME_S);
    conn_close(c);
}

static void conn_new(struct control *ctl, int fd)
{
    struct control_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        LOG_ERROR("control: out of memory for a connection");
        return;
    }
    c->control = ctl;
    c->fd = fd;
    c->next = ctl->conns;
    if (c->next) c->next->prev = c;
    ctl->conns = c;
    c->in = evbuffer_new();
    c->out = evbuffer_new();
    c->read_ev = event_new(ctl->base, fd, EV_READ | EV_PERSIST, conn_on_read, c);
    c->write_ev = event_new(ctl->base, fd, EV_WRITE | EV_PERSIST, conn_on_write, c);
    c->deadline_ev = evtimer_new(ctl->base, conn_on_deadline, c);
    if (!c->in || !c->out || !c->read_ev || !c->write_ev || !c->deadline_ev) {
        LOG_ERROR("control: out of memory for a connection");
        conn_free(c);
        return;
    }
    c->phase = PHASE_IDLE;
    event_add(c->read_ev, NULL);
    arm(c->deadline_ev, CONTROL_IDLE_S);
}

/* -- the loop ------------------------------------------------------------- */

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct control *ctl = arg;
    for (;;) {
        int conn_fd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (conn_fd >= 0) {
            conn_new(ctl, conn_fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            /* Out of files: a listener that stays readable would spin. */
            LOG_WARN("control: cannot accept a connection: %s; trying again in 1 s", strerror(errno));
            event_del(ctl->accept_ev);
            arm(ctl->accept_pause_ev, 1);
        }
        return;
    }
}

static void on_accept_pause_over(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct control *ctl = arg;
    if (ctl->listen_fd >= 0) event_add(ctl->accept_ev, NULL);
}

/* Once a second: the sample behind status's live figures. */
static void on_sample(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct control *ctl = arg;
    live_stats_sample(ctl->server);
}

/* Every AUTOSCALE_TICK_MS: autoscaling's sample and moves, on this
 * thread, the one that changes what the server runs. */
static void on_autoscale(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct control *ctl = arg;
    server_autoscale_tick(ctl->server);
}

static void on_answers(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct control *ctl = arg;
    pthread_mutex_lock(&answers_mutex);
    struct control_answer *answer = ctl->answers;
    ctl->answers = ctl->answers_tail = NULL;
    pthread_mutex_unlock(&answers_mutex);
    while (answer) {
        struct control_answer *next = answer->next;
        struct control_conn *c = answer->conn;
        if (answer->partial) {
            /* The call goes on: the piece goes out, the phase stays. */
            if (c->fd >= 0) {
                size_t len = answer->frame.size;
                char *data = msgpack_sbuffer_release(&answer->frame);
                if (evbuffer_add_reference(c->out, data, len, free_frame, NULL) != 0) free(data);
                conn_run(c);
            }
        } else if (c->fd < 0) {
            conn_free(c); /* closed while its call ran */
        } else {
            conn_send(c, &answer->frame);
            conn_run(c);
        }
        msgpack_sbuffer_destroy(&answer->frame);
        free(answer);
        answer = next;
    }
}

/* Only a server that bound the socket (and so holds the state dir's lock)
 * may remove it: a refused second server must not. */
static void close_listener(struct control *ctl)
{
    if (ctl->listen_fd < 0) return;
    if (ctl->accept_ev) event_del(ctl->accept_ev);
    event_del(ctl->accept_pause_ev);
    close(ctl->listen_fd);
    ctl->listen_fd = -1;
    unlink(ctl->server->socket_path);
}

/* No new connection or command; replies being written, and the answers of
 * calls under way, still go out. */
static void close_now(struct control *ctl)
{
    if (ctl->closing) return;
    ctl->closing = true;
    close_listener(ctl);
    deploy_watch_free(ctl->watch); /* a stop began: nothing is deployed any more */
    ctl->watch = NULL;
    event_del(ctl->autoscale_ev); /* nor scaled: the backends are about to stop */
    for (struct control_conn *c = ctl->conns, *next; c; c = next) {
        next = c->next;
        if (c->fd >= 0) conn_run(c);
    }
}

static void on_close(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct control *ctl = arg;
    close_now(ctl);
    pthread_mutex_lock(&ctl->mutex);
    ctl->closed = true;
    pthread_cond_broadcast(&ctl->closed_cond);
    pthread_mutex_unlock(&ctl->mutex);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct control *ctl = arg;
    close_now(ctl);
    on_answers(-1, 0, ctl);
    ctl->stopping = true;
    /* The backends are stopped: a call not answered by now never will be. */
    for (struct control_conn *c = ctl->conns, *next; c; c = next) {
        next = c->next;
        if (c->fd >= 0 && c->phase == PHASE_CALL) conn_close(c);
    }
    finish_if_done(ctl);
}

static void *control_main(void *arg)
{
    struct control *ctl = arg;
    live_stats_sample(ctl->server);
    event_base_loop(ctl->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static pthread_once_t threads_once = PTHREAD_ONCE_INIT;
/* Other threads wake the loop with event_active: libevent's locks on. */
static void enable_libevent_threads(void) { evthread_use_pthreads(); }

static struct control *control_new(struct server *s)
{
    pthread_once(&threads_once, enable_libevent_threads);
    struct control *ctl = calloc(1, sizeof *ctl);
    if (!ctl) return NULL;
    ctl->server = s;
    ctl->listen_fd = -1;
    pthread_mutex_init(&ctl->mutex, NULL);
    pthread_cond_init(&ctl->closed_cond, NULL);
    ctl->base = event_base_new();
    if (ctl->base) {
        ctl->accept_pause_ev = evtimer_new(ctl->base, on_accept_pause_over, ctl);
        ctl->sample_ev = event_new(ctl->base, -1, EV_PERSIST, on_sample, ctl);
        ctl->autoscale_ev = event_new(ctl->base, -1, EV_PERSIST, on_autoscale, ctl);
        ctl->answers_ev = event_new(ctl->base, -1, 0, on_answers, ctl);
        ctl->close_ev = event_new(ctl->base, -1, 0, on_close, ctl);
        ctl->stop_ev = event_new(ctl->base, -1, 0, on_stop, ctl);
    }
    return ctl;
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

static bool control_listen(struct control *ctl, char *err, size_t errlen)
{
    const char *path = ctl->server->socket_path;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) {
        snprintf(err, errlen, "control socket path %s is too long (state dir too deep)", path);
        return false;
    }
    strcpy(addr.sun_path, path);
    if (!remove_stale_socket(path, err, errlen)) return false;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    mode_t old_mask = umask(0177); /* the socket is created 0600 */
    int rc = fd < 0 ? -1 : bind(fd, (struct sockaddr *)&addr, sizeof addr);
    umask(old_mask);
    if (rc == 0) ctl->listen_fd = fd;
    else if (fd >= 0) close(fd);
    if (rc != 0 || chmod(path, 0600) != 0 || listen(fd, 64) != 0) {
        snprintf(err, errlen, "control socket %s: %s", path, strerror(errno));
        return false;
    }
    return true;
}

bool control_start(struct server *s, char *err, size_t errlen)
{
    struct control *ctl = control_new(s);
    s->control = ctl;
    if (!ctl || !ctl->base || !ctl->accept_pause_ev || !ctl->sample_ev || !ctl->autoscale_ev ||
        !ctl->answers_ev ||
        !ctl->close_ev || !ctl->stop_ev) {
        snprintf(err, errlen, "out of memory for the control socket");
        return false;
    }
    if (!control_listen(ctl, err, errlen)) return false;
    ctl->accept_ev = event_new(ctl->base, ctl->listen_fd, EV_READ | EV_PERSIST, on_accept, ctl);
    if (!ctl->accept_ev) {
        snprintf(err, errlen, "out of memory for the control socket");
        return false;
    }
    event_add(ctl->accept_ev, NULL);
    arm(ctl->sample_ev, 1);
    struct timeval tick = {0, AUTOSCALE_TICK_MS * 1000};
    event_add(ctl->autoscale_ev, &tick);
    if (s->options.watch_file) {
        ctl->watch = deploy_watch_start(ctl->base, s, s->options.watch_file,
                                        s->options.deploy_file ? &s->watch_mark : NULL);
        if (!ctl->watch) {
            snprintf(err, errlen, "out of memory for --watch");
            return false;
        }
    }
    pthread_mutex_lock(&answers_mutex);
    answers_to = ctl;
    pthread_mutex_unlock(&answers_mutex);
    if (pthread_create(&ctl->thread, NULL, control_main, ctl) != 0) {
        snprintf(err, errlen, "cannot start the control thread");
        return false;
    }
    ctl->thread_started = true;
    return true;
}

void control_close(struct server *s)
{
    struct control *ctl = s->control;
    if (!ctl || !ctl->thread_started) return;
    pthread_mutex_lock(&ctl->mutex);
    event_active(ctl->close_ev, EV_READ, 0);
    while (!ctl->closed) pthread_cond_wait(&ctl->closed_cond, &ctl->mutex);
    pthread_mutex_unlock(&ctl->mutex);
}

void control_stop(struct server *s)
{
    struct control *ctl = s->control;
    if (!ctl) return;
    if (ctl->thread_started) {
        event_active(ctl->stop_ev, EV_READ, 0);
        pthread_join(ctl->thread, NULL);
        live_stats_free();
    }
    pthread_mutex_lock(&answers_mutex);
    answers_to = NULL;
    struct control_answer *late = ctl->answers;
    pthread_mutex_unlock(&answers_mutex);
    while (late) {
        struct control_answer *next = late->next;
        msgpack_sbuffer_destroy(&late->frame);
        free(late);
        late = next;
    }
    while (ctl->conns) conn_free(ctl->conns);
    if (ctl->base) {
        close_listener(ctl);
        struct event *events[] = {ctl->accept_ev, ctl->accept_pause_ev, ctl->sample_ev,
                                  ctl->autoscale_ev, ctl->answers_ev, ctl->close_ev, ctl->stop_ev};
        for (size_t i = 0; i < sizeof events / sizeof *events; i++)
            if (events[i]) event_free(events[i]);
        event_base_free(ctl->base);
    }
    pthread_mutex_destroy(&ctl->mutex);
    pthread_cond_destroy(&ctl->closed_cond);
    free(ctl);
    s->control = NULL;
}
