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

#define CFG_PATH_MAX 1024

#define CFG_NAME_MAX 64     /* layer and stage names, including the NUL */
#define CFG_TITLE_MAX 128   /* the experiment's name, including the NUL */
#define CFG_MAX_LAYERS 64
#define CFG_MAX_STAGES 32
#define CFG_CLASSES 10      /* the built-in datasets have ten classes */
#define CFG_IMAGE_SIDE 28   /* and 28×28 single-channel images; a registered dataset has */
#define CFG_INPUTS (CFG_IMAGE_SIDE * CFG_IMAGE_SIDE) /* its own (dataset.classes, .input) */
#define CFG_MAX_CLASSES 1000 /* a registered dataset's labels are in 0 … 999 */
#define CFG_DATASET_MAX_FILES 8

typedef enum { CFG_DATASET_FASHION_MNIST, CFG_DATASET_SYNTHETIC, CFG_DATASET_REGISTERED } cfg_dataset_kind_t;
typedef enum {
  CFG_LAYER_LINEAR,
  CFG_LAYER_RELU,
  CFG_LAYER_CONV2D,
  CFG_LAYER_MAXPOOL,
  CFG_LAYER_FLATTEN,
  CFG_LAYER_DROPOUT,
  CFG_LAYER_KIND_COUNT
} cfg_layer_kind_t;
typedef enum { CFG_OPTIMIZER_SGD, CFG_OPTIMIZER_ADAM } cfg_optimizer_kind_t;
typedef enum { CFG_LR_CONSTANT, CFG_LR_STEP, CFG_LR_COSINE } cfg_lr_schedule_t;
typedef enum { CFG_TEMPERATURE_CONSTANT, CFG_TEMPERATURE_LINEAR, CFG_TEMPERATURE_COSINE, CFG_TEMPERATURE_STEP } cfg_temperature_schedule_t;
typedef enum { CFG_TEACHER_NONE, CFG_TEACHER_EXPERIMENT, CFG_TEACHER_CHECKPOINT, CFG_TEACHER_SAFETENSORS } cfg_teacher_kind_t;
typedef enum { CFG_GATE_NONE, CFG_GATE_SOFTMAX, CFG_GATE_MEAN_ONE } cfg_gate_t;
typedef enum { CFG_ADVERSARIAL_LSGAN, CFG_ADVERSARIAL_BCE } cfg_adversarial_loss_t;

/* The shape of a layer's output for one example. Image-shaped outputs (after conv2d or
 * maxpool, and the input itself) have channels × height × width; flat ones (after linear or
 * flatten) have `channels` features and height = width = 1. A linear layer flattens an
 * image-shaped input itself. */
typedef struct {
  int channels, height, width;
  int image;                 /* 1 when conv2d and maxpool may follow */
} cfg_shape_t;

typedef struct {
  cfg_layer_kind_t kind;
  int out;                   /* linear: output features; conv2d: output channels */
  int kernel, stride, padding; /* conv2d (padding defaults to kernel / 2); maxpool: kernel = size */
  double p;                  /* dropout: the probability of zeroing, in [0, 1) */
  char name[CFG_NAME_MAX];   /* "" for an unnamed layer; names are unique */
  cfg_shape_t shape;         /* filled by validation: the output shape */
} cfg_layer_t;

typedef struct {
  char name[CFG_NAME_MAX];
  int epochs;                /* >= 1 */
  double task_weight;        /* each in [0, 1]: the weight of each loss term in this stage */
  double distill_weight;
  double feature_weight;
  double adversarial_weight;
  double lr;                 /* > 0; the optimizer's lr unless the stage sets its own */
} cfg_stage_t;

/* A feature-alignment pair: the student layer's output, through a learned adapter (linear
 * for flat features, 1×1 convolution for feature maps), is pulled toward the teacher layer's
 * output by a per-element mean squared error. Maps of different heights and widths are
 * compared at the smaller size: the larger is adaptive-average-pooled to it first. Flat
 * features pair with flat features only, maps with maps. */
typedef struct {
  char student[CFG_NAME_MAX];
  char teacher[CFG_NAME_MAX];
  int student_layer;         /* index into layers, filled by validation */
  int normalize;             /* L2-normalise both sides per example first */
  cfg_gate_t gate;           /* selective distillation: a learned per-example weight */
} cfg_feature_t;

/* A block that joins the student at the start of `epoch` (1-based, >= 2), right after the
 * layer named `after` (flat output): out = h + W2·relu(W1·h + b1) + b2 with W2 = b2 = 0, so
 * the network computes the same function when it joins. */
