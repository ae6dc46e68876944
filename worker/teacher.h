/* teacher.h — the teacher of a distillation run: a trained model loaded from its checkpoint,
 * run forward only (no dropout, no gradient), whose logits and hidden-layer outputs the
 * student learns from.
 *
 * A teacher checkpoint is the final checkpoint of a run trained without a teacher: its meta
 * holds that run's config (the network to build) and its "params" tensor the weights. The
 * student's config is checked against the teacher's with cfg_check_teacher, as the daemon
 * does at submission, so a pair that cannot be aligned fails here with the same words.
 *
 * teacher_outputs() is the one way the trainer obtains what the teacher says about a batch.
 * It takes the examples' indices as well as their images so that the cache can answer by
 * index instead of running the network.
 *
 * The cache. A frozen teacher without dropout says the same thing about an example every
 * epoch, and MapSage has no data augmentation (a split's images never change; a future
 * augmentation must not cache the split it alters). So teacher_cache_split runs the teacher
 * once over a whole split, in order, in batches of max_batch, and keeps per example one row:
 * its model.classes logits, then (if asked) the output of each distinct teacher layer the pairs
 * read, in one allocation per split. teacher_outputs on a cached split then gathers the
 * batch's rows (a memcpy per row and output, no GEMM) into buffers of its own. A split is
 * cached only if it fits the budget, MAPSAGE_TEACHER_CACHE_MB (MiB, default
 * TEACHER_CACHE_DEFAULT_MB, 0 = never), together with what is already cached; otherwise the
 * network runs on every batch, as without a cache.
 *
 * What the cache does not promise: bit-identical outputs to running the network on the
 * training batch. OpenBLAS may round an example's row differently depending on the batch it
 * sits in (its size, the example's position, the thread count). Measured on 3795 rows in
 * random batches of 1 to 256 against sequential batches of 128, for an MLP and a CNN teacher:
 * at 2 threads 159 and 1282 rows differ; at 1 thread on the Haswell kernel 2065 and 3756, on
 * SkylakeX 375 and 1192; on the Prescott kernel (what OpenBLAS 0.3.21 falls back to on this
 * machine's CPU, which it does not know) only rows of batches under 8. With
 * the cache an example's outputs are those of its batch in the cache's pass — a pure function
 * of the split, the teacher and the thread count, so a run stays deterministic and a resumed
 * run equals an uninterrupted one — but a run with the cache and one without may differ in
 * the last bits (which training then amplifies) wherever the BLAS is batch-variant. */
#ifndef MAPSAGE_TEACHER_H
#define MAPSAGE_TEACHER_H

#include <stddef.h>

#include "config.h"
#include "data.h"
#include "nn.h"

#define TEACHER_CACHE_DEFAULT_MB CFG_TEACHER_CACHE_DEFAULT_MB
#define TEACHER_CACHE_ENV CFG_TEACHER_CACHE_ENV
#define TEACHER_CACHE_SPLITS 3  /* train, val, test */

/* One cached split: n rows of `row` floats (logits, then the layer outputs when `features`). */
typedef struct {
  const data_split_t *split;  /* the key, with its images and n (a split never moves) */
  const float *images;
  int n;
  int features;
  size_t row;
  float *rows;
} teacher_cache_t;

typedef struct {
  char path[CFG_PATH_MAX];    /* the checkpoint it came from */
  cfg_experiment_t config;    /* the teacher's own config, from the checkpoint */
  nn_model_t model;           /* inference only, every grown block joined */
  int n_features;             /* the student's feature pairs */
  int layers[CFG_MAX_FEATURES]; /* pair i reads the output of this teacher layer */
  int evaluated;              /* teacher_evaluate has filled the two figures below */
  double test_accuracy, test_loss;
  float *probs;               /* max_batch × classes: evaluation scratch */
  int *predictions;           /* max_batch */
  /* The cache (see the top of this file). The distinct layers the pairs read are its
   * "slots": slot s is layer slot_layer[s], slot_floats[s] floats per example, at
   * slot_offset[s] after the logits in a row; pair i reads slot pair_slot[i]. */
  size_t cache_budget;        /* bytes, from MAPSAGE_TEACHER_CACHE_MB at load */
  size_t cache_bytes;         /* held now */
  int n_slots;
  int slot_layer[CFG_MAX_FEATURES], pair_slot[CFG_MAX_FEATURES];
  size_t slot_floats[CFG_MAX_FEATURES], slot_offset[CFG_MAX_FEATURES];
  size_t features_floats;     /* Σ slot_floats */
  int n_caches;
  teacher_cache_t caches[TEACHER_CACHE_SPLITS];
  float *gathered;            /* max_batch × (classes + features_floats): a cached answer,
                                 logits then each slot, each block max_batch rows (allocated
                                 with the first cache) */
} teacher_t;

/* What the teacher says about B examples: its logits and, for each of the student's feature
 * pairs, the output of the teacher layer the pair names (B × that layer's size, NCHW; NULL
 * when the split is cached without its layers). The memory is the teacher's and stays valid
 * until the next teacher_outputs call. */
typedef struct {
  int B;
  const float *logits;
  const float *features[CFG_MAX_FEATURES];
} teacher_outputs_t;

/* Loads the teacher that `student` names (student->teacher.checkpoint, which the daemon fills
 * in for an experiment teacher) for batches of up to max_batch examples: opens and verifies
 * the checkpoint, parses the teacher's config from its meta, checks the student against it,
 * builds the inference model, joins its grown blocks and reads its parameters (the count must
 * match exactly); reads the cache budget from the environment. Returns 0, or a negative errno
 * with `error` naming the file (or the variable) and the reason; on failure nothing needs
 * freeing. */
int teacher_load(teacher_t *teacher, const cfg_experiment_t *student, int max_batch, char *error,
                 size_t error_size);
void teacher_free(teacher_t *teacher);

/* The teacher's outputs for the B ≤ max_batch examples `indices` of `split`, whose images
 * (B × CFG_INPUTS) the caller has gathered in `inputs`: gathered from the split's cache when
 * it has one, else from the network run on `inputs`. */
void teacher_outputs(teacher_t *teacher, const data_split_t *split, const int *indices,
                     const float *inputs, int B, teacher_outputs_t *out);

/* What caching a split costs (filled whether it was cached or not). */
typedef struct {
  int n;                      /* examples */
  int logits;                 /* floats per example: the classes */
  size_t features;            /* and layer outputs (0 when not asked for) */
  size_t bytes;               /* n × (logits + features) × 4 */
  double seconds;             /* to build it (0 when it was not built now) */
} teacher_cache_cost_t;

/* Caches `split` (see the top of this file): its logits, and with_features the layers the
 * pairs read. Returns 0 once it is cached (now or before), -E2BIG when it does not fit in
 * what is left of the budget, -ENOMEM when the allocation fails, -ENOSPC when every cache
 * slot is taken, -EEXIST when it is already cached without the layers asked for now; on an
 * error nothing new is kept and teacher_outputs answers as before. */
int teacher_cache_split(teacher_t *teacher, const data_split_t *split, int with_features,
                        teacher_cache_cost_t *cost);

/* The teacher's accuracy and mean cross-entropy on `split` (the test set: its reference
 * figures), kept in teacher->test_accuracy / test_loss. Returns 0, or -ERANGE when its loss
 * is not finite (a broken teacher). */
int teacher_evaluate(teacher_t *teacher, const data_split_t *split);

/* Parameters of the teacher network (its grown blocks included). */
size_t teacher_params(const teacher_t *teacher);

#endif
