/* config.h — the experiment config: parse, validate, fill in defaults, serialise.
 *
 * The daemon validates a submission with cfg_parse() and the worker parses the very same
 * text with it, so a config the daemon accepts is one the worker runs. Validation never
 * stops at the first problem: it collects every bad field, each with its JSON path
 * ("stages[1].epochs") and a sentence a researcher can act on. Fields this version does not
 * know are errors, never silently ignored. */
#ifndef MAPSAGE_CONFIG_H
#define MAPSAGE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define CFG_NAME_MAX 64     /* layer and stage names, including the NUL */
#define CFG_TITLE_MAX 128   /* the experiment's name, including the NUL */
#define CFG_MAX_LAYERS 64
#define CFG_MAX_STAGES 32
#define CFG_CLASSES 10      /* both datasets have ten classes */
#define CFG_IMAGE_SIDE 28   /* and 28×28 single-channel images */
#define CFG_INPUTS (CFG_IMAGE_SIDE * CFG_IMAGE_SIDE)

typedef enum { CFG_DATASET_FASHION_MNIST, CFG_DATASET_SYNTHETIC } cfg_dataset_kind_t;
typedef enum { CFG_LAYER_LINEAR, CFG_LAYER_RELU } cfg_layer_kind_t;
typedef enum { CFG_OPTIMIZER_SGD, CFG_OPTIMIZER_ADAM } cfg_optimizer_kind_t;

typedef struct {
  cfg_layer_kind_t kind;
  int out;                   /* linear: number of output features */
  char name[CFG_NAME_MAX];   /* "" for an unnamed layer; names are unique */
} cfg_layer_t;

typedef struct {
  char name[CFG_NAME_MAX];
  int epochs;                /* >= 1 */
  double task_weight;        /* in [0, 1] */
  double lr;                 /* > 0; the optimizer's lr unless the stage sets its own */
} cfg_stage_t;

typedef struct {
  char name[CFG_TITLE_MAX];  /* free text for people; may be "" */
  uint64_t seed;
  int priority;              /* higher runs first; default 0 */

  struct {
    cfg_dataset_kind_t kind;
    int val_size;            /* examples held out of the training set for validation */
    int train_limit;         /* use at most this many training examples; 0 = all */
    int train_size;          /* synthetic only: generated training examples */
    int test_size;           /* synthetic only: generated test examples */
  } dataset;

  int n_layers;
  cfg_layer_t layers[CFG_MAX_LAYERS];

  struct {
    cfg_optimizer_kind_t kind;
    double lr;
    double momentum;         /* sgd */
    double weight_decay;     /* both; L2 added to the gradient */
    double beta1, beta2, eps;/* adam */
  } optimizer;

  int batch_size;
  int n_stages;
  cfg_stage_t stages[CFG_MAX_STAGES];
} cfg_experiment_t;

/* One validation error: where and why. */
typedef struct {
  char path[128];
  char message[256];
} cfg_error_t;

typedef struct {
  int count;                 /* errors found; only the first CFG_MAX_ERRORS are kept */
  cfg_error_t items[32];
} cfg_errors_t;
#define CFG_MAX_ERRORS 32

/* Parses and validates `root` into `out`, filling every default. Returns 0 when the config
 * is valid, -EINVAL when it is not (every problem in `errors`). `out` is only meaningful on
 * success. */
int cfg_from_json(const json_t *root, cfg_experiment_t *out, cfg_errors_t *errors);

/* Same, from text. Malformed JSON is reported as one error whose path is "" and whose
 * message gives the line, column and reason. */
int cfg_parse(const char *text, size_t length, cfg_experiment_t *out, cfg_errors_t *errors);

/* The config with every default written out: what the daemon stores and hands to the
 * worker, and what SQL views pull fields from. The caller owns the reference. */
json_t *cfg_to_json(const cfg_experiment_t *config);

/* The errors as [{"path": …, "message": …}, …]. The caller owns the reference. */
json_t *cfg_errors_to_json(const cfg_errors_t *errors);

/* Total epochs over all stages, and the stage an epoch (0-based) belongs to. */
int cfg_total_epochs(const cfg_experiment_t *config);
int cfg_stage_of_epoch(const cfg_experiment_t *config, int epoch);

const char *cfg_layer_kind_name(cfg_layer_kind_t kind);

#endif
