/*
** harness.c: see harness.h.
*/
#define _GNU_SOURCE /* dl_iterate_phdr, RTLD_NODELETE, RTLD_NOLOAD */
#include "harness.h"
#include "count_alloc.h"

#include <dlfcn.h>
#include <link.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int g_rank;
static int passed, failed;

/* mpirun merges the ranks' output in the pieces it happens to read, cutting lines of
** one rank into the other's. So only rank 0 prints as it goes (a hang still shows
** where it stopped); the other ranks keep their lines, plain malloc (not adtape's
** hooks, which the tests count), and send them to rank 0 at the end. */
static char *kept;
static size_t kept_len, kept_cap;

static void emit(const char *text)
{
    if (g_rank == 0) {
        fputs(text, stdout);
        fflush(stdout);
        return;
    }
    size_t n = strlen(text);
    if (kept_len + n + 1 > kept_cap) {
        size_t cap = kept_cap ? 2 * kept_cap : 1 << 16;
        while (cap < kept_len + n + 1)
            cap *= 2;
        char *p = realloc(kept, cap);
        if (!p) {
            fputs(text, stdout); /* out of memory: print, even if mpirun cuts it */
            return;
        }
        kept = p;
        kept_cap = cap;
    }
    memcpy(kept + kept_len, text, n + 1);
    kept_len += n;
}

/* Marks one loaded object as never to be unloaded if it is one of Open MPI's plugins
** (.../openmpi/mca_*.so) or a library only they load (PMIx). */
static int pin_one(struct dl_phdr_info *info, size_t size, void *user)
{
    (void)size, (void)user;
    const char *name = info->dlpi_name;
    if (name && (strstr(name, "/openmpi/mca_") || strstr(name, "libpmix"))) {
        void *h = dlopen(name, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
        (void)h; /* the handle is never closed, by design */
    }
    return 0;
}

/*
** MPI_Finalize unloads Open MPI's plugins (dlclose). Blocks those plugins allocated and
** never freed are then reported by LeakSanitizer at exit with "<unknown module>" for
** every frame in them, which no suppression can name. Reopening each loaded plugin
** with RTLD_NODELETE keeps it mapped, so its frames carry its file name and
** tests/mpi/lsan.supp can suppress exactly Open MPI's own leaks.
*/
static void pin_mpi_plugins(void)
{
    dl_iterate_phdr(pin_one, NULL);
}

int harness_finish(void)
{
    pin_mpi_plugins();
    int counts[2] = {passed, failed}, total[2];
    MPI_Allreduce(counts, total, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    int size;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (g_rank != 0) {
        int len = (int)kept_len;
        MPI_Send(&len, 1, MPI_INT, 0, 0, MPI_COMM_WORLD);
        MPI_Send(kept ? kept : "", len, MPI_CHAR, 0, 1, MPI_COMM_WORLD);
    } else {
        for (int r = 1; r < size; r++) {
            int len = 0;
            MPI_Recv(&len, 1, MPI_INT, r, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            char *buf = malloc((size_t)len + 1);
            if (!buf)
                MPI_Abort(MPI_COMM_WORLD, 3);
            MPI_Recv(buf, len, MPI_CHAR, r, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            fwrite(buf, 1, (size_t)len, stdout);
            free(buf);
        }
        printf("mpi: %d passed, %d failed\n", total[0], total[1]);
        fflush(stdout);
    }
    free(kept);
    return total[1] != 0;
}

void check_at(int ok, const char *file, int line, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    char text[700];
    if (ok) {
        passed++;
        snprintf(text, sizeof text, "rank %d ok: %s\n", g_rank, what);
    } else {
        failed++;
        snprintf(text, sizeof text, "rank %d FAIL %s:%d: %s\n", g_rank, file, line, what);
    }
    emit(text);
}

void require_at(ad_status rc, const char *file, int line, const char *what)
{
    if (rc == AD_OK)
        return;
    printf("rank %d FAIL %s:%d: %s: %s: %s (set-up failed, aborting)\n", g_rank, file, line,
           what, ad_status_str(rc), ad_last_error());
    fflush(stdout);
    MPI_Abort(MPI_COMM_WORLD, 2);
}


/* The counting allocator is tests/support/count_alloc.c, shared with the Criterion
** suites; these names keep the MPI tests' calls short. */
void alloc_install(void)
{
    REQUIRE(count_alloc_install());
}

uint64_t alloc_count(void)
{
    return count_alloc_calls();
}

int64_t alloc_outstanding(void)
{
    return count_alloc_outstanding();
}

void alloc_fail_at(uint64_t n)
{
    count_alloc_fail_at(n);
}
