/* SPDX-License-Identifier: Apache-2.0
 * jira_adf: plain text to Atlassian Document Format. ERP text arrives with
 * CRLF line ends, stray control bytes and sometimes Latin-1 bytes; Jira
 * rejects empty text nodes, and cJSON prints whatever bytes it holds, so
 * the text is cleaned to valid UTF-8 before any node is built.
 */
#include <stdlib.h>
#include <string.h>

#include "agent/connectors/jira/jira_adf.h"

/* Length of the well-formed UTF-8 sequence at p (1..4), or 0 when p starts an
 * invalid one (overlong forms, surrogates, > U+10FFFF, bad continuation). The
 * input is NUL-terminated, so a truncated sequence fails on the NUL. */
static size_t utf8_len(const unsigned char *p)
{
    unsigned char c = p[0];
    unsigned char lo = 0x80, hi = 0xbf;
    size_t n, i;

    if (c < 0x80) {
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0) {
            lo = 0xa0;
        } else if (c == 0xed) {
            hi = 0x9f;
        }
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0) {
            lo = 0x90;
        } else if (c == 0xf4) {
            hi = 0x8f;
        }
    } else {
        return 0;
    }
    if (p[1] < lo || p[1] > hi) {
        return 0;
    }
    for (i = 2; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf) {
            return 0;
        }
    }
    return n;
}

char *jira_text_clean(const char *text)
{
    const unsigned char *p = (const unsigned char *)(text != NULL ? text : "");
    size_t len = strlen((const char *)p);
    char *out, *o;

    /* worst case: every byte invalid, each becoming the 3-byte U+FFFD */
    out = malloc(len * 3 + 1);
    if (out == NULL) {
        return NULL;
    }
    o = out;
    while (*p != '\0') {
        size_t n;

        if (*p >= 0x20 && *p < 0x80) {
            /* printable ASCII, the common case: copied as it is */
            *o++ = (char)*p++;
            continue;
        }
        if (*p == '\r') {
            *o++ = '\n';
            p += p[1] == '\n' ? 2 : 1;
            continue;
        }
        if (*p < 0x20 && *p != '\n' && *p != '\t') {
            p++;
            continue;
        }
        n = utf8_len(p);
        if (n == 0) {
            *o++ = (char)0xef;
            *o++ = (char)0xbf;
            *o++ = (char)0xbd;
            p++;
            continue;
        }
        memcpy(o, p, n);
        o += n;
        p += n;
    }
    *o = '\0';
    return out;
}

static int line_blank(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (s[i] != ' ' && s[i] != '\t') {
            return 0;
        }
    }
    return 1;
}

static cJSON *node_new(const char *type)
{
    cJSON *node = cJSON_CreateObject();

    if (node == NULL) {
        return NULL;
    }
    if (cJSON_AddStringToObject(node, "type", type) == NULL) {
        cJSON_Delete(node);
        return NULL;
    }
    return node;
}

/* Append {"type":"text","text":s[0..n)} to content; -1 on OOM. */
static int add_text(cJSON *content, char *s, size_t n)
{
    cJSON *node = node_new("text");
    char keep = s[n];
    cJSON *str;

    if (node == NULL) {
        return -1;
    }
    /* the cleaned copy is ours, so terminate the piece in place */
    s[n] = '\0';
    str = cJSON_AddStringToObject(node, "text", s);
    s[n] = keep;
    if (str == NULL) {
        cJSON_Delete(node);
        return -1;
    }
    cJSON_AddItemToArray(content, node);
    return 0;
}

/* A new paragraph appended to doc_content; returns its content array. */
static cJSON *add_paragraph(cJSON *doc_content)
{
    cJSON *para = node_new("paragraph");
    cJSON *content;

    if (para == NULL) {
        return NULL;
    }
    content = cJSON_AddArrayToObject(para, "content");
    if (content == NULL) {
        cJSON_Delete(para);
        return NULL;
    }
    cJSON_AddItemToArray(doc_content, para);
    return content;
}

cJSON *jira_adf_from_text(const char *text)
{
    char *clean = jira_text_clean(text);
    cJSON *doc = NULL, *content, *para = NULL;
    char *line;
    int ok = 0;

    if (clean == NULL) {
        return NULL;
    }
    doc = cJSON_CreateObject();
    if (doc == NULL || cJSON_AddNumberToObject(doc, "version", 1) == NULL ||
        cJSON_AddStringToObject(doc, "type", "doc") == NULL) {
        goto out;
    }
    content = cJSON_AddArrayToObject(doc, "content");
    if (content == NULL) {
        goto out;
    }
    /* Walk lines: a non-blank line joins the open paragraph (after a
     * hardBreak) or opens one; a blank line closes the open paragraph. */
    line = clean;
    for (;;) {
        char *nl = strchr(line, '\n');
        size_t n = nl != NULL ? (size_t)(nl - line) : strlen(line);

        if (line_blank(line, n)) {
            para = NULL;
        } else {
            if (para == NULL) {
                para = add_paragraph(content);
                if (para == NULL) {
                    goto out;
                }
            } else {
                cJSON *hb = node_new("hardBreak");

                if (hb == NULL) {
                    goto out;
                }
                cJSON_AddItemToArray(para, hb);
            }
            if (add_text(para, line, n) != 0) {
                goto out;
            }
        }
        if (nl == NULL) {
            break;
        }
        line = nl + 1;
    }
    if (cJSON_GetArraySize(content) == 0 && add_paragraph(content) == NULL) {
        goto out;
    }
    ok = 1;
out:
    free(clean);
    if (!ok) {
        cJSON_Delete(doc);
        return NULL;
    }
    return doc;
}
