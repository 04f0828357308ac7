/* crash_report.h - a fatal signal leaves a report in the log.
 *
 * When a thread faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL) or aborts
 * (SIGABRT), the handler writes to the log (fd 2, see log.h) one line that
 * says where:
 *   error fatal signal SIGSEGV in backend=B replica=R
 *   error fatal signal SIGSEGV in a thread of plugin /path/x.so
 *   error fatal signal SIGSEGV in serve itself
 * then the crashing thread's backtrace, and the process dies of that same
 * signal, so that whoever waits for it (the supervisor, a replica's parent)
 * sees the real cause. The handler uses async-signal-safe calls only (and
 * dladdr, which is not on POSIX's list but takes no lock a crashing thread
 * is likely to hold). */
#ifndef SERVE_RUNTIME_CRASH_REPORT_H
#define SERVE_RUNTIME_CRASH_REPORT_H

/* Installs the handlers for the whole process and gives the calling thread
 * an alternate signal stack, so that a stack overflow is reported too.
 * Call once, from the main thread, before any plugin is loaded: objects
 * loaded later count as plugins in a report. */
void crash_report_install(void);

/* Names what the calling thread runs, for its crash report: `backend` (NULL:
 * none; the string must outlive the thread) and its replica index. Also
 * gives the thread an alternate signal stack. Call from the thread itself,
 * at its start. */
void crash_report_set_context(const char *backend, int replica);

/* A plugin file loaded as `loaded` (the server's private copy) that the
 * user knows as `shown`: a crash in its code names `shown`. Any thread; the
 * first 128 notes are kept. */
void crash_report_note_plugin(const char *loaded, const char *shown);

/* Gives the calling thread an alternate signal stack, released when the
 * thread ends; a no-op when it has one. For threads of serve that run no
 * replica (the HTTP I/O threads). */
void crash_report_thread_start(void);

#endif
