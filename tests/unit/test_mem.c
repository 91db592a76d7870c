/* SPDX-License-Identifier: Apache-2.0
 * Unit tests: mlc_mem (which mappings may be given back; nothing that holds
 * data is lost when they are).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "shared/mlc_mem.h"
#include "tinytest.h"

static void droppable_only_clean_private_files(void)
{
    const char *lib = "7f55a0000000-7f55a0100000 r-xp 00026000 fe:00 332835     /usr/lib/x86_64-linux-gnu/libc.so.6\n";

    CHECK_INT(mlc_mem_droppable(lib, 0), 1);
    CHECK_INT(mlc_mem_droppable("7f55a0000000-7f55a0100000 r--p 00000000 fe:00 332835 /usr/lib/libc.so.6\n", 0), 1);
    CHECK_INT(mlc_mem_droppable("7f55a0000000-7f55a0100000 r--p 00000000 fe:00 332835 /x (deleted)\n", 0), 1);
    /* private copies made by relocation or a debugger: data */
    CHECK_INT(mlc_mem_droppable(lib, 4), 0);
    CHECK_INT(mlc_mem_droppable(lib, -1), 0);
    /* writable, shared, anonymous */
    CHECK_INT(mlc_mem_droppable("7f55a0000000-7f55a0100000 rw-p 00000000 fe:00 332835 /usr/lib/libc.so.6\n", 0), 0);
    CHECK_INT(mlc_mem_droppable("7f55a0000000-7f55a0100000 r--s 00000000 fe:00 11076288 /var/lib/x/state.db-shm\n", 0),
              0);
    CHECK_INT(mlc_mem_droppable("5650bec9c000-5650bed6a000 rw-p 00000000 00:00 0     [heap]\n", 0), 0);
    CHECK_INT(mlc_mem_droppable("7ffdeadc4000-7ffdeade5000 r-xp 00000000 00:00 0     [vdso]\n", 0), 0);
    CHECK_INT(mlc_mem_droppable("Rss:  12 kB\n", 0), 0);
    CHECK_INT(mlc_mem_droppable("", 0), 0);
}

/* A file mapped twice: read-only (clean, may go) and private with a page
 * written and then made read-only (a copy, must stay). After the trim both
 * read as before, and so does the heap. */
static void trim_keeps_every_byte(void)
{
    char path[] = "/tmp/mlc-test-mem-XXXXXX";
    long page = sysconf(_SC_PAGESIZE);
    size_t len = (size_t)page * 4;
    char *content = malloc(len), *heap = malloc(1 << 20), *clean, *copied;
    int fd = mkstemp(path);

    CHECK(fd >= 0 && content && heap);
    if (fd < 0 || !content || !heap) {
        return;
    }
    for (size_t i = 0; i < len; i++) {
        content[i] = (char)('a' + i % 26);
    }
    memset(heap, 'h', 1 << 20);
    CHECK(write(fd, content, len) == (ssize_t)len);
    clean = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    copied = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    CHECK(clean != MAP_FAILED && copied != MAP_FAILED);
    if (clean != MAP_FAILED && copied != MAP_FAILED) {
        CHECK(memcmp(clean, content, len) == 0); /* resident now */
        memcpy(copied + page, "written here", 12);
        CHECK_INT(mprotect(copied, len, PROT_READ), 0);
        CHECK(mlc_mem_trim() >= page / 1024); /* at least the clean mapping went */
        CHECK(memcmp(clean, content, len) == 0);
        CHECK(memcmp(copied + page, "written here", 12) == 0);
        CHECK(memcmp(copied, content, (size_t)page) == 0);
        CHECK(memcmp(copied + 2 * page, content + 2 * page, (size_t)page * 2) == 0);
        for (int i = 0; i < 1 << 20; i += 4093) {
            if (heap[i] != 'h') {
                CHECK(heap[i] == 'h');
                break;
            }
        }
    }
    if (clean != MAP_FAILED) {
        munmap(clean, len);
    }
    if (copied != MAP_FAILED) {
        munmap(copied, len);
    }
    close(fd);
    unlink(path);
    free(heap);
    free(content);
}

int main(void)
{
    RUN(droppable_only_clean_private_files);
    RUN(trim_keeps_every_byte);
    return TT_DONE();
}
