/* A shared object without serve_plugin_entry. */
#include <serve/plugin.h>

SERVE_EXPORT int not_a_plugin(void);
SERVE_EXPORT int not_a_plugin(void) { return 42; }
