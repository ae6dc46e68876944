/* main.c — mapsage-worker: runs one experiment and reports it as events on stdout.
 *
 * The daemon spawns it with the experiment's config on stdin and reads one JSON event per
 * line from stdout (started, metric…, eval…, stage, checkpoint, log, finished); stderr is the
 * run's human log. With --server it runs where the daemon did not start it (a cluster node):
 * the config comes from GET /api/experiments/{id} and the same events go to POST
 * /api/experiments/{id}/events (report.h). With --checkpoint-dir it writes epoch-NNNN.ckpt
 * files there; with --resume it goes on from one. A distillation run loads its teacher from
 * the teacher's checkpoint (the config's teacher.checkpoint, which the daemon fills in for an
 * experiment teacher it spawns a worker for). Exit status: 0 succeeded, 1 failed (a
 * `finished` event says why), 2 bad command line, 3 the daemon took no more events (the run
 * was cancelled there), 128+N stopped by signal N (SIGTERM → 143, with no `finished` event:
 * the daemon, which sent the signal, decides the run was cancelled). With --parent-pid (the
 * daemon passes its own) it also gets SIGTERM when the daemon dies, however it dies, and
 * stops as it would on the daemon's SIGTERM, with a checkpoint; its events then go nowhere. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cblas.h>
#include <curl/curl.h>
#include <jansson.h>

#include "blas_kernels.h"
#include "config.h"
#include "data.h"
#include "dataset_formats.h"
#include "event.h"
#include "kernels.h"
#include "nn.h"
#include "options.h"
#include "report.h"
#include "teacher.h"
#include "train.h"
#include "util.h"
#include "version.h"

#define WORKER_CONFIG_LIMIT (1 << 20)
#define WORKER_MAX_THREADS 256

/* The signal that asked us to stop (SIGTERM or SIGINT), 0 while none did. The training loop
 * reads it before every step. */
static volatile sig_atomic_t worker_stop;

/* The daemon that started us (--parent-pid), or 0 when started by hand. */
static pid_t worker_parent;

static void worker_on_signal(int signal_number) {
  if (worker_parent != 0 && getppid() != worker_parent) {
    /* The daemon is gone (PR_SET_PDEATHSIG): nobody reads our pipes, and a write to them
     * would fail the run before its stop checkpoint. Everything here is signal-safe. */
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null >= 0) {
      dup2(null, STDOUT_FILENO);
      dup2(null, STDERR_FILENO);
      close(null);
    }
  }
  worker_stop = signal_number;
}

/* Where events go: stdout under the daemon, the daemon's HTTP API with --server. */
static FILE *worker_events;

/* The options, their --help and their parsing in one table (common/options.h). */
enum {
  OPTION_CHECKPOINT_DIR = 256, OPTION_DATASET_DIR, OPTION_RESUME, OPTION_SERVER, OPTION_TOKEN_FILE,
  OPTION_PARENT_PID, OPTION_MEMORY_LIMIT, OPTION_VERSION, OPTION_SECRET_FILE, OPTION_CONFIG_FILE,
};

static const option_t worker_options[] = {
  {'e', "experiment", 'e', "ID", "the experiment's id in the daemon (required)"},
  {OPTION_SERVER, "server", 0, "URL", "run it for the daemon at URL (http://host:8787) from here:\n"
   "the config from the daemon, the events to it over HTTP"},
  {OPTION_TOKEN_FILE, "token-file", 0, "FILE", "the daemon's bearer token, with --server (env MAPSAGE_TOKEN_FILE)"},
  {OPTION_SECRET_FILE, "secret-file", 0, "FILE", "the run's secret, with --server: a job the daemon submitted\n"
   "(Slurm) claims its run with it (docs/slurm.md)"},
  {OPTION_CONFIG_FILE, "config-file", 0, "FILE", "with --server: the config from this file, not the daemon's API\n"
   "(the daemon writes it with the teacher's checkpoint filled in)"},
  {OPTION_CHECKPOINT_DIR, "checkpoint-dir", 0, "DIR", "write a checkpoint (epoch-NNNN.ckpt) there every\n"
   "checkpoint_every epochs and after the last; none without it"},
  {OPTION_DATASET_DIR, "dataset-dir", 0, "DIR", "Fashion-MNIST's IDX .gz files (env MAPSAGE_DATASET_DIR,\n"
   "default " DATA_DEFAULT_DIR ")"},
  {'t', "threads", 't', "N", "threads for the training step (default 1)"},
  {OPTION_RESUME, "resume", 0, "PATH", "go on from this checkpoint of the same config"},
  {OPTION_MEMORY_LIMIT, "memory-limit", 0, "SIZE", "limit the process's data (RLIMIT_DATA) to SIZE bytes (or 512M,\n"
   "4G); the daemon passes one from the run's memory estimate"},
  {OPTION_PARENT_PID, "parent-pid", 0, "PID", "stop (SIGTERM) when process PID, the daemon that started us,\n"
   "dies; the daemon passes it"},
  {'h', "help", 'h', NULL, "this text"},
  {OPTION_VERSION, "version", 0, NULL, "print the version and exit"},
};

