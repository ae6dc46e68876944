/* sha256.h — SHA-256 (FIPS 180-4), for the content checksum of a registered dataset: the
 * daemon computes it at registration and the worker again before a run, so that a file
 * changed under a dataset's name fails the run instead of being used silently. Small and
 * self-contained rather than a new library dependency (none of the libraries already linked
 * exports one as public API). */
#ifndef MAPSAGE_SHA256_H
#define MAPSAGE_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  uint32_t state[8];
  uint64_t length;       /* bytes hashed so far */
  uint8_t block[64];
  size_t used;           /* bytes waiting in block */
} sha256_t;

void sha256_init(sha256_t *hash);
void sha256_update(sha256_t *hash, const void *data, size_t length);
/* The digest as 64 lowercase hex digits and a NUL. */
void sha256_final_hex(sha256_t *hash, char hex[65]);

#endif
