// core/sha256.h: SHA-256 (FIPS 180-4) for content hashes: the source checkpoint a
// quantised file came from, and dataset cache keys. Streaming: init, update with
// any chunking, final.
#ifndef SQ_SHA256_H
#define SQ_SHA256_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t length;      // bytes hashed so far
    uint8_t block[64];
    size_t used;          // bytes waiting in block
} sq_sha256;

void sq_sha256_init(sq_sha256 *s);
void sq_sha256_update(sq_sha256 *s, const void *data, size_t n);
void sq_sha256_final(sq_sha256 *s, uint8_t digest[32]);
// True when whole blocks use the CPU's SHA instructions (SHA-NI); the environment
// variable SQ_SHA256_PLAIN (any value) turns them off (the tests compare both).
bool sq_sha256_accelerated(void);
// Lower-case hex of the digest into out (65 bytes with the NUL).
void sq_sha256_hex(const uint8_t digest[32], char out[65]);
// Hashes a whole file, reading it in chunks. SQ_FAIL with a message naming it.
int sq_sha256_file(const char *path, char out_hex[65]);

#endif
