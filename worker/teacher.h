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
 * It takes the examples' indices as well as their images so that a cache of the teacher's
 * outputs (they never change: the teacher is frozen and runs without dropout) can answer by
 * index instead of running the network; for now it always runs the network. */
#ifndef MAPSAGE_TEACHER_H
#define MAPSAGE_TEACHER_H

#include <stddef.h>

#include "config.h"
#include "data.h"
#include "nn.h"

typedef struct {
  char path[CFG_PATH_MAX];    /* the checkpoint it came from */
  cfg_experiment_t config;    /* the teacher's own config, from the checkpoint */
  nn_model_t model;           /* inference only, every grown block joined */
  int n_features;             /* the student's feature pairs */
  int layers[CFG_MAX_FEATURES]; /* pair i reads the output of this teacher layer */
  int evaluated;              /* teacher_evaluate has filled the two figures below */
  double test_accuracy, test_loss;
  float *probs;               /* max_batch × CFG_CLASSES: evaluation scratch */
  int *predictions;           /* max_batch */
} teacher_t;

/* What the teacher says about B examples: its logits and, for each of the student's feature
 * pairs, the output of the teacher layer the pair names (B × that layer's size, NCHW). The
 * memory is the teacher's and stays valid until the next teacher_outputs call. */
typedef struct {
  int B;
  const float *logits;
  const float *features[CFG_MAX_FEATURES];
} teacher_outputs_t;

/* Loads the teacher that `student` names (student->teacher.checkpoint, which the daemon fills
 * in for an experiment teacher) for batches of up to max_batch examples: opens and verifies
 * the checkpoint, parses the teacher's config from its meta, checks the student against it,
 * builds the inference model, joins its grown blocks and reads its parameters (the count must
 * match exactly). Returns 0, or a negative errno with `error` naming the file and the reason;
 * on failure nothing needs freeing. */
int teacher_load(teacher_t *teacher, const cfg_experiment_t *student, int max_batch, char *error,
                 size_t error_size);
void teacher_free(teacher_t *teacher);

/* The teacher's outputs for the B ≤ max_batch examples `indices` of `split`, whose images
 * (B × CFG_INPUTS) the caller has gathered in `inputs`. */
void teacher_outputs(teacher_t *teacher, const data_split_t *split, const int *indices,
                     const float *inputs, int B, teacher_outputs_t *out);

/* The teacher's accuracy and mean cross-entropy on `split` (the test set: its reference
 * figures), kept in teacher->test_accuracy / test_loss. Returns 0, or -ERANGE when its loss
 * is not finite (a broken teacher). */
int teacher_evaluate(teacher_t *teacher, const data_split_t *split);

/* Parameters of the teacher network (its grown blocks included). */
size_t teacher_params(const teacher_t *teacher);

#endif
