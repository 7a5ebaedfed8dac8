// datasets/stb_image_impl.c: the one place stb_image's implementation is compiled,
// from the copy of stb_image.h v2.30 in datasets/third_party/ (public domain / MIT,
// github.com/nothings/stb), not libstb-dev's: Debian's v2.27 writes past a Huffman
// table on a crafted JPEG (the n > 256 check of v2.28), which the fuzz target
// tests/fuzz/fuzz_image found. The configuration below is ours. Only the formats
// sd-qzo documents are decoded: PNG, JPEG, BMP. WebP goes through libwebp instead
// (datasets/webp.c).
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
#include "datasets/third_party/stb_image.h"
