/* SPDX-License-Identifier: Apache-2.0
 * jira_adf: plain text to Atlassian Document Format (ADF), the rich-text
 * shape Jira Cloud's v3 API wants for description and comment bodies.
 */
#ifndef JIRA_ADF_H
#define JIRA_ADF_H

#include <cjson/cJSON.h>

/* Build {"version":1,"type":"doc","content":[paragraph...]} from text
 * (NULL is treated as ""). Rules (docs/api/jira-cloud.md section 5):
 *  - CRLF and lone CR become LF;
 *  - a run of two or more LFs ends a paragraph; a single LF inside a
 *    paragraph becomes a hardBreak node; a line holding only spaces and
 *    tabs counts as empty, so whitespace-only paragraphs disappear;
 *  - empty pieces are dropped: never a "text":"" node, never a leading,
 *    trailing or doubled hardBreak;
 *  - C0 controls other than LF and TAB are removed; invalid UTF-8 bytes
 *    become U+FFFD, so the output is always valid UTF-8;
 *  - text with no paragraph left gives one empty paragraph
 *    {"type":"paragraph","content":[]}.
 * Returns a new tree the caller frees with cJSON_Delete(), or NULL when
 * memory ran out. */
cJSON *jira_adf_from_text(const char *text);

/* Copy text into a heap string with the same byte-level cleaning as above
 * (line ends normalised to LF, C0 controls except LF/TAB dropped, invalid
 * UTF-8 replaced by U+FFFD). Caller frees; NULL only on OOM. */
char *jira_text_clean(const char *text);

#endif
