/* histogram.h - a log-linear latency histogram in microseconds (the
 * HdrHistogram layout): exact below 1024 µs, then 512 sub-buckets per power
 * of two (0.2% precision), up to 2^32 µs (71 minutes), in fixed memory. */
#ifndef SERVE_BENCH_HISTOGRAM_H
#define SERVE_BENCH_HISTOGRAM_H

#include <stdint.h>

#define LAT_BUCKETS (24 * 512)

struct latency_histogram {
    uint64_t counts[LAT_BUCKETS];
    uint64_t total;
    uint64_t sum_us;
    uint64_t max_us;
};

void lat_record(struct latency_histogram *h, uint64_t us);
void lat_merge(struct latency_histogram *into, const struct latency_histogram *from);
/* The value at quantile q (0..1): the highest value of its bucket. */
uint64_t lat_quantile(const struct latency_histogram *h, double q);
double lat_mean(const struct latency_histogram *h);

#endif
