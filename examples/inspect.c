/*
** inspect.c: adtape-inspect FILE lists what a safetensors file holds, as safetensors'
** safe_open lets Python users see it: each tensor's name, dtype and shape in the
** header's order (those adtape cannot load too, marked with the reason), then the
** metadata. Names and strings are printed as JSON strings, so a name with a quote, a
** newline or a control character cannot break the columns or the terminal.
**
**     $ adtape-inspect bn.safetensors
**     bn.safetensors: 2 tensors, 20 bytes of data
**       "bn.weight"              F32  [3]
**       "bn.num_batches_tracked" I64  []  (adtape does not load I64)
**     metadata: 1 key
**       "format": "pt"
**
** Exit status: 0 on success; 1 when the file cannot be read or is not a valid
** safetensors file (adtape's message on stderr); 2 for a wrong command line.
*/
#include <stdio.h>
#include <string.h>

#include "ad.h"

/* The bytes of s written as a JSON string, quotes included. */
static size_t quoted_length(const char *s)
{
    size_t n = 2;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        n += *p == '"' || *p == '\\' || *p == '\n' || *p == '\t' ? 2 : *p < 0x20 ? 6 : 1;
    return n;
}

static void put_quoted(const char *s, size_t width)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", stdout);
        else if (*p == '\t')
            fputs("\\t", stdout);
        else if (*p < 0x20)
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
    putchar('"');
    for (size_t n = quoted_length(s); n < width; n++)
        putchar(' ');
}

static void put_entry(const ad_checkpoint_entry *e, size_t name_width, size_t dtype_width)
{
    fputs("  ", stdout);
    put_quoted(e->name, name_width + 1);
    printf("%-*s  [", (int)dtype_width, e->dtype);
    for (int d = 0; d < e->ndim; d++)
        printf("%s%lld", d ? ", " : "", (long long)e->shape[d]);
    putchar(']');
    if (!e->loadable && strcmp(e->dtype, "F32") && strcmp(e->dtype, "F64"))
        printf("  (adtape does not load %s)", e->dtype);
    else if (!e->loadable)
        printf("  (adtape does not load rank %d)", e->ndim);
    putchar('\n');
}

static void put_info(const char *path, const ad_checkpoint_info *info)
{
    size_t name_width = 0, dtype_width = 0;
    for (int i = 0; i < info->n_tensors; i++) {
        size_t n = quoted_length(info->tensors[i].name), d = strlen(info->tensors[i].dtype);
        name_width = n > name_width ? n : name_width;
        dtype_width = d > dtype_width ? d : dtype_width;
    }
    printf("%s: %d tensor%s, %llu bytes of data\n", path, info->n_tensors,
           info->n_tensors == 1 ? "" : "s", (unsigned long long)info->data_bytes);
    for (int i = 0; i < info->n_tensors; i++)
        put_entry(&info->tensors[i], name_width, dtype_width);
    if (!info->n_meta) {
        puts("metadata: none");
        return;
    }
    printf("metadata: %d key%s\n", info->n_meta, info->n_meta == 1 ? "" : "s");
    for (int i = 0; i < info->n_meta; i++) {
        fputs("  ", stdout);
        put_quoted(info->meta[i].key, 0);
        fputs(": ", stdout);
        put_quoted(info->meta[i].value, 0);
        putchar('\n');
    }
}

int main(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        puts("usage: adtape-inspect FILE\nLists the tensors (name, dtype, shape) and the "
             "metadata of a safetensors file.");
        return 0;
    }
    if (argc != 2) {
        fputs("usage: adtape-inspect FILE\n", stderr);
        return 2;
    }
    ad_checkpoint_info *info;
    if (ad_checkpoint_inspect(argv[1], &info) != AD_OK) {
        fprintf(stderr, "adtape-inspect: %s\n", ad_last_error());
        return 1;
    }
    put_info(argv[1], info);
    ad_checkpoint_info_free(info);
    return fflush(stdout) == 0 ? 0 : 1;
}