static void worker_usage(FILE *out) {
  fputs("usage: mapsage-worker --experiment ID [--checkpoint-dir DIR] [--dataset-dir DIR]\n"
        "                      [--threads N] [--resume PATH] [--server URL [--token-file FILE]]\n"
        "                      [--parent-pid PID]\n"
        "\n"
        "Runs one MapSage experiment. The experiment config (JSON) is read from stdin; events\n"
        "(one JSON object per line) go to stdout; progress goes to stderr.\n"
        "\n"
        "Options:\n",
        out);
  options_print_help(worker_options, ARRAY_SIZE(worker_options), out);
}

/* --memory-limit in bytes, 0 without one: a failure for want of memory names it. */
static size_t worker_memory_limit;

/* Reports a failure as the `finished` event (and on stderr unless `quiet`: the caller has
 * said it there already); returns main's exit status. */
static int worker_fail(int quiet, const char *format, ...) __attribute__((format(printf, 2, 3)));

static int worker_fail(int quiet, const char *format, ...) {
  char message[1024];
  va_list args;
  va_start(args, format);
  vsnprintf(message, sizeof message, format, args);
  va_end(args);
  if (worker_memory_limit && strstr(message, "memory")) {
    size_t used = strlen(message);
    snprintf(message + used, sizeof message - used,
             " (the worker's memory limit, --memory-limit, is %.0f MiB: mapsaged sets it from the run's "
             "estimate and --max-worker-memory)", (double)worker_memory_limit / 1048576.0);
  }
  if (!quiet) fprintf(stderr, "mapsage-worker: %s\n", message);
  ev_write(worker_events, json_pack("{s:s, s:s, s:s}", "event", "finished", "status", "failed", "error",
                                    message));
  return 1;
}

/* Parses a whole decimal integer in [minimum, maximum]; -1 when it is not one. */
static int worker_parse_integer(const char *text, long long minimum, long long maximum,
                                long long *out) {
  char *end;
  errno = 0;
  long long value = strtoll(text, &end, 10);
  if (errno || end == text || *end || value < minimum || value > maximum) return -1;
  *out = value;
  return 0;
}

/* The `started` event's teacher: where it came from, its test accuracy, its size. */
static json_t *worker_teacher_json(const cfg_experiment_t *config, const teacher_t *teacher) {
  json_t *object = json_pack("{s:s, s:f, s:f, s:I}", "checkpoint", teacher->path, "accuracy",
                             teacher->test_accuracy, "loss", teacher->test_loss, "params",
                             (json_int_t)teacher_params(teacher));
  if (object && config->teacher.kind == CFG_TEACHER_EXPERIMENT)
    json_object_set_new(object, "experiment", json_integer(config->teacher.experiment));
  return object;
}

