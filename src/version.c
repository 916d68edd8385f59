/* version.c: the run-time version, to compare with the header's AD_VERSION_STRING. */
#include "ad.h"

const char *ad_version(void)
{
    return AD_VERSION_STRING;
}
