/*
 * wats-station native converter ABI, version 1.
 *
 * A native converter is a shared library (.so, .dylib, .dll) exporting the functions below
 * with C linkage. The converter worker loads it once and calls wats_convert once per input
 * file, never from two threads at the same time. converters/native.py is the caller.
 *
 * Encoding
 *   input_path is the file's path as the operating system spells it, NUL-terminated (on POSIX
 *   the raw bytes of the name, normally UTF-8). Every string the library returns is
 *   NUL-terminated UTF-8.
 *
 * Result
 *   On success wats_convert returns 0 and sets *out_json to WSJF JSON: one report object, or
 *   an array of report objects (FORMATS.md). On failure it returns non-zero and sets
 *   *out_error to a message for the person at the station: say what is wrong and where
 *   (line, field). Leave the other pointer untouched; the caller sets both to NULL first.
 *
 * Ownership
 *   The library allocates *out_json and *out_error. The caller owns them from the return on,
 *   copies them, and gives each non-NULL pointer back exactly once to wats_free of the same
 *   library (so the library's own allocator frees it). The string returned by
 *   wats_converter_name belongs to the library, stays valid while it is loaded, and is never
 *   passed to wats_free.
 *
 * Crashes
 *   A crash inside the library kills the converter worker process. The supervisor restarts
 *   the worker and, after repeated crashes on the same file, moves that file to the error
 *   folder. The library need not guard against that, but must not keep state between calls:
 *   a worker may be restarted at any moment.
 */
#ifndef WATS_NATIVE_ABI_H
#define WATS_NATIVE_ABI_H

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define WATS_EXPORT __declspec(dllexport)
#else
#define WATS_EXPORT __attribute__((visibility("default")))
#endif

/* Convert one file. 0 and *out_json on success; non-zero and *out_error on failure. */
WATS_EXPORT int wats_convert(const char *input_path, char **out_json, char **out_error);

/* Free a string that wats_convert returned. NULL is allowed and does nothing. */
WATS_EXPORT void wats_free(char *p);

/* Optional: a short name for logs and error messages, such as "acme-ict 2.1". */
WATS_EXPORT const char *wats_converter_name(void);

#ifdef __cplusplus
}
#endif

#endif /* WATS_NATIVE_ABI_H */
