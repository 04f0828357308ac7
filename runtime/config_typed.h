/* config_typed.h - what the runtime needs of the typed config getters:
 * their last refusal (serve_config_error) is the reason an init that
 * failed without serve_replica_fail reports. */
#ifndef SERVE_RUNTIME_CONFIG_TYPED_H
#define SERVE_RUNTIME_CONFIG_TYPED_H

#include "serve/plugin.h"

/* Before calling init or reconfigure: no refusal of an earlier call counts. */
void config_error_clear(void);
/* The calling thread's reason, as a getter would set it: a process
 * replica's kind hands on the reason its child reported. */
void config_error_set(const char *reason);

#endif
