/*
** check_report.c: ad_check_report_print, the one place the checker writes to a stream,
** and only to the one it is given.
*/
#include <stdio.h>

#include "../base/base.h"
#include "ad_check.h"

static const char *method_text(ad_check_method m)
{
    switch (m) {
    case AD_CHECK_SKIPPED_NONDIFF: return "skipped (nondiff)";
    case AD_CHECK_SKIPPED_INT32: return "skipped (int32)";
    case AD_CHECK_FINITE_DIFFERENCES: return "finite differences";
    case AD_CHECK_EXPECTED: return "expected pullback (feedback)";
    case AD_CHECK_STRUCTURAL: return "structural only (feedback)";
    }
    return "?";
}

static const char *outcome_text(ad_check_outcome o)
{
    switch (o) {
    case AD_CHECK_NOT_RUN: return "not finished";
    case AD_CHECK_PASSED: return "passed";
    case AD_CHECK_FAILED: return "FAILED";
    case AD_CHECK_SKIPPED: return "";
    }
    return "?";
}

static void print_angle(const ad_check_slot *s, FILE *f)
{
    switch (s->angle) {
    case AD_CHECK_ANGLE_NONE: break;
    case AD_CHECK_ANGLE_MEASURED: fprintf(f, "  angle %.1f deg", s->angle_degrees); break;
    case AD_CHECK_ANGLE_ZERO_REFERENCE:
        fprintf(f, "  angle n/a (reference is zero)");
        break;
    case AD_CHECK_ANGLE_ZERO_SLOT: fprintf(f, "  angle n/a (slot is zero)"); break;
    case AD_CHECK_ANGLE_OWN_SIGNAL: fprintf(f, "  angle n/a (rule ignores dy)"); break;
    }
}

static void print_slot(const ad_check_slot *s, int i, FILE *f)
{
    static const struct {
        unsigned bit;
        const char *name;
    } checks[] = {{AD_CHECKED_WRITES, "writes"}, {AD_CHECKED_ADDS, "adds"},
                  {AD_CHECKED_LINEAR, "linear"}, {AD_CHECKED_ALONE, "alone"},
                  {AD_CHECKED_BOUNDS, "bounds"}, {AD_CHECKED_VALUES, "values"}};
    fprintf(f, "  input %d  %s", i, method_text(s->method));
    if (s->outcome != AD_CHECK_SKIPPED) {
        fprintf(f, "  %s ", outcome_text(s->outcome));
        for (size_t k = 0; k < sizeof checks / sizeof checks[0]; k++)
            if (s->passed & checks[k].bit)
                fprintf(f, " %s", checks[k].name);
        if (s->method == AD_CHECK_FINITE_DIFFERENCES || s->method == AD_CHECK_EXPECTED)
            fprintf(f, "  max rel err %.2g", s->max_rel_err);
        print_angle(s, f);
    }
    fputc('\n', f);
}

ad_status ad_check_report_print(const ad_check_report *report, FILE *stream)
{
    if (!report || !stream)
        return ad_fail(AD_ERR_NULL, "ad_check_report_print: %s is NULL",
                       report ? "stream" : "report");
    int differentiable = 0;
    for (int i = 0; i < report->n_slots && i < AD_MAX_INPUTS; i++)
        differentiable += report->slot[i].outcome != AD_CHECK_SKIPPED;
    fprintf(stream, "ad_rule_check %s: %d of %d differentiable slots passed\n",
            report->fn_name ? report->fn_name : "(unnamed function)",
            report->slots_checked, differentiable);
    for (int i = 0; i < report->n_slots && i < AD_MAX_INPUTS; i++)
        print_slot(&report->slot[i], i, stream);
    if (ferror(stream))
        return ad_fail(AD_ERR_IO, "ad_check_report_print: writing to the stream failed");
    return AD_OK;
}
