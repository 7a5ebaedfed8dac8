// datasets/stb_resize_impl.c: the one place stb_image_resize's implementation is
// compiled. libstb-dev (Debian, 2022 snapshot) ships stb_image_resize.h (v1), not
// stb_image_resize2.h; transform.c is written against v1's stbir_resize().
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#endif
#include <stb_image_resize.h>