typedef struct {
  int epoch;
  char after[CFG_NAME_MAX];
  int after_layer;           /* index into layers, filled by validation */
  int hidden;                /* width of W1; default the width of `after` */
  char name[CFG_NAME_MAX];   /* default "grow<i+1>" */
} cfg_grow_t;

/* The default dataset.split_seed: 1, the default run seed, so that a config that never set
 * a seed holds out exactly the examples it held out when the split still followed the seed
 * (and a teacher trained then with the default seed shares the split of a student now). */
#define CFG_SPLIT_SEED 1

/* Where a registered dataset's data is and how to read it (worker/dataset_formats.h reads
 * it): mapsaged fills it in from its registry (daemon/dataset.c) when a run is submitted, so
 * that the worker needs no registry and a run says exactly which files, and which content
 * (the checksum), it trained on. */
typedef struct {
  char format[16];           /* "idx", "npy", "npz", "cifar10", "cifar100", "csv" */
  int n_train, n_test;
  char train[CFG_DATASET_MAX_FILES][CFG_PATH_MAX]; /* idx, npy: images then labels; npz,
                                                       csv: one file; cifar: its batches */
  char test[CFG_DATASET_MAX_FILES][CFG_PATH_MAX];
  char names[CFG_PATH_MAX];  /* the class names, one a line; "" for none */
  char layout[8];            /* npy, npz: "auto", "nchw" or "nhwc" */
  int classes;               /* 0: from the names file or the format, else the largest label + 1 */
  int float_values;          /* "values": "float32" (1) or "uint8" (0), as registration found
                                them: what a run's memory estimate counts while loading */
  char checksum[65];         /* SHA-256 of every file's bytes, in order; "" not yet known */
} cfg_dataset_source_t;

#define CFG_MAX_FEATURES 8
#define CFG_MAX_GROW 8
#define CFG_PARTITION_MAX 64