int main(int argc, char **argv) {
  long long experiment = 0, threads = 1, parent = 0;
  const char *dataset_dir = getenv("MAPSAGE_DATASET_DIR");
  const char *resume = NULL, *checkpoint_dir = NULL, *server = NULL;
  const char *token_file = getenv("MAPSAGE_TOKEN_FILE");
  const char *secret_file = NULL, *config_file = NULL;
  options_t parser;
  options_init(&parser, worker_options, ARRAY_SIZE(worker_options), argc, argv);
  parser.abbreviations = 1; /* getopt_long's rule, which the worker had first */
  int option;
  while ((option = options_next(&parser)) != OPTIONS_END) {
    const char *value = parser.value;
    switch (option) {
    case 'e':
      if (worker_parse_integer(value, 1, INT64_MAX, &experiment) != 0) {
        fprintf(stderr, "mapsage-worker: --experiment: expected a positive integer, not \"%s\"\n", value);
        return 2;
      }
      break;
    case 't':
      if (worker_parse_integer(value, 1, WORKER_MAX_THREADS, &threads) != 0) {
        fprintf(stderr, "mapsage-worker: --threads: expected an integer in 1–%d, not \"%s\"\n",
                WORKER_MAX_THREADS, value);
        return 2;
      }
      break;
    case OPTION_CHECKPOINT_DIR: checkpoint_dir = value; break;
    case OPTION_DATASET_DIR: dataset_dir = value; break;
    case OPTION_RESUME: resume = value; break;
    case OPTION_SERVER: server = value; break;
    case OPTION_TOKEN_FILE: token_file = value; break;
    case OPTION_SECRET_FILE: secret_file = value; break;
    case OPTION_CONFIG_FILE: config_file = value; break;
    case OPTION_PARENT_PID:
      if (worker_parse_integer(value, 1, INT32_MAX, &parent) != 0) {
        fprintf(stderr, "mapsage-worker: --parent-pid: expected a process id, not \"%s\"\n", value);
        return 2;
      }
      break;
    case OPTION_MEMORY_LIMIT:
      if (util_parse_size(value, &worker_memory_limit) != 0) {
        fprintf(stderr, "mapsage-worker: --memory-limit: expected a size (bytes, or 512M, 4G), not \"%s\"\n", value);
        return 2;
      }
      break;
    case 'h':
      worker_usage(stdout);
      return 0;
    case OPTION_VERSION:
      printf("mapsage-worker %s\n", MAPSAGE_VERSION);
      return 0;
    case OPTIONS_ARGUMENT:
      fprintf(stderr, "mapsage-worker: unexpected argument \"%s\"\n", value);
      worker_usage(stderr);
      return 2;
    default:
      fprintf(stderr, "mapsage-worker: %s\n", parser.error);
      worker_usage(stderr);
      return 2;
    }
  }
  if (experiment == 0) {
    fprintf(stderr, "mapsage-worker: --experiment ID is required\n");
    worker_usage(stderr);
    return 2;
  }
  if (!dataset_dir || !dataset_dir[0]) dataset_dir = DATA_DEFAULT_DIR;
  if ((secret_file || config_file) && !server) {
    fprintf(stderr, "mapsage-worker: --secret-file and --config-file go with --server\n");
    return 2;
  }
  if (server && strncmp(server, "http://", 7) != 0 && strncmp(server, "https://", 8) != 0) {
    fprintf(stderr, "mapsage-worker: --server: expected http://host:port, not \"%s\"\n", server);
    return 2;
  }
  worker_events = stdout;

  /* SIGTERM (the daemon's cancel) and SIGINT stop training at the next step. A daemon that
   * went away must not kill us silently mid-write: EPIPE is reported instead. */
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = worker_on_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, NULL);
  sigaction(SIGINT, &action, NULL);
  signal(SIGPIPE, SIG_IGN);
  if (parent != 0) {
    /* The daemon's SIGKILL or crash must not leave us training for nobody. The signal comes
     * when the thread that forked us ends: the daemon's loop thread, which lives as long as
     * it does. If it died before the prctl, our parent is already someone else: stop now. */
    worker_parent = (pid_t)parent;
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0)
      fprintf(stderr, "mapsage-worker: cannot ask to stop with the daemon: %s\n", strerror(errno));
    if (getppid() != worker_parent) raise(SIGTERM);
  }

  /* Before the config is read from stdin: this may re-execute the worker (blas_kernels.h). */
  blas_report_t blas;
  blas_kernels_start(argv, &blas, stderr);
  openblas_set_num_threads((int)threads);
  char kernels_error[160];
  nn_dense_t dense;
  if (kernels_use_from_env(kernels_error, sizeof kernels_error) != 0 ||
      nn_dense_from_env(&dense, kernels_error, sizeof kernels_error) != 0) {
    fprintf(stderr, "mapsage-worker: %s\n", kernels_error);
    return 2;
  }
  /* RLIMIT_DATA, not RLIMIT_AS: the address space counts what OpenBLAS and glibc reserve and
   * never touch, and would refuse healthy runs. RLIMIT_DATA counts private writable mappings
   * (the heap, malloc's mmaps): past it malloc returns NULL and the run fails through its
   * -ENOMEM paths, saying so (worker_fail). OpenBLAS's threads each malloc a 128 MiB buffer
   * the first time they run and retry for ever when that fails (measured: a worker under a
   * 100 MiB limit hung in blas_memory_alloc, at its first product or at exit), so one
   * product on every thread comes first: what is mapped when the limit is set is kept. */
