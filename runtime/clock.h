/* clock.h - monotonic time in nanoseconds, the runtime's only time base. */
#ifndef SERVE_RUNTIME_CLOCK_H
#define SERVE_RUNTIME_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t serve__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline struct timespec serve__ns_to_timespec(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    return ts;
}

#endif
