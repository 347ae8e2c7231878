/* The checks of the C test programs of tests/c/: CHECK counts a condition and names a failing
 * one with its file and line; check_summary prints the line tests/_cbuild.py reads ("N checks,
 * M failed") and gives main's exit status. A program includes it once; the counters are its own. */
#ifndef GT_TESTS_CHECK_H
#define GT_TESTS_CHECK_H

#include <stdio.h>

static int checks, failures;

#define CHECK(cond)                                                         \
    do {                                                                    \
        checks++;                                                           \
        if (!(cond)) {                                                      \
            failures++;                                                     \
            printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);          \
        }                                                                   \
    } while (0)

static inline int check_summary(void)
{
    printf("%d checks, %d failed\n", checks, failures);
    return failures != 0;
}

#endif
