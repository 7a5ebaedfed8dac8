// datasets/stb_image_impl.c: the one place stb_image's implementation is compiled
// (libstb-dev ships the header; its libstb.so is deliberately not linked, so the
// configuration below is ours). Only the formats sd-qzo documents are decoded:
// PNG, JPEG, BMP. WebP goes through libwebp instead (datasets/webp.c).
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_NO_HDR
#define STBI_NO_LINEAR
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif
#include <stb_image.h>
