/* live_stats.h - figures over the last 10 seconds for `serve status`.
 *
 * The control thread samples the counters that /metrics shows once a
 * second into a ring of 11 samples; status reports the differences between
 * the newest and the oldest. Nothing is added to the request path. */
#ifndef SERVE_RUNTIME_LIVE_STATS_H
#define SERVE_RUNTIME_LIVE_STATS_H

#include <msgpack.h>

struct server;

void live_stats_sample(struct server *s);
/* Packs {"window_s": W, "backends": {NAME: {...}}, "endpoints": {NAME: {...}}}. */
void live_stats_pack(msgpack_packer *pk);
void live_stats_free(void);

#endif