#if defined(__SANITIZE_ADDRESS__)
  /* AddressSanitizer maps terabytes of shadow, all counted by RLIMIT_DATA: under it every
   * later mapping would fail. A sanitized build runs without the limit. */
  if (worker_memory_limit) {
    fprintf(stderr, "mapsage-worker: --memory-limit ignored: AddressSanitizer's shadow memory counts against it\n");
    worker_memory_limit = 0;
  }
#endif
  if (worker_memory_limit) {
    static float a[256 * 256], b[256 * 256], c[256 * 256];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 256, 256, 256, 1.0f, a, 256, b, 256, 0.0f, c, 256);
    struct rlimit limit = {.rlim_cur = worker_memory_limit, .rlim_max = worker_memory_limit};
    if (setrlimit(RLIMIT_DATA, &limit) != 0) {
      fprintf(stderr, "mapsage-worker: --memory-limit: setrlimit(RLIMIT_DATA): %s\n", strerror(errno));
      return 2;
    }
  }

  char *text = NULL;
  size_t length = 0;
  cfg_experiment_t *config = NULL; /* ~10 KiB: on the heap rather than the stack */
  data_set_t data = {0};
  nn_model_t model = {0};
  teacher_t teacher;
  train_t trainer;
  int have_data = 0, have_model = 0, have_teacher = 0, have_trainer = 0, status = 1;
  char error[2048], checkpoints[PATH_MAX];

  int rc;
  char *token = NULL;
  if (server) {
    /* Until the stream is open, failures can only be said on stderr. */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    size_t token_length = 0;
    if (token_file && token_file[0] && (rc = util_read_file(token_file, 4096, &token, &token_length)) != 0) {
      fprintf(stderr, "mapsage-worker: --token-file %s: %s\n", token_file, strerror(-rc));
      return 2;
    }
    while (token && token_length > 0 && strchr(" \t\r\n", token[token_length - 1])) token[--token_length] = '\0';
    char *secret = NULL;
    size_t secret_length = 0;
    if (secret_file && (rc = util_read_file(secret_file, 4096, &secret, &secret_length)) != 0) {
      fprintf(stderr, "mapsage-worker: --secret-file %s: %s\n", secret_file, strerror(-rc));
      free(token);
      return 2;
    }
    while (secret && secret_length > 0 && strchr(" \t\r\n", secret[secret_length - 1])) secret[--secret_length] = '\0';
    /* Hex, as the daemon makes it: anything else would write a header of its choosing. */
    if (secret && (secret_length == 0 || secret_length > 200 ||
                   strspn(secret, "0123456789abcdef") != secret_length)) {
      fprintf(stderr, "mapsage-worker: --secret-file %s: not a run secret (hex, under 200 characters)\n",
              secret_file);
      free(token);
      free(secret);
      return 2;
    }
    const report_target_t target = {server, experiment, token, secret};
    rc = config_file ? util_read_file(config_file, WORKER_CONFIG_LIMIT, &text, &length)
                     : report_fetch_config(&target, &text, &length, error, sizeof error);
    if (rc != 0) {
      if (config_file) fprintf(stderr, "mapsage-worker: --config-file %s: %s\n", config_file, strerror(-rc));
      else fprintf(stderr, "mapsage-worker: %s\n", error);
      free(token);
      free(secret);
      return 1;
    }
    worker_events = report_open(&target, &worker_stop, error, sizeof error);
    free(secret); /* report_open copied it into its headers */
    if (worker_events == NULL) {
      fprintf(stderr, "mapsage-worker: %s\n", error);
      free(token);
      free(text);
      return 1;
    }
  } else if ((rc = util_read_file("-", WORKER_CONFIG_LIMIT, &text, &length)) != 0) {
    status = worker_fail(0, "cannot read the config from stdin: %s",
                         rc == -EFBIG ? "larger than 1 MiB" : strerror(-rc));
    goto out;
  }
  config = malloc(sizeof *config);
  cfg_errors_t *errors = malloc(sizeof *errors);
  if (!config || !errors) {
    free(errors);
    status = worker_fail(0, "out of memory");
    goto out;
  }
  if (cfg_parse(text, length, config, errors) != 0) {
    int kept = errors->count < CFG_MAX_ERRORS ? errors->count : CFG_MAX_ERRORS;
    for (int i = 0; i < kept; i++)
      fprintf(stderr, "mapsage-worker: invalid config: %s%s%s\n", errors->items[i].path,
              errors->items[i].path[0] ? ": " : "", errors->items[i].message);
    const cfg_error_t *first = &errors->items[0];
    status = worker_fail(1, "invalid config: %s%s%s", first->path, first->path[0] ? ": " : "",
                         first->message);
    free(errors);
    goto out;
  }
  free(errors);

  fprintf(stderr, "mapsage-worker %s: experiment %lld \"%s\", %d OpenBLAS thread%s\n",
          MAPSAGE_VERSION, experiment, config->name, (int)threads, threads == 1 ? "" : "s");
  rc = data_load(&data, config, dataset_dir, error, sizeof error);
  if (rc) {
    status = worker_fail(0, "cannot load the dataset: %s", error);
    goto out;
  }
  have_data = 1;
  rc = nn_model_create(&model, config, config->batch_size);
  if (rc) {
    status = worker_fail(0, "cannot build the model: %s", strerror(-rc));
    goto out;
  }
  have_model = 1;
  /* The convolutions split each batch across as many threads as OpenBLAS has. */
  rc = nn_model_set_threads(&model, (int)threads, error, sizeof error);
  if (rc) {
    status = worker_fail(0, "cannot start the model's threads: %s", error);
    goto out;
  }

  /* Checkpoints go to the directory's real path, which the daemon records and hands back
   * (as --resume, or as a student's teacher) to workers that may not share our cwd. */
  if (checkpoint_dir) {
    rc = util_make_directories(checkpoint_dir);
    if (rc || !realpath(checkpoint_dir, checkpoints)) {
      status = worker_fail(0, "--checkpoint-dir %s: %s", checkpoint_dir, strerror(rc ? -rc : errno));
      goto out;
    }
  }
  if (config->teacher.kind != CFG_TEACHER_NONE) {
    rc = teacher_load(&teacher, config, config->batch_size, error, sizeof error);
    if (rc) {
      status = worker_fail(0, "%s", error);
      goto out;
    }
    have_teacher = 1;
    if (teacher_evaluate(&teacher, &data.test) != 0) {
      status = worker_fail(0, "teacher %s: its test loss is not finite", teacher.path);
      goto out;
    }
    fprintf(stderr, "teacher %s: %zu parameters, test accuracy %.4f, loss %.4f\n", teacher.path,
            teacher_params(&teacher), teacher.test_accuracy, teacher.test_loss);
  }
  /* A convolutional model on several threads: its convolutions split the batch on the
   * model's pool, and OpenBLAS runs on one thread, called by each of the pool's threads for
   * its share of a dense layer (nn.c, "Linear"). At 2 threads OpenBLAS's own helper kept
   * spinning after each dense product on the core the pool needs: bench's CNN went from
   * 2,556-2,917 to 2,918-3,328 samples/s, 6 of 6 alternated rounds, and the dense layers on
   * the pool took it a further +5% (bench/README.md). Not with a teacher, whose model took
   * OpenBLAS's count at load and whose dense layers were not measured so. */
  if (threads > 1 && !have_teacher && nn_model_has_convolution(&model)) openblas_set_num_threads(1);
  train_options_t train_options = {.events = worker_events,
                                   .log = stderr,
                                   .stop = &worker_stop,
                                   .teacher = have_teacher ? &teacher : NULL,
                                   .checkpoint_dir = checkpoint_dir ? checkpoints : NULL};
  rc = train_init(&trainer, &model, config, &data, &train_options, error, sizeof error);
  if (rc) {
    status = worker_fail(0, "%s", error);
    goto out;
  }
  have_trainer = 1;
  if (resume) {
    rc = train_resume(&trainer, resume, error, sizeof error);
    if (rc) {
      status = worker_fail(0, "%s", error);
      goto out;
    }
    fprintf(stderr, "resuming from %s: epoch %d done, step %lld\n", resume, trainer.epoch,
            (long long)trainer.step);
  }

  char host[256] = "";
  gethostname(host, sizeof host - 1);
  json_t *dataset = json_pack("{s:s, s:i, s:i, s:i, s:i, s:[i, i, i]}", "name", data.name, "train", data.train.n,
                              "val", data.val.n, "test", data.test.n, "classes", data.classes, "input",
                              data.input.channels, data.input.height, data.input.width);
  if (dataset && config->dataset.source.checksum[0]) {
    json_object_set_new(dataset, "checksum", json_string(config->dataset.source.checksum));
  } else if (dataset && strcmp(data.name, "fashion-mnist") == 0) {
    /* The registry learns Fashion-MNIST's checksum only when it is first read; the run
     * records the files it read itself (30 MB hashed: about 0.1 s, once a run). */
    cfg_dataset_source_t source;
    char checksum[65];
    dataset_fashion_mnist_source(&source, dataset_dir);
    if (dataset_checksum(&source, checksum, error, sizeof error) == 0)
      json_object_set_new(dataset, "checksum", json_string(checksum));
    else
      fprintf(stderr, "mapsage-worker: Fashion-MNIST's checksum: %s\n", error);
  }
  json_t *started = json_pack("{s:s, s:I, s:I, s:s, s:i, s:s, s:o, s:o}", "event", "started",
                              "experiment", (json_int_t)experiment, "pid", (json_int_t)getpid(),
                              "host", host, "threads", (int)threads, "version", MAPSAGE_VERSION,
                              "params", train_params_json(&trainer), "dataset", dataset);
  if (started) {
    json_object_set_new(started, "blas", blas_kernels_json(&blas));
    json_object_set_new(started, "kernels",
                        json_pack("{s:s, s:i, s:s}", "set", kernels_isa_name(kernels_current()), "floats_per_vector",
                                  kernels_isa_width(kernels_current()), "dense", nn_dense_name(dense)));
  }
  if (started && have_teacher) json_object_set_new(started, "teacher", worker_teacher_json(config, &teacher));
  if (started && resume) json_object_set_new(started, "resumed_from", json_string(resume));
  if (ev_write(worker_events, started) != 0) {
    fprintf(stderr, "mapsage-worker: cannot write the started event\n");
    goto out;
  }
  fprintf(stderr, "%s: %d train, %d val, %d test examples; %zu parameters (%zu training now); "
          "%d epochs\n", data.name, data.train.n, data.val.n, data.test.n, model.n_params,
          nn_model_active_params(&model), cfg_total_epochs(config));

  train_summary_t summary;
  rc = train_loop(&trainer, &summary, error, sizeof error);
  if (rc) {
    status = worker_fail(0, "%s", error);
    goto out;
  }
  if (summary.stopped && worker_stop == REPORT_STOPPED_BY_DAEMON) {
    fprintf(stderr, "mapsage-worker: stopped after step %lld: the daemon took no more events\n",
            (long long)summary.steps);
    status = 3;
    goto out;
  }
  if (summary.stopped) {
    int signal_number = (int)worker_stop;
    fprintf(stderr, "mapsage-worker: stopped by signal %d (%s) after step %lld\n", signal_number,
            strsignal(signal_number), (long long)summary.steps);
    ev_write_log(worker_events, "warning", "stopped by signal %d (%s) after step %lld", signal_number,
                 strsignal(signal_number), (long long)summary.steps);
    status = 128 + signal_number;
    goto out;
  }
  fprintf(stderr, "finished: %d epochs, %lld steps in %.1f s (%.0f examples/s); test accuracy %.4f\n",
          summary.epochs, (long long)summary.steps, summary.seconds, summary.examples_per_s,
          summary.final_test_accuracy);
  if (ev_write(worker_events, json_pack("{s:s, s:s, s:o}", "event", "finished", "status", "succeeded",
                                        "summary", train_summary_to_json(&summary))) != 0) {
    fprintf(stderr, "mapsage-worker: cannot write the finished event\n");
    goto out;
  }
  status = 0;

out:
  if (worker_events != stdout && fclose(worker_events) != 0 && status == 0) {
    fprintf(stderr, "mapsage-worker: the last events did not reach the daemon\n");
    status = 1;
  }
  if (server) curl_global_cleanup();
  free(token);
  if (have_trainer) train_free(&trainer);
  if (have_teacher) teacher_free(&teacher);
  if (have_model) nn_model_free(&model);
  if (have_data) data_free(&data);
  free(config);
  free(text);
  return status;
}
