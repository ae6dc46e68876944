/* sha256.c — SHA-256 as FIPS 180-4 defines it (tests/test_dataset_formats.c checks it
 * against the standard's test vectors and Python's hashlib). */
#include "sha256.h"

#include <stdio.h>
#include <string.h>

static const uint32_t sha256__k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t sha256__rotr(uint32_t x, int n) { return x >> n | x << (32 - n); }

static void sha256__block(sha256_t *hash, const uint8_t *p) {
  uint32_t w[64];
  for (int i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = sha256__rotr(w[i - 15], 7) ^ sha256__rotr(w[i - 15], 18) ^ w[i - 15] >> 3;
    uint32_t s1 = sha256__rotr(w[i - 2], 17) ^ sha256__rotr(w[i - 2], 19) ^ w[i - 2] >> 10;
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = hash->state[0], b = hash->state[1], c = hash->state[2], d = hash->state[3];
  uint32_t e = hash->state[4], f = hash->state[5], g = hash->state[6], h = hash->state[7];
  for (int i = 0; i < 64; i++) {
    uint32_t t1 = h + (sha256__rotr(e, 6) ^ sha256__rotr(e, 11) ^ sha256__rotr(e, 25)) + ((e & f) ^ (~e & g)) +
                  sha256__k[i] + w[i];
    uint32_t t2 = (sha256__rotr(a, 2) ^ sha256__rotr(a, 13) ^ sha256__rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  hash->state[0] += a;
  hash->state[1] += b;
  hash->state[2] += c;
  hash->state[3] += d;
  hash->state[4] += e;
  hash->state[5] += f;
  hash->state[6] += g;
  hash->state[7] += h;
}

void sha256_init(sha256_t *hash) {
  static const uint32_t initial[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  memcpy(hash->state, initial, sizeof initial);
  hash->length = 0;
  hash->used = 0;
}

void sha256_update(sha256_t *hash, const void *data, size_t length) {
  const uint8_t *p = data;
  hash->length += length;
  if (hash->used) {
    size_t take = 64 - hash->used < length ? 64 - hash->used : length;
    memcpy(hash->block + hash->used, p, take);
    hash->used += take;
    p += take;
    length -= take;
    if (hash->used < 64) return;
    sha256__block(hash, hash->block);
    hash->used = 0;
  }
  for (; length >= 64; p += 64, length -= 64) sha256__block(hash, p);
  memcpy(hash->block, p, length);
  hash->used = length;
}

void sha256_final_hex(sha256_t *hash, char hex[65]) {
  uint64_t bits = hash->length * 8;
  uint8_t pad[72] = {0x80};
  size_t pad_length = (hash->used < 56 ? 56 : 120) - hash->used;
  for (int i = 0; i < 8; i++) pad[pad_length + (size_t)i] = (uint8_t)(bits >> (56 - 8 * i));
  sha256_update(hash, pad, pad_length + 8);
  for (int i = 0; i < 8; i++) snprintf(hex + 8 * i, 9, "%08x", hash->state[i]);
}
