/* SPDX-License-Identifier: Apache-2.0
 * mlc_mem: give back memory that a long-running process holds once start-up
 * or a burst of work is over.
 *
 * Most of an idle agent's resident set is not its own data but pages of the
 * ~40 shared libraries libcurl, libwebsockets and SQLite bring in: the
 * dynamic linker and the libraries' initialisers (OpenSSL, GnuTLS, p11-kit)
 * touch them once at start-up and the idle loop never again. They are clean
 * copies of files, so unmapping them loses nothing: a page that is needed
 * again is mapped back from the page cache (or re-read from the file) on
 * its next use.
 */
#ifndef MLC_MEM_H
#define MLC_MEM_H

#include <stddef.h>

/* From /proc/self/smaps: is this mapping clean file-backed memory that
 * mlc_mem_trim() may unmap? header is the mapping's first line, anon_kb its
 * "Anonymous:" figure. Only private, not writable, file-backed mappings with
 * no private (copied-on-write) pages qualify; nothing else is ever touched. */
int mlc_mem_droppable(const char *header, long anon_kb);

/* Return free heap pages to the kernel (malloc_trim) and unmap the resident
 * pages of every mapping mlc_mem_droppable() accepts. Any thread may call it;
 * code running meanwhile in other threads simply faults its pages back in.
 * Returns the kilobytes unmapped (0 when /proc is not there). */
long mlc_mem_trim(void);

#endif
