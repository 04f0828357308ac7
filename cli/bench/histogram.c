/* histogram.c - log-linear latency histogram (see histogram.h). */
#include "histogram.h"

static unsigned bucket_of(uint64_t us)
{
    if (us >= (1ull << 32)) us = (1ull << 32) - 1;
    if (us < 1024) return (unsigned)us;
    unsigned msb = 63u - (unsigned)__builtin_clzll(us);
    unsigned shift = msb - 9;               /* keeps 10 significant bits */
    return shift * 512 + (unsigned)(us >> shift);
}

static uint64_t highest_of(unsigned index)
{
    if (index < 1024) return index;
    unsigned shift = index / 512 - 1;
    uint64_t sub = index - shift * 512;
    return (sub << shift) + ((1ull << shift) - 1);
}

void lat_record(struct latency_histogram *h, uint64_t us)
{
    h->counts[bucket_of(us)]++;
    h->total++;
    h->sum_us += us;
    if (us > h->max_us) h->max_us = us;
}

void lat_merge(struct latency_histogram *into, const struct latency_histogram *from)
{
    for (unsigned i = 0; i < LAT_BUCKETS; i++) into->counts[i] += from->counts[i];
    into->total += from->total;
    into->sum_us += from->sum_us;
    if (from->max_us > into->max_us) into->max_us = from->max_us;
}

uint64_t lat_quantile(const struct latency_histogram *h, double q)
{
    if (!h->total) return 0;
    uint64_t rank = (uint64_t)(q * (double)h->total + 0.999999);
    if (rank < 1) rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < LAT_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = highest_of(i);
            return v < h->max_us ? v : h->max_us;
        }
    }
    return h->max_us;
}

double lat_mean(const struct latency_histogram *h)
{
    return h->total ? (double)h->sum_us / (double)h->total : 0;
}
