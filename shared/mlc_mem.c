/* SPDX-License-Identifier: Apache-2.0
 * mlc_mem: give back memory an idle process no longer uses (see mlc_mem.h).
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "shared/mlc_buf.h"
#include "shared/mlc_mem.h"

struct mem_range {
    unsigned long start, end;
    long rss_kb;
};

int mlc_mem_droppable(const char *header, long anon_kb)
{
    unsigned long start, end, offset, inode;
    unsigned dev_major, dev_minor;
    char perms[8];

    if (anon_kb != 0 || sscanf(header, "%lx-%lx %7s %lx %x:%x %lu", &start, &end, perms, &offset, &dev_major,
                               &dev_minor, &inode) != 7) {
        return 0;
    }
    /* "r-xp", "r--p", "---p": a private copy of a file nobody may write to.
     * Writable or shared mappings, and anonymous memory (inode 0), are data. */
    return end > start && inode != 0 && strlen(perms) == 4 && perms[1] == '-' && perms[3] == 'p';
}

long mlc_mem_trim(void)
{
    struct mem_range *r = NULL;
    size_t n = 0, cap = 0, linecap = 0;
    char *line = NULL, *header = NULL;
    unsigned long a, b;
    long rss_kb = 0, dropped = 0;
    FILE *f;

    malloc_trim(0);
    f = fopen("/proc/self/smaps", "re");
    if (f == NULL) {
        return 0;
    }
    /* each mapping: a header line, then "Key: value kB" lines; Rss comes
     * before Anonymous */
    while (getline(&line, &linecap, f) > 0) {
        if (sscanf(line, "%lx-%lx", &a, &b) == 2) {
            free(header);
            header = mlc_xstrdup(line);
            rss_kb = 0;
        } else if (strncmp(line, "Rss:", 4) == 0) {
            rss_kb = strtol(line + 4, NULL, 10);
        } else if (strncmp(line, "Anonymous:", 10) == 0 && header && rss_kb > 0 &&
                   mlc_mem_droppable(header, strtol(line + 10, NULL, 10))) {
            sscanf(header, "%lx-%lx", &a, &b);
            if (n == cap) {
                cap = cap ? 2 * cap : 64;
                r = mlc_xrealloc(r, cap * sizeof(*r));
            }
            r[n++] = (struct mem_range){ a, b, rss_kb };
        }
    }
    free(line);
    free(header);
    fclose(f);
    /* The list is used as soon as it is read. The libraries we link are never
     * unloaded, so a listed range cannot become another mapping meanwhile;
     * and a read-only mapping cannot gain private pages. */
    for (size_t i = 0; i < n; i++) {
        if (madvise((void *)r[i].start, r[i].end - r[i].start, MADV_DONTNEED) == 0) {
            dropped += r[i].rss_kb;
        }
    }
    free(r);
    return dropped;
}
