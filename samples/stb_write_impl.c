// samples/stb_write_impl.c: the one place stb_image_write's implementation is
// compiled (PNG encoding for samples/png.c). Kept alone in this file so its
// warnings, if any, and its symbols stay out of the project's own code; only the
// in-memory writer is used (STBI_WRITE_NO_STDIO), files go through png.c's atomic
// writer.
#define STBI_WRITE_NO_STDIO
#define STB_IMAGE_WRITE_IMPLEMENTATION
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#endif
#include <stb_image_write.h>
