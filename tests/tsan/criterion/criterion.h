/*
** tests/tsan/criterion/criterion.h: a stand-in for <criterion/criterion.h>, used only
** by scripts/tsan to run the thread suites under ThreadSanitizer.
**
** Criterion's runner cannot start in a TSan process: it places its BoxFort arena at a
** random address in 0x2000'0000'0000..0x7f00'0000'0000, which TSan has almost wholly
** reserved for shadow memory, so it aborts ("Could not initialize inheritable arena")
** or crashes before the first test (Snaipe/Criterion#274). The suites compile against
** this header unchanged: Test() registers the function, each test runs in a fork of
** its own (fresh process state, as under Criterion), and the asserts print what failed
** (cr_assert_* ends the test, cr_expect_* lets it go on). tests/tsan/runner.c is main.
*/
#ifndef TSAN_CRITERION_SHIM_H
#define TSAN_CRITERION_SHIM_H

#include <stdbool.h> /* as Criterion's header: suites use bool without it */
#include <stddef.h>
#include <string.h>

typedef void (*crs_test_fn)(void);
void crs_register(const char *suite, const char *name, crs_test_fn fn);
/* Reports a failed check (fmt and what follows: the caller's optional message). */
void crs_fail(int fatal, const char *file, int line, const char *text, const char *fmt, ...);

/* Test(suite, name[, .options]): the options (a timeout) are ignored. */
#define Test(...) CRS_TEST(__VA_ARGS__, 0)
#define CRS_TEST(suite, name, ...)                                                      \
    static void suite##_##name##_impl(void);                                            \
    __attribute__((constructor)) static void suite##_##name##_reg(void)                 \
    {                                                                                   \
        crs_register(#suite, #name, suite##_##name##_impl);                             \
    }                                                                                   \
    static void suite##_##name##_impl(void)

#define CRS_CHECK(fatal, cond, text, ...)                                               \
    do {                                                                                \
        if (!(cond))                                                                    \
            crs_fail((fatal), __FILE__, __LINE__, (text), __VA_ARGS__);                 \
    } while (0)
#define CRS_BOOL(fatal, c, ...) CRS_CHECK(fatal, (c), #c, __VA_ARGS__)
#define CRS_NOT(fatal, c, ...) CRS_CHECK(fatal, !(c), "!(" #c ")", __VA_ARGS__)
#define CRS_CMP(fatal, op, a, b, ...) CRS_CHECK(fatal, (a) op (b), #a " " #op " " #b, __VA_ARGS__)
#define CRS_STR(fatal, a, b, ...)                                                       \
    CRS_CHECK(fatal, strcmp((a), (b)) == 0, #a " equals " #b, __VA_ARGS__)

#define cr_assert(...) CRS_BOOL(1, __VA_ARGS__, "")
#define cr_expect(...) CRS_BOOL(0, __VA_ARGS__, "")
#define cr_assert_not(...) CRS_NOT(1, __VA_ARGS__, "")
#define cr_expect_not(...) CRS_NOT(0, __VA_ARGS__, "")
#define cr_assert_eq(...) CRS_CMP(1, ==, __VA_ARGS__, "")
#define cr_expect_eq(...) CRS_CMP(0, ==, __VA_ARGS__, "")
#define cr_assert_neq(...) CRS_CMP(1, !=, __VA_ARGS__, "")
#define cr_expect_neq(...) CRS_CMP(0, !=, __VA_ARGS__, "")
#define cr_assert_lt(...) CRS_CMP(1, <, __VA_ARGS__, "")
#define cr_expect_lt(...) CRS_CMP(0, <, __VA_ARGS__, "")
#define cr_assert_leq(...) CRS_CMP(1, <=, __VA_ARGS__, "")
#define cr_expect_leq(...) CRS_CMP(0, <=, __VA_ARGS__, "")
#define cr_assert_gt(...) CRS_CMP(1, >, __VA_ARGS__, "")
#define cr_expect_gt(...) CRS_CMP(0, >, __VA_ARGS__, "")
#define cr_assert_geq(...) CRS_CMP(1, >=, __VA_ARGS__, "")
#define cr_expect_geq(...) CRS_CMP(0, >=, __VA_ARGS__, "")
#define cr_assert_null(...) CRS_BOOL(1, (CRS_FIRST(__VA_ARGS__, 0)) == NULL, "")
#define cr_expect_null(...) CRS_BOOL(0, (CRS_FIRST(__VA_ARGS__, 0)) == NULL, "")
#define cr_assert_not_null(...) CRS_BOOL(1, (CRS_FIRST(__VA_ARGS__, 0)) != NULL, "")
#define cr_expect_not_null(...) CRS_BOOL(0, (CRS_FIRST(__VA_ARGS__, 0)) != NULL, "")
#define cr_assert_str_eq(...) CRS_STR(1, __VA_ARGS__, "")
#define cr_expect_str_eq(...) CRS_STR(0, __VA_ARGS__, "")
#define CRS_FIRST(a, ...) a

#endif /* TSAN_CRITERION_SHIM_H */
