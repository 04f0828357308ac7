/* replica_channel.c - the mapping a process replica shares with its server,
 * and the message framing on its rings (see replica_channel.h). */
#include "replica_channel.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Room for a few batches of requests, or answers, without the writer
 * waiting; anything larger streams through. Pages of the memfd that were
 * never written take no memory. */
#define WORK_RING_BYTES (1u << 20)
#define RESULTS_RING_BYTES (256u << 10)
#define ANSWERS_RING_BYTES (1u << 20)

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

struct layout {
    size_t work, results, answers, total;
};

static struct layout layout(void)
{
    struct layout l;
    l.work = align64(sizeof(struct replica_shared));
    l.results = l.work + align64(shm_ring_size(WORK_RING_BYTES));
    l.answers = l.results + align64(shm_ring_size(RESULTS_RING_BYTES));
    l.total = l.answers + align64(shm_ring_size(ANSWERS_RING_BYTES));
    return l;
}

static bool map(struct replica_channel *c, int memfd)
{
    struct layout l = layout();
    void *m = mmap(NULL, l.total, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (m == MAP_FAILED) return false;
    c->memfd = memfd;
    c->map = m;
    c->map_len = l.total;
    c->shared = m;
    c->work = (struct shm_ring *)((char *)m + l.work);
    c->results = (struct shm_ring *)((char *)m + l.results);
    c->answers = (struct shm_ring *)((char *)m + l.answers);
    return true;
}

bool replica_channel_create(struct replica_channel *c)
{
    int fd = memfd_create("serve-replica", MFD_CLOEXEC);
    if (fd < 0) return false;
    if (ftruncate(fd, (off_t)layout().total) != 0 || !map(c, fd)) {
        int saved = errno;
        close(fd);
        errno = saved;
        return false;
    }
    atomic_init(&c->shared->batch_started_ns, 0);
    shm_ring_init(c->work, WORK_RING_BYTES);
    shm_ring_init(c->results, RESULTS_RING_BYTES);
    shm_ring_init(c->answers, ANSWERS_RING_BYTES);
    return true;
}

bool replica_channel_attach(struct replica_channel *c, int memfd)
{
    return map(c, memfd);
}

void replica_channel_unmap(struct replica_channel *c)
{
    if (c->map) munmap(c->map, c->map_len);
    if (c->memfd >= 0) close(c->memfd);
    c->map = NULL;
    c->memfd = -1;
}

void wire_reset(struct wire_out *w)
{
    w->len = 0;
    w->failed = false;
}

void wire_free(struct wire_out *w)
{
    free(w->buf);
    *w = (struct wire_out){0};
}

static void put(struct wire_out *w, const void *p, size_t n)
{
    if (w->failed) return;
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < w->len + n) cap *= 2;
        char *grown = realloc(w->buf, cap);
        if (!grown) {
            w->failed = true;
            return;
        }
        w->buf = grown;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

void wire_u32(struct wire_out *w, uint32_t v) { put(w, &v, sizeof v); }
void wire_u64(struct wire_out *w, uint64_t v) { put(w, &v, sizeof v); }

void wire_str(struct wire_out *w, const char *s)
{
    if (!s) s = "";
    size_t n = strlen(s);
    wire_u32(w, (uint32_t)n);
    put(w, s, n + 1);
}

struct wire_in wire_in_of(const struct wire_out *w)
{
    struct wire_in r = {w->buf, w->buf ? w->buf + w->len : NULL, false};
    return r;
}

static bool take(struct wire_in *r, void *out, size_t n)
{
    if (r->bad || !r->p || (size_t)(r->end - r->p) < n) {
        r->bad = true;
        memset(out, 0, n);
        return false;
    }
    memcpy(out, r->p, n);
    r->p += n;
    return true;
}

uint32_t wire_get_u32(struct wire_in *r)
{
    uint32_t v;
    take(r, &v, sizeof v);
    return v;
}

uint64_t wire_get_u64(struct wire_in *r)
{
    uint64_t v;
    take(r, &v, sizeof v);
    return v;
}

const char *wire_get_str(struct wire_in *r)
{
    uint32_t n = wire_get_u32(r);
    if (r->bad || !r->p || (size_t)(r->end - r->p) <= n || r->p[n] != '\0') {
        r->bad = true;
        return "";
    }
    const char *s = r->p;
    r->p += n + 1;
    return s;
}

bool channel_put(struct shm_ring_end *end, uint32_t type, const struct wire_out *head,
                 uint32_t count, const void *body, size_t body_len)
{
    size_t head_len = head ? head->len : 0;
    if ((head && head->failed) || head_len + body_len > UINT32_MAX - 64) return false;
    struct wire_prefix prefix = {.head_len = (uint32_t)head_len, .body_len = (uint32_t)body_len,
                                 .count = count};
    return shm_ring_begin(end, type, (uint32_t)(sizeof prefix + head_len + body_len)) &&
           shm_ring_write(end, &prefix, sizeof prefix) &&
           (!head_len || shm_ring_write(end, head->buf, head_len)) &&
           (!body_len || shm_ring_write(end, body, body_len));
}

bool channel_get(struct shm_ring_end *end, ring_wait_fn wait, void *arg, uint32_t *type,
                 struct wire_prefix *prefix, struct wire_out *head)
{
    struct shm_ring_header h;
    if (!shm_ring_read(end, &h, sizeof h, wait, arg) ||
        !shm_ring_read(end, prefix, sizeof *prefix, wait, arg))
        return false;
    *type = h.type;
    wire_reset(head);
    if (prefix->head_len) {
        /* Grown through put's rule, then filled from the ring. */
        if (head->cap < prefix->head_len) {
            char *grown = realloc(head->buf, prefix->head_len);
            if (!grown) return false;
            head->buf = grown;
            head->cap = prefix->head_len;
        }
        if (!shm_ring_read(end, head->buf, prefix->head_len, wait, arg)) return false;
        head->len = prefix->head_len;
    }
    return true;
}

bool channel_skip(struct shm_ring_end *end, size_t n, ring_wait_fn wait, void *arg)
{
    char scratch[4096];
    while (n) {
        size_t chunk = n < sizeof scratch ? n : sizeof scratch;
        if (!shm_ring_read(end, scratch, chunk, wait, arg)) return false;
        n -= chunk;
    }
    return true;
}
