/* crash_report.c - the fatal-signal handler and its per-thread context
 * (see crash_report.h). */
#include "crash_report.h"

#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "signal_name.h"

/* AddressSanitizer gives every thread an alternate signal stack of its own
 * and unmaps "its" stack when the thread ends: one of ours in its place
 * would be unmapped twice. So under ASan threads keep ASan's stacks. Our
 * handlers are installed in every build (ASan lets a program handle SEGV
 * itself), so that a crash takes the same path there: a report, a death by
 * the signal, a restart by the supervisor. */
#if defined(__SANITIZE_ADDRESS__)
#define SANITIZER_OWNS_ALTSTACKS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZER_OWNS_ALTSTACKS 1
#endif
#endif
#ifndef SANITIZER_OWNS_ALTSTACKS
#define SANITIZER_OWNS_ALTSTACKS 0
#endif

static const int fatal_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};

static _Thread_local const char *context_backend;
static _Thread_local int context_replica;
static _Thread_local bool thread_has_altstack;

/* The address ranges of the objects loaded when the handlers were
 * installed (serve, libc, libevent...). A crashing frame outside all of
 * them is in an object loaded later: a plugin or a library it brought. */
#define MAX_STARTUP_RANGES 256
static struct {
    uintptr_t lo, hi;
} startup_ranges[MAX_STARTUP_RANGES];
static size_t startup_range_count;

static int note_object(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size, (void)arg;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || startup_range_count == MAX_STARTUP_RANGES) continue;
        uintptr_t lo = (uintptr_t)info->dlpi_addr + ph->p_vaddr;
        startup_ranges[startup_range_count].lo = lo;
        startup_ranges[startup_range_count].hi = lo + ph->p_memsz;
        startup_range_count++;
    }
    return 0;
}

static bool loaded_at_startup(uintptr_t pc)
{
    for (size_t i = 0; i < startup_range_count; i++)
        if (pc >= startup_ranges[i].lo && pc < startup_ranges[i].hi) return true;
    return false;
}

/* -- formatting without malloc or stdio -------------------------------- */

struct line {
    char text[1536];
    size_t len;
};

static void put(struct line *l, const char *s)
{
    while (*s && l->len < sizeof l->text - 1) l->text[l->len++] = *s++;
}

static void put_uint(struct line *l, uintmax_t v, unsigned base, int width)
{
    char digits[32];
    int n = 0;
    do {
        digits[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v && n < (int)sizeof digits);
    while (n < width && n < (int)sizeof digits) digits[n++] = '0';
    while (n > 0 && l->len < sizeof l->text - 1) l->text[l->len++] = digits[--n];
}

/* The log's timestamp (log.c writes it with gmtime_r and strftime, neither
 * of which a signal handler may call): days to a civil date by hand. */
static void put_timestamp(struct line *l)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t days = now.tv_sec / 86400, secs = now.tv_sec % 86400;
    /* Howard Hinnant's civil_from_days. */
    days += 719468;
    int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    int64_t doe = days - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t day = doy - (153 * mp + 2) / 5 + 1;
    int64_t month = mp < 10 ? mp + 3 : mp - 9;
    int64_t year = yoe + era * 400 + (month <= 2);
    put_uint(l, (uintmax_t)year, 10, 4);
    put(l, "-");
    put_uint(l, (uintmax_t)month, 10, 2);
    put(l, "-");
    put_uint(l, (uintmax_t)day, 10, 2);
    put(l, "T");
    put_uint(l, (uintmax_t)(secs / 3600), 10, 2);
    put(l, ":");
    put_uint(l, (uintmax_t)(secs / 60 % 60), 10, 2);
    put(l, ":");
    put_uint(l, (uintmax_t)(secs % 60), 10, 2);
    put(l, ".");
    put_uint(l, (uintmax_t)(now.tv_nsec / 1000000), 10, 3);
    put(l, "Z ");
}

