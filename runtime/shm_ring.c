/* shm_ring.c - a message stream in shared memory (see shm_ring.h). */
#include "shm_ring.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"

/* A writer waiting for room asks whether its reader still lives this often. */
#define ROOM_WAIT_SLICE_NS (50ull * 1000 * 1000)

size_t shm_ring_size(uint32_t capacity)
{
    return sizeof(struct shm_ring) + capacity;
}

void shm_ring_init(struct shm_ring *ring, uint32_t capacity)
{
    atomic_init(&ring->head, 0);
    atomic_init(&ring->tail, 0);
    atomic_init(&ring->reader_sleeps, 0);
    atomic_init(&ring->writer_sleeps, 0);
    atomic_init(&ring->data.seq, 0);
    atomic_init(&ring->room.seq, 0);
    ring->data.shared = true;
    ring->room.shared = true;
    ring->capacity = capacity;
}

void shm_ring_end_init(struct shm_ring_end *end, struct shm_ring *ring, int wake_fd,
                       bool (*peer_gone)(void *), void *peer_arg)
{
    end->ring = ring;
    end->wake_fd = wake_fd;
    pthread_mutex_init(&end->lock, NULL);
    end->pending = atomic_load(&ring->head);
    end->consumed = end->released = atomic_load(&ring->tail);
    end->peer_gone = peer_gone;
    end->peer_arg = peer_arg;
}

void shm_ring_end_destroy(struct shm_ring_end *end)
{
    pthread_mutex_destroy(&end->lock);
}

void shm_ring_lock(struct shm_ring_end *end) { pthread_mutex_lock(&end->lock); }
void shm_ring_unlock(struct shm_ring_end *end) { pthread_mutex_unlock(&end->lock); }

static void wake_reader(struct shm_ring_end *end)
{
    struct shm_ring *ring = end->ring;
    if (!atomic_load(&ring->reader_sleeps) || !atomic_exchange(&ring->reader_sleeps, 0)) return;
    if (end->wake_fd >= 0) {
        uint64_t one = 1;
        ssize_t ignored = write(end->wake_fd, &one, sizeof one);
        (void)ignored;
    } else {
        park_wake(&ring->data);
    }
}

/* Publishes what was written and wakes a sleeping reader. The store and the
 * load of reader_sleeps are sequentially consistent, as are the reader's
 * store of reader_sleeps and load of head: one of the two sees the other. */
static void publish(struct shm_ring_end *end)
{
    if (atomic_load_explicit(&end->ring->head, memory_order_relaxed) == end->pending) return;
    atomic_store(&end->ring->head, end->pending);
    wake_reader(end);
}

static size_t room(const struct shm_ring_end *end)
{
    uint64_t tail = atomic_load_explicit(&end->ring->tail, memory_order_acquire);
    return end->ring->capacity - (size_t)(end->pending - tail);
}

size_t shm_ring_room(const struct shm_ring_end *end) { return room(end); }

static bool wait_room(struct shm_ring_end *end)
{
    struct shm_ring *ring = end->ring;
    publish(end); /* the reader can only make room by reading what we wrote */
    for (;;) {
        if (room(end) > 0) return true;
        unsigned seq = park_prepare(&ring->room);
        atomic_store(&ring->writer_sleeps, 1);
        /* Sequentially consistent, as the reader's store of the tail and
         * load of writer_sleeps: one of the two sees the other. */
        if (end->ring->capacity - (size_t)(end->pending - atomic_load(&ring->tail)) > 0) {
            atomic_store(&ring->writer_sleeps, 0);
            return true;
        }
        park_wait(&ring->room, seq, serve__now_ns() + ROOM_WAIT_SLICE_NS);
        atomic_store(&ring->writer_sleeps, 0);
        if (room(end) == 0 && end->peer_gone && end->peer_gone(end->peer_arg)) return false;
    }
}

bool shm_ring_write(struct shm_ring_end *end, const void *data, size_t len)
{
    struct shm_ring *ring = end->ring;
    const unsigned char *p = data;
    while (len) {
        size_t free_bytes = room(end);
        if (free_bytes == 0) {
            if (!wait_room(end)) return false;
            continue;
        }
        size_t at = (size_t)(end->pending & (ring->capacity - 1));
        size_t chunk = ring->capacity - at;
        if (chunk > free_bytes) chunk = free_bytes;
        if (chunk > len) chunk = len;
        memcpy(ring->bytes + at, p, chunk);
        end->pending += chunk;
        p += chunk;
        len -= chunk;
    }
    return true;
}

bool shm_ring_begin(struct shm_ring_end *end, uint32_t type, uint32_t len)
{
    struct shm_ring_header h = {.type = type, .len = len};
    return shm_ring_write(end, &h, sizeof h);
}

bool shm_ring_end_message(struct shm_ring_end *end)
{
    publish(end);
    return true;
}

bool shm_ring_send(struct shm_ring_end *end, uint32_t type, const void *data, uint32_t len)
{
    shm_ring_lock(end);
    bool ok = shm_ring_begin(end, type, len) && shm_ring_write(end, data, len) &&
              shm_ring_end_message(end);
    shm_ring_unlock(end);
    return ok;
}

size_t shm_ring_readable(const struct shm_ring_end *end)
{
    return (size_t)(atomic_load_explicit(&end->ring->head, memory_order_acquire) - end->consumed);
}

/* Publishes the tail and wakes a writer waiting for room. */
static void release(struct shm_ring_end *end)
{
    struct shm_ring *ring = end->ring;
    if (end->released == end->consumed) return;
    atomic_store(&ring->tail, end->consumed);
    end->released = end->consumed;
    if (atomic_load(&ring->writer_sleeps) && atomic_exchange(&ring->writer_sleeps, 0))
        park_wake(&ring->room);
}

bool shm_ring_read(struct shm_ring_end *end, void *out, size_t len,
                   bool (*wait)(struct shm_ring_end *end, void *arg), void *arg)
{
    struct shm_ring *ring = end->ring;
    unsigned char *p = out;
    while (len) {
        size_t avail = shm_ring_readable(end);
        if (avail == 0) {
            release(end); /* the writer may be waiting for this room */
            if (!wait(end, arg)) return false;
            continue;
        }
        size_t at = (size_t)(end->consumed & (ring->capacity - 1));
        size_t chunk = ring->capacity - at;
        if (chunk > avail) chunk = avail;
        if (chunk > len) chunk = len;
        memcpy(p, ring->bytes + at, chunk);
        end->consumed += chunk;
        p += chunk;
        len -= chunk;
        if (chunk == avail || end->consumed - end->released >= ring->capacity / 4) release(end);
    }
    return true;
}

bool shm_ring_reader_sleep(struct shm_ring_end *end)
{
    release(end);
    atomic_store(&end->ring->reader_sleeps, 1);
    /* Sequentially consistent, as the writer's store of head and load of
     * reader_sleeps (publish). */
    if (atomic_load(&end->ring->head) == end->consumed) return true;
    atomic_store(&end->ring->reader_sleeps, 0);
    return false;
}

void shm_ring_reader_awake(struct shm_ring_end *end)
{
    atomic_store(&end->ring->reader_sleeps, 0);
}

bool shm_ring_wait_futex(struct shm_ring_end *end, void *unused)
{
    (void)unused;
    unsigned seq = park_prepare(&end->ring->data);
    if (shm_ring_reader_sleep(end)) park_wait(&end->ring->data, seq, 0);
    shm_ring_reader_awake(end);
    return true;
}
