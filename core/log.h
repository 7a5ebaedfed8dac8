// core/log.h: levelled logging to stderr. Level from SD_QZO_LOG (error, warn, info,
// debug) or sq_log_set_level(); info by default. stdout stays for command output.
#ifndef SQ_LOG_H
#define SQ_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { SQ_LOG_ERROR = 0, SQ_LOG_WARN, SQ_LOG_INFO, SQ_LOG_DEBUG } sq_log_level;

void sq_log_set_level(sq_log_level level);
// A tag after "sd-qzo" on every line ("sd-qzo[rank 2]: ..."), for the processes of a
// multi-process run; NULL or "" for none. Copied.
void sq_log_set_tag(const char *tag);
sq_log_level sq_log_get_level(void);
void sq_log(sq_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define sq_log_error(...) sq_log(SQ_LOG_ERROR, __VA_ARGS__)
#define sq_log_warn(...) sq_log(SQ_LOG_WARN, __VA_ARGS__)
#define sq_log_info(...) sq_log(SQ_LOG_INFO, __VA_ARGS__)
#define sq_log_debug(...) sq_log(SQ_LOG_DEBUG, __VA_ARGS__)

#ifdef __cplusplus
}
#endif

#endif