static void write_line(struct line *l)
{
    l->text[l->len++] = '\n';
    for (size_t done = 0; done < l->len;) {
        ssize_t n = write(STDERR_FILENO, l->text + done, l->len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        done += (size_t)n;
    }
}

/* -- where it crashed ---------------------------------------------------- */

static uintptr_t faulting_pc(const void *ucontext)
{
    const ucontext_t *uc = ucontext;
    if (!uc) return 0;
#if defined(__x86_64__)
    return (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
    return (uintptr_t)uc->uc_mcontext.pc;
#else
    return 0;
#endif
}

/* Append-only, so that the signal handler reads it without a lock: an
 * entry is complete before the count that shows it is published. */
#define PLUGIN_NOTES 128
static struct {
    const char *loaded, *shown;
} plugin_notes[PLUGIN_NOTES];
static atomic_int plugin_note_count;
static pthread_mutex_t plugin_notes_lock = PTHREAD_MUTEX_INITIALIZER;

void crash_report_note_plugin(const char *loaded, const char *shown)
{
    if (!loaded || !shown || strcmp(loaded, shown) == 0) return;
    pthread_mutex_lock(&plugin_notes_lock);
    int n = atomic_load_explicit(&plugin_note_count, memory_order_relaxed);
    bool known = false;
    for (int i = 0; i < n && !known; i++) known = strcmp(plugin_notes[i].loaded, loaded) == 0;
    if (!known && n < PLUGIN_NOTES) {
        plugin_notes[n].loaded = strdup(loaded);
        plugin_notes[n].shown = strdup(shown);
        if (plugin_notes[n].loaded && plugin_notes[n].shown)
            atomic_store_explicit(&plugin_note_count, n + 1, memory_order_release);
    }
    pthread_mutex_unlock(&plugin_notes_lock);
}

static const char *shown_name(const char *loaded)
{
    int n = atomic_load_explicit(&plugin_note_count, memory_order_acquire);
    for (int i = 0; i < n; i++)
        if (strcmp(plugin_notes[i].loaded, loaded) == 0) return plugin_notes[i].shown;
    return loaded;
}

/* The file of the first object loaded after start-up found at the faulting
 * PC or, going out, in the backtrace: the plugin whose code crashed, even
 * when it crashed inside libc (a memcpy given NULL). NULL: none. */
static const char *crashing_plugin(uintptr_t pc, void *const *frames, int n)
{
    for (int i = -1; i < n; i++) {
        /* A return address is one past its call: step back into the call. */
        uintptr_t at = i < 0 ? pc : (uintptr_t)frames[i] - 1;
        if (!at || loaded_at_startup(at)) continue;
        Dl_info info;
        if (dladdr((void *)at, &info) && info.dli_fname && info.dli_fname[0])
            return shown_name(info.dli_fname);
    }
    return NULL;
}

static void on_fatal_signal(int sig, siginfo_t *info, void *ucontext)
{
    int saved_errno = errno;
    void *frames[64];
    int n = backtrace(frames, 64);

    struct line l = {.len = 0};
    put_timestamp(&l);
    put(&l, "error fatal signal ");
    put(&l, signal_name(sig));
    if (context_backend) {
        put(&l, " in backend=");
        put(&l, context_backend);
        put(&l, " replica=");
        put_uint(&l, (uintmax_t)(context_replica < 0 ? 0 : context_replica), 10, 1);
    } else {
        const char *plugin = crashing_plugin(faulting_pc(ucontext), frames, n);
        put(&l, plugin ? " in a thread of plugin " : " in serve itself");
        if (plugin) put(&l, plugin);
    }
    write_line(&l);

    l.len = 0;
    put_timestamp(&l);
    put(&l, "error backtrace of the crashing thread");
    /* si_code > 0: the kernel sent it for a fault, and si_addr is set. */
    if (info && info->si_code > 0 && (sig == SIGSEGV || sig == SIGBUS)) {
        put(&l, " (fault address 0x");
        put_uint(&l, (uintmax_t)(uintptr_t)info->si_addr, 16, 1);
        put(&l, ")");
    }
    put(&l, ":");
    write_line(&l);
    backtrace_symbols_fd(frames, n, STDERR_FILENO);

    /* SA_RESETHAND made the action the default one again. The signal is
     * blocked while this handler runs: it is delivered, and kills, as soon
     * as the handler returns (a fault would also recur at the faulting
     * instruction). */
    errno = saved_errno;
    raise(sig);
}

/* -- alternate signal stacks ---------------------------------------------- */

static pthread_key_t altstack_key;
static pthread_once_t altstack_once = PTHREAD_ONCE_INIT;
static size_t altstack_size;

static void release_altstack(void *stack)
{
    stack_t off = {.ss_flags = SS_DISABLE};
    sigaltstack(&off, NULL);
    munmap(stack, altstack_size);
}

static void create_altstack_key(void)
{
    /* Room for backtrace and dladdr; SIGSTKSZ alone is 8 KiB on some
     * libcs. */
    long min = sysconf(_SC_SIGSTKSZ);
    altstack_size = 64 * 1024;
    if (min > 0 && (size_t)min * 4 > altstack_size) altstack_size = (size_t)min * 4;
    pthread_key_create(&altstack_key, release_altstack);
}

void crash_report_thread_start(void)
{
    if (SANITIZER_OWNS_ALTSTACKS || thread_has_altstack) return;
    pthread_once(&altstack_once, create_altstack_key);
    void *stack = mmap(NULL, altstack_size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) return;
    stack_t ss = {.ss_sp = stack, .ss_size = altstack_size};
    if (sigaltstack(&ss, NULL) != 0) {
        munmap(stack, altstack_size);
        return;
    }
    thread_has_altstack = true;
    pthread_setspecific(altstack_key, stack);
}

void crash_report_set_context(const char *backend, int replica)
{
    context_backend = backend;
    context_replica = replica;
    crash_report_thread_start();
}

void crash_report_install(void)
{
    /* The first backtrace loads libgcc's unwinder (dlopen, malloc): done
     * now, not in a handler. */
    void *warm[1];
    backtrace(warm, 1);
    startup_range_count = 0;
    dl_iterate_phdr(note_object, NULL);
    crash_report_thread_start();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fatal_signal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof fatal_signals / sizeof fatal_signals[0]; i++)
        sigaction(fatal_signals[i], &sa, NULL);
}
