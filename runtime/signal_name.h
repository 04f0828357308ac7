/* signal_name.h - "SIGSEGV" for SIGSEGV, for log lines about deaths. */
#ifndef SERVE_RUNTIME_SIGNAL_NAME_H
#define SERVE_RUNTIME_SIGNAL_NAME_H

/* The signal's name ("SIGSEGV"), or "signal" for one without a name here.
 * A constant string: async-signal-safe, so a crash handler may call it. */
const char *signal_name(int sig);

#endif
