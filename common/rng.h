/* rng.h — MapSage's only source of randomness: xoshiro256** seeded by splitmix64.
 * Everything that changes a number (weight init, validation split, each epoch's shuffle, the
 * synthetic dataset, a study's random search) draws from an rng_t seeded by (seed, stream,
 * index), so the same config gives the same run and the same study the same runs; never
 * rand() or the clock. Header-only: a few lines each, and inlining matters inside the data
 * loops. In common/ because the daemon draws a study's random cells with it too. */
#ifndef MAPSAGE_RNG_H
#define MAPSAGE_RNG_H

#include <math.h>
#include <stdint.h>

/* Stream ids: one independent sequence per use, so adding a draw in one place never shifts
 * the numbers drawn in another. */
enum {
  RNG_STREAM_INIT = 1,      /* parameter initialisation */
  RNG_STREAM_SPLIT = 2,     /* which training examples become the validation set */
  RNG_STREAM_SHUFFLE = 3,   /* per-epoch batch order; the epoch is mixed in too */
  RNG_STREAM_SYNTHETIC = 4, /* the generated dataset */
  RNG_STREAM_DISTILL = 16,  /* adapters, gates, discriminator (index = the piece); spaced from the rest */
  RNG_STREAM_STUDY = 64,    /* a study's random search (index = the parameter); the daemon's */
};

typedef struct {
  uint64_t s[4];
} rng_t;

static inline uint64_t rng_splitmix64(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* Seeds from (seed, stream, index): e.g. (config seed, RNG_STREAM_SHUFFLE, epoch). Distinct
 * triples give unrelated sequences because each word goes through splitmix64 in turn. */
static inline void rng_seed(rng_t *rng, uint64_t seed, uint64_t stream, uint64_t index) {
  uint64_t state = seed;
  state = rng_splitmix64(&state) ^ stream;
  state = rng_splitmix64(&state) ^ index;
  for (int i = 0; i < 4; i++) rng->s[i] = rng_splitmix64(&state);
}

static inline uint64_t rng_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t rng_next(rng_t *rng) {
  uint64_t *s = rng->s;
  uint64_t result = rng_rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rng_rotl(s[3], 45);
  return result;
}

/* Uniform in [0, n) without modulo bias (Lemire's multiply-and-reject). */
static inline uint32_t rng_below(rng_t *rng, uint32_t n) {
  uint64_t m = (uint64_t)(uint32_t)(rng_next(rng) >> 32) * n;
  uint32_t low = (uint32_t)m;
  if (low < n) {
    uint32_t threshold = (uint32_t)(-n) % n;
    while (low < threshold) {
      m = (uint64_t)(uint32_t)(rng_next(rng) >> 32) * n;
      low = (uint32_t)m;
    }
  }
  return (uint32_t)(m >> 32);
}

/* Uniform in [0, 1): the top 24 bits (float) or 53 bits (double) of one draw. */
static inline float rng_uniform(rng_t *rng) { return (float)(rng_next(rng) >> 40) * 0x1.0p-24f; }
static inline double rng_uniform_double(rng_t *rng) { return (double)(rng_next(rng) >> 11) * 0x1.0p-53; }

/* Standard normal by Box–Muller; one value per call (the twin is dropped to keep no state
 * beyond the four words). */
static inline double rng_normal(rng_t *rng) {
  double u1 = 1.0 - rng_uniform_double(rng); /* (0, 1]: log stays finite */
  double u2 = rng_uniform_double(rng);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Fisher–Yates over n ints. */
static inline void rng_shuffle(rng_t *rng, int *items, int n) {
  for (int i = n - 1; i > 0; i--) {
    int j = (int)rng_below(rng, (uint32_t)i + 1);
    int t = items[i];
    items[i] = items[j];
    items[j] = t;
  }
}

#endif
