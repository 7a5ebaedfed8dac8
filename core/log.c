// core/log.c: levelled logging; the level is read once from SD_QZO_LOG.
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_level = -1;
static char g_tag[32];

static sq_log_level level_from_env(void) {
    const char *s = getenv("SD_QZO_LOG");
    if (!s) return SQ_LOG_INFO;
    if (!strcmp(s, "error")) return SQ_LOG_ERROR;
    if (!strcmp(s, "warn")) return SQ_LOG_WARN;
    if (!strcmp(s, "debug")) return SQ_LOG_DEBUG;
    return SQ_LOG_INFO;
}

void sq_log_set_level(sq_log_level level) { g_level = (int)level; }

void sq_log_set_tag(const char *tag) { snprintf(g_tag, sizeof g_tag, "%s", tag ? tag : ""); }

sq_log_level sq_log_get_level(void) {
    if (g_level < 0) g_level = (int)level_from_env();
    return (sq_log_level)g_level;
}

void sq_log(sq_log_level level, const char *fmt, ...) {
    static const char *names[] = {"error", "warning", "info", "debug"};
    if (level > sq_log_get_level()) return;
    if (g_tag[0]) fprintf(stderr, "sd-qzo[%s]: %s: ", g_tag, names[level]);
    else fprintf(stderr, "sd-qzo: %s: ", names[level]);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}
