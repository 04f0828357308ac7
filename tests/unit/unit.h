/* unit.h - what a unit test file includes: TEST_IMPL and typed assertions.
 *
 * A test is `TEST_IMPL(name) { ...; return 0; }`, listed in test-list.h.
 * The runner (runner.c) runs each test in a child process of its own, so a
 * test may crash, hang or leave threads behind without harming the others.
 * A failed assertion prints where and what it saw, then aborts the child,
 * which the runner reports as that test's failure. */
#ifndef SERVE_TESTS_UNIT_H
#define SERVE_TESTS_UNIT_H

#include <string.h>

#define TEST_IMPL(name) int unit_test_##name(void)

/* Prints "file:line: message" on stderr and aborts. In runner.c. */
_Noreturn void unit_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define UNIT_FAIL(...) unit_fail(__FILE__, __LINE__, __VA_ARGS__)

#define ASSERT(expr)                                                                    \
    do {                                                                                \
        if (!(expr)) UNIT_FAIL("assertion failed: %s", #expr);                          \
    } while (0)

#define ASSERT_EQ(a, b)                                                                 \
    do {                                                                                \
        long long a_ = (long long)(a), b_ = (long long)(b);                             \
        if (a_ != b_) UNIT_FAIL("%s == %s: %lld != %lld", #a, #b, a_, b_);              \
    } while (0)

#define ASSERT_PTR_EQ(a, b)                                                             \
    do {                                                                                \
        const void *a_ = (a), *b_ = (b);                                                \
        if (a_ != b_) UNIT_FAIL("%s == %s: %p != %p", #a, #b, a_, b_);                  \
    } while (0)

#define ASSERT_NULL(a) ASSERT_PTR_EQ(a, NULL)

#define ASSERT_NOT_NULL(a)                                                              \
    do {                                                                                \
        if ((a) == NULL) UNIT_FAIL("%s is NULL", #a);                                   \
    } while (0)

/* Two strings, either of which may be NULL: equal when both are NULL or
 * both hold the same bytes. */
#define ASSERT_STR_EQ(a, b)                                                             \
    do {                                                                                \
        const char *a_ = (a), *b_ = (b);                                                \
        if ((a_ == NULL) != (b_ == NULL) || (a_ && strcmp(a_, b_) != 0))                \
            UNIT_FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)",         \
                      b_ ? b_ : "(null)");                                              \
    } while (0)

#endif
