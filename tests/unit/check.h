/* Minimal unit-test helpers: no framework. Each CHECK prints file:line and the
 * failed expression and counts the failure; a test's main returns
 * check_report(), non-zero when anything failed. Never hides a return. */
#ifndef CFAAS_TEST_CHECK_H
#define CFAAS_TEST_CHECK_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static int check_failures;
static int check_total;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        check_total++;                                                                             \
        if (!(cond)) {                                                                             \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

/* Integer equality, printing both values. */
#define CHECK_INT(got, want)                                                                       \
    do {                                                                                           \
        long long check_got_ = (long long)(got), check_want_ = (long long)(want);                  \
        check_total++;                                                                             \
        if (check_got_ != check_want_) {                                                           \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (got %lld, want %lld)\n", __FILE__,     \
                    __LINE__, #got, #want, check_got_, check_want_);                               \
        }                                                                                          \
    } while (0)

/* String equality; NULL only equals NULL. */
#define CHECK_STR(got, want)                                                                       \
    do {                                                                                           \
        const char *check_gs_ = (got), *check_ws_ = (want);                                        \
        check_total++;                                                                             \
        if ((check_gs_ == NULL) != (check_ws_ == NULL) ||                                          \
            (check_gs_ != NULL && strcmp(check_gs_, check_ws_) != 0)) {                            \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (got \"%s\", want \"%s\")\n", __FILE__, \
                    __LINE__, #got, #want, check_gs_ ? check_gs_ : "(null)",                       \
                    check_ws_ ? check_ws_ : "(null)");                                             \
        }                                                                                          \
    } while (0)

/* Substring presence. */
#define CHECK_CONTAINS(hay, needle)                                                                \
    do {                                                                                           \
        const char *check_h_ = (hay), *check_n_ = (needle);                                        \
        check_total++;                                                                             \
        if (check_h_ == NULL || strstr(check_h_, check_n_) == NULL) {                              \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: \"%s\" not in %s\n", __FILE__, __LINE__,         \
                    check_n_, #hay);                                                               \
        }                                                                                          \
    } while (0)

/* Prints the summary; returns the exit code of the test program. */
static inline int check_report(const char *name)
{
    fprintf(stderr, "%s: %d checks, %d failed\n", name, check_total, check_failures);
    return check_failures == 0 ? 0 : 1;
}

#endif
