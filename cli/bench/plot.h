/* plot.h - latency against throughput as a standalone SVG file. */
#ifndef SERVE_BENCH_PLOT_H
#define SERVE_BENCH_PLOT_H

#include <stdbool.h>
#include <stddef.h>

struct plot_point {
    char label[32];   /* "c=16", "rate=2000" */
    double throughput;
    double p50_ms, p99_ms;
};

/* Writes the plot; slo_ms > 0 draws the SLO line and rings `best` (the
 * point to mark, or -1). false with errno when the file cannot be written. */
bool plot_write(const char *path, const char *title, const struct plot_point *points,
                size_t count, double slo_ms, long best);

#endif