typedef struct {
  char name[CFG_TITLE_MAX];  /* free text for people; may be "" */
  uint64_t seed;
  int priority;              /* higher runs first; default 0 */

  struct {
    cfg_dataset_kind_t kind;
    uint64_t split_seed;     /* the data's own seed: which examples are held out for
                                validation (and the synthetic images themselves), hence the
                                standardisation statistics; never the run's seed, so runs
                                with different seeds share one split. Default CFG_SPLIT_SEED */
    int val_size;            /* examples held out of the training set for validation */
    int train_limit;         /* use at most this many training examples; 0 = all */
    int train_size;          /* synthetic only: generated training examples */
    int test_size;           /* synthetic only: generated test examples; registered: the
                                counts mapsaged filled in (train_size the training pool) */
    char name[CFG_NAME_MAX]; /* the dataset's name: a built-in's or a registered one's */
    int classes;             /* the logits the last layer outputs */
    cfg_shape_t input;       /* one example's shape (channels × height × width) */
    cfg_dataset_source_t source; /* CFG_DATASET_REGISTERED */
  } dataset;

  int n_layers;
  cfg_layer_t layers[CFG_MAX_LAYERS];

  struct {
    cfg_optimizer_kind_t kind;
    double lr;
    double momentum;         /* sgd */
    double weight_decay;     /* both; L2 added to the gradient */
    double beta1, beta2, eps;/* adam */
    struct {
      cfg_lr_schedule_t kind;
      double warmup_epochs;  /* linear from 0 to the lr over this many epochs (fractions allowed) */
      int step_epochs;       /* step: multiply by gamma every step_epochs epochs */
      double gamma;
      double min_lr;         /* cosine: the floor, as a fraction of the lr */
    } schedule;
  } optimizer;

  struct {
    cfg_teacher_kind_t kind;
    int64_t experiment;      /* CFG_TEACHER_EXPERIMENT */
    char checkpoint[CFG_PATH_MAX]; /* CFG_TEACHER_CHECKPOINT; for an experiment teacher, the
                                      daemon fills in its final checkpoint when the run starts;
                                      CFG_TEACHER_SAFETENSORS: the .safetensors file */
    /* CFG_TEACHER_SAFETENSORS: a model trained elsewhere, whose layers teacher.model
     * describes (in this config's dataset's input shape and classes); the file must hold
     * exactly their tensors (worker/safetensors.h names them). */
    int n_layers;
    cfg_layer_t layers[CFG_MAX_LAYERS];
  } teacher;

  struct {
    cfg_temperature_schedule_t kind;
    double start, end;       /* the soft-target temperature moves from start to end over the
                                stages that distil (cfg_distill_span) */
    int every_epochs;        /* step: one equal jump every this many epochs */
  } temperature;

  int n_features;
  cfg_feature_t features[CFG_MAX_FEATURES];

  struct {
    int enabled;
    int feature;             /* index into features: the pair whose features it judges */
    cfg_adversarial_loss_t loss;
    double lr;               /* the discriminator's own Adam learning rate */
    int hidden;              /* feature → hidden → 1 */
  } adversarial;

  int n_grow;
  cfg_grow_t grow[CFG_MAX_GROW];

  int batch_size;
  int n_stages;
  cfg_stage_t stages[CFG_MAX_STAGES];
  int checkpoint_every;      /* epochs between checkpoints; 0 = only the final one */
  int checkpoint_keep;       /* the newest epoch checkpoints kept on disk; 0 = all */
  int max_attempts;          /* runs of a worker that crashes (a signal, an exit without a
                                result) before the experiment fails; resumed from a checkpoint */
  int grad_norm_every;       /* steps between per-layer gradient norms */

  /* What a cluster job asks for (the Slurm executor's sbatch options); 0 / "" = the
   * cluster's default. A local worker ignores them. */
  struct {
    int cpus;                /* --cpus-per-task */
    int64_t memory_mb;       /* --mem, in MiB */
    int64_t time_seconds;    /* --time */
    char partition[CFG_PARTITION_MAX]; /* --partition: overrides mapsaged --slurm-partition */
  } resources;
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

/* Adds an error found outside this file (the daemon's checks against its database). */
void cfg_add_error(cfg_errors_t *errors, const char *path, const char *format, ...) __attribute__((format(printf, 3, 4)));

/* The errors as [{"path": …, "message": …}, …]. The caller owns the reference. */
json_t *cfg_errors_to_json(const cfg_errors_t *errors);

/* Checks a distillation config against its teacher's config: the teacher trains without a
 * teacher of its own, was trained on the same data (below), and every feature pair names a
 * teacher layer whose output an adapter can reach.
 *
 * "The same data" is what decides which examples the teacher saw: the dataset (name), its
 * split_seed and val_size (together they pick the validation examples, and the
 * standardisation statistics come from the rest). Otherwise the teacher may have trained on
 * the student's validation examples, and its inputs would be standardised differently from
 * what it learned on: an error at "dataset". train_limit may differ: the limited training
 * set is a prefix of the same shuffled training part, so a teacher with more examples saw
 * more of the student's training data, never its validation or test data, and the
 * statistics do not depend on it. The synthetic train_size and test_size may differ too:
 * validation, training and test examples are generated from streams of their own, so a
 * smaller set's are a prefix of a larger one's (its statistics then differ by sampling
 * noise only: every example comes from the same distribution).
 *
 * A teacher trained before split_seed existed parses with the default, CFG_SPLIT_SEED; its
 * split really followed its seed, so it shares the student's split only if its seed was
 * CFG_SPLIT_SEED (the default seed). It still loads: nothing stored says otherwise.
 *
 * Errors are added to `errors` (paths into the student's config). Returns 0 or -EINVAL. The daemon calls it at submission for experiment teachers; the worker calls it
 * with the config stored in a teacher checkpoint. */
int cfg_check_teacher(const cfg_experiment_t *student, const cfg_experiment_t *teacher, cfg_errors_t *errors);

/* A safetensors teacher's own config: the student's (same data, split, batch size) with the
 * teacher's layers and nothing to distil. What the worker builds the teacher from and the
 * daemon checks the feature pairs against. */
void cfg_safetensors_teacher(const cfg_experiment_t *student, cfg_experiment_t *teacher);

/* The index of the layer called `name` (its own name, or the automatic one: "linear1"), or
 * -1. */
int cfg_layer_index(const cfg_experiment_t *config, const char *name);
/* The layer's name as metrics and features know it: its own, else kind and position among
 * the layers of its kind ("linear0", "relu2"). */
void cfg_layer_display_name(const cfg_experiment_t *config, int layer, char *out, size_t size);
/* Floats in a layer's output for one example. */
int cfg_shape_size(const cfg_shape_t *shape);

/* Total epochs over all stages, and the stage an epoch (0-based) belongs to. */
int cfg_total_epochs(const cfg_experiment_t *config);
int cfg_stage_of_epoch(const cfg_experiment_t *config, int epoch);

/* Where the run distils: [first, end) in 0-based epochs, from the start of the first stage
 * whose distill_weight > 0 to the end of the last one (the stages between them included,
 * whatever their weights). A run that never distils: the whole run. */
void cfg_distill_span(const cfg_experiment_t *config, double *first, double *end);
/* Schedules. `epoch` is 0-based and may carry the fraction of the epoch done. The
 * temperature moves from start to end over cfg_distill_span(): start before it, end after. */
double cfg_temperature_at(const cfg_experiment_t *config, double epoch);
/* The learning-rate factor (multiplying the stage's lr) at a 0-based fractional epoch. */
double cfg_lr_factor_at(const cfg_experiment_t *config, double epoch);
/* Whether any stage gives the term a weight: what the worker needs to compute. */
int cfg_uses_distillation(const cfg_experiment_t *config);
int cfg_uses_features(const cfg_experiment_t *config);
int cfg_uses_adversarial(const cfg_experiment_t *config);

const char *cfg_layer_kind_name(cfg_layer_kind_t kind);

/* The model's input shape, its floats and its class count: the dataset's, which validation
 * fills in; Fashion-MNIST's (1×28×28, ten) for a config built by hand that leaves them 0. */
cfg_shape_t cfg_input_shape(const cfg_experiment_t *config);
int cfg_inputs(const cfg_experiment_t *config);
int cfg_classes(const cfg_experiment_t *config);

/* Reads a registered dataset's source from the config's "dataset" object (what mapsaged
 * stores: format, train, test, names, layout, classes, checksum), adding errors under
 * `path`; and writes it back. Shared with the daemon's registry, which keeps the same
 * object. */
void cfg_dataset_source_parse(const json_t *object, const char *path, cfg_dataset_source_t *source,
                              cfg_errors_t *errors);
void cfg_dataset_source_to_json(const cfg_dataset_source_t *source, json_t *object);

/* ---------------------------------------------------------------------------------------
 * Memory: what a worker will need for a config, so that the daemon can refuse at
 * submission a run the machine cannot hold (--max-worker-memory) and give its worker a
 * matching limit. An ESTIMATE, documented in docs/config.md ("Memory"): the large
 * allocations are counted exactly as the worker makes them, the rest (the process, libc,
 * OpenBLAS's buffers) as one measured constant. */

/* The model's slabs in floats (int32 for indices), exactly as worker/nn.c's nn_model_create
 * (forward_only = 0) or nn_model_create_inference (1) sizes them for max_batch examples:
 * the fields of nn_model_t of the same names. tests/test_nn.c compares the two on several
 * networks, so a change to one that the other misses fails there. -EINVAL when the layers do
 * not fit (the same cases nn_model_create refuses). `config` must have been validated. */
typedef struct {
  size_t n_params, n_optim_state, n_activations, n_workspace, n_indices;
} cfg_slabs_t;
int cfg_model_slabs(const cfg_experiment_t *config, int max_batch, int forward_only, cfg_slabs_t *out);
/* The scratch a convolution of c input channels, a k × k kernel at `stride`, and oc output
 * channels of oh × ow = p pixels takes per thread (worker/conv2d.c): from the scratch's
 * first 64-byte line, one example's im2col (C·K·K = ckk taps × p, rows cfg_conv_col_stride(p)
 * apart; its dcol in the backward) or, when larger and the forward takes Winograd, its
 * transforms (cfg_conv_winograd); one example's output (oc × p; its output gradient in the
 * backward) and, for the backward, its weight and bias gradients and the output gradient
 * transposed (p × oc). */
size_t cfg_conv_scratch_floats(size_t c, size_t k, size_t stride, size_t oh, size_t ow, size_t oc,
                               int backward);
/* The floats of a k × n operand in worker/kernels.h's panels on any set: ⌈n/32⌉·32·k. */
size_t cfg_panel_floats(size_t k, size_t n);
/* The packed operands of a training model's linear layer of `in` inputs and `out` outputs
 * on batches of up to `batch` (cfg_panel_floats each): its forward's Wᵀ, or its input
 * gradient's W beside its weight gradient's input, the larger. A training model keeps the
 * largest layer's, an inference model every layer's Wᵀ (packed once: cfg_panel_floats(in,
 * out) each); both from a 64-byte line (15 floats more). */
size_t cfg_linear_panel_floats(size_t in, size_t out, size_t batch);
/* Whether that convolution's forward takes Winograd F(2×2, 3×3) (worker/kernels.h): 3 × 3
 * of stride 1 with at least 8 input channels (its 16 products per example have K = c; the
 * first layer of an image network, c = 1 or 3, stays with im2col). Its rows of tiles are
 * cfg_conv_winograd_ld(tiles) floats apart (room for a vector of the widest kernel set past
 * the last tile); its work buffer takes cfg_conv_winograd_work_floats(th, tw) floats for
 * th × tw tiles, the input's plane in rows of cfg_conv_winograd_pitch(tw). */
int cfg_conv_winograd(size_t c, size_t k, size_t stride);
size_t cfg_conv_winograd_ld(size_t tiles);
size_t cfg_conv_winograd_pitch(size_t tw);
size_t cfg_conv_winograd_work_floats(size_t th, size_t tw);
/* Where that forward's buffers lie, in floats from U (U[16][oc][c], then V[16][c][ld],
 * M[oc][16][ld] and the work), over tiles_high × tiles_wide tiles: the one layout both the
 * estimate above and worker/conv2d.c's scratch read. */
typedef struct {
  size_t tiles_high, tiles_wide, ld;
  size_t v, m, work, total;
} cfg_winograd_layout_t;
cfg_winograd_layout_t cfg_conv_winograd_layout(size_t c, size_t oh, size_t ow, size_t oc);
/* The distance in floats between the rows of that im2col: p rounded up to whole 64-byte
 * lines, an odd number of them. The forward's product reads the im2col in panels of 16
 * columns, a row's part of which then is one aligned line (at p = 121, an 11 × 11 output,
 * rows 484 bytes apart put three loads in four across two lines, and a panel's
 * 288 rows over L1's 32 KiB), and an odd number of lines between rows spreads a panel over
 * all of L1's sets (an even one would leave half of them, or fewer, to hold it). */
size_t cfg_conv_col_stride(size_t p);

/* What the process, libc and OpenBLAS hold beyond the counted allocations: a worker's peak
 * RSS minus what it counts (Release build, OpenBLAS 0.3.21, 1 and 2 threads): 10.3 MiB for
 * a 200-example synthetic run, 10.2 for the baseline MLP on Fashion-MNIST, 15.6 for the CNN
 * teacher, 25 for a 2048-wide MLP at batch 512 (OpenBLAS touches more of its GEMM buffer for
 * larger products; that buffer is 32 MiB, shared by its threads). 40 MiB covers a small
 * process plus the whole buffer. docs/config.md ("Memory") has the table. */
#define CFG_MEMORY_OVERHEAD ((size_t)40 << 20)

/* The estimate, in bytes, by share; total is their sum. */
typedef struct {
  size_t dataset;        /* the float images and labels of every split, the trainer's order */
  size_t loading;        /* the raw uint8 images and the shuffle while loading: freed before the
                            model exists, so the total counts max(loading, what follows) */
  size_t student;        /* parameters, gradients, optimizer state, per-term gradients */
  size_t activations;    /* activations and their gradients, im2col and scratch, masks, argmaxes,
                            the trainer's batch buffers: what grows with batch_size */
  size_t teacher;        /* the teacher's inference model and buffers */
  size_t teacher_cache;  /* its cached outputs, within the budget */
  size_t distill;        /* adapters, gates, discriminator: params, grads, Adam, scratch */
  size_t checkpoint;     /* the file a checkpoint is written from, built whole in memory */
  size_t overhead;       /* CFG_MEMORY_OVERHEAD */
  size_t total;          /* overhead + dataset + max(loading, every other share) */
  int teacher_counted;   /* 0 when the run has a teacher whose config was not given */
} cfg_memory_t;

/* Estimates the memory a worker needs to run `config` (validated). `teacher` is the
 * teacher's config for a distilling run, or NULL when it is not known (a checkpoint teacher:
 * its config lives inside the checkpoint file, which the daemon does not open at submission)
 * — then the teacher and its cache are left out and teacher_counted says so.
 * `teacher_cache_budget` is the worker's MAPSAGE_TEACHER_CACHE_MB in bytes. Returns 0, or
 * -EINVAL when a network does not fit (validation refuses those first). */
/* The worker's teacher cache budget (worker/teacher.h), which the daemon needs to estimate. */
#define CFG_TEACHER_CACHE_DEFAULT_MB 2048
#define CFG_TEACHER_CACHE_ENV "MAPSAGE_TEACHER_CACHE_MB"
int cfg_memory_estimate(const cfg_experiment_t *config, const cfg_experiment_t *teacher,
                        size_t teacher_cache_budget, cfg_memory_t *out);

/* "about 9.7 GiB (dataset 0.2, student 0.1, teacher cache 2.0, activations 7.4 for batch
 * 4096)" into `out`, and returns the config path of the largest share (what an error about
 * it points at): "dataset", "model.layers", "batch_size", "teacher" or "features". */
const char *cfg_memory_describe(const cfg_memory_t *memory, const cfg_experiment_t *config, char *out,
                                size_t size);

#endif
