/* slurm.c — the Slurm executor (see slurm.h): batch jobs for runs, their states polled.
 *
 * A job's files live in the run's directory, <data_dir>/experiments/<id>/, which the nodes
 * must see at the same path (shared storage): job.sh (the batch script), job.secret (the
 * run's secret, 0600: never on a command line squeue shows), job.config.json (the config
 * with the teacher's checkpoint filled in), job.resume (the checkpoint a requeued job goes
 * on from, rewritten as checkpoints are recorded) and job.log (the job's output). The
 * script checks first that it sees that directory, and says so when it does not.
 *
 * The secret is kept in memory and in job.secret only, not in the database (docs/security.md):
 * a restarted daemon reads it back from the file of each job it reattaches to. */
#include "slurm.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define LOG_TAIL_BYTES 4096  /* of job.log, quoted when a job fails */
#define SECRET_BYTES 32
/* A pending reason that means "never" is believed once it has held this long: Slurm 22.05
 * first says PartitionConfig for a job over the partition's MaxTime, and PartitionTimeLimit
 * about half a second later (measured on the test cluster), on its next scheduling pass. */
#define HOPELESS_AFTER_S 3.0

typedef struct job {
  struct job *next;
  int64_t row, experiment_id;
  char job_id[32];           /* "" while sbatch runs */
  char state[32], reason[256], node[256];
  int restarts;
  /* Slurm has requeued it: an end it says before the run is claimed again is the requeued
   * attempt's (events.ended's SLURM_AFTER_REQUEUE). */
  int requeued;
  int seen;                  /* in the last squeue answer */
  int cancelling;            /* scancel sent by this daemon */
  double hopeless_since;     /* util_monotonic() when its reason became one that never passes; 0 */
  double known_since;        /* util_monotonic() when sbatch answered (0: reattached, known before) */
  char secret[2 * SECRET_BYTES + 1];
  char directory[PATH_MAX];
} job_t;

/* A child process (sbatch, squeue, scancel) and what it printed. */
typedef struct command {
  slurm_t *slurm;
  uv_process_t process;
  uv_pipe_t output, errors;
  char *out, *err;
  size_t out_length, err_length;
  int open_handles, streams_open;
  int exited;
  int64_t exit_status;
  void (*done)(struct command *command);
  int64_t experiment_id;     /* sbatch: whose job */
  char *arguments[64];       /* owned strings, NULL-terminated */
} command_t;

struct slurm {
  slurm_options_t options;
  job_t *jobs;
  int commands;              /* child processes not yet closed */
  int polling;               /* an squeue runs */
  double poll_started;       /* util_monotonic() when it was spawned */
  uv_timer_t poll_timer;
  int stopping;
  void (*stopped)(void *data);
  void *stopped_data;
};

static void poll_now(slurm_t *slurm);
static void on_ignored(struct command *command);
static void on_poll_timer(uv_timer_t *timer) { poll_now(timer->data); }

// ---------------------------------------------------------------------------------------
// child processes

static void maybe_free_stopped(slurm_t *slurm);

static void on_command_closed(uv_handle_t *handle) {
  command_t *command = handle->data;
  if (--command->open_handles > 0) return;
  slurm_t *slurm = command->slurm;
  for (int i = 0; command->arguments[i]; i++) free(command->arguments[i]);
  free(command->out);
  free(command->err);
  free(command);
  slurm->commands--;
  maybe_free_stopped(slurm);
}

static void command_finish(command_t *command) {
  if (!command->exited || command->streams_open > 0) return;
  command->done(command);
  uv_close((uv_handle_t *)&command->process, on_command_closed);
  uv_close((uv_handle_t *)&command->output, on_command_closed);
  uv_close((uv_handle_t *)&command->errors, on_command_closed);
}

static void on_command_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buffer) {
  (void)handle;
  buffer->base = malloc(suggested);
  buffer->len = buffer->base ? suggested : 0;
}

static void append(char **data, size_t *length, const char *bytes, size_t n) {
  if (*length + n > SLURM_OUTPUT_LIMIT) n = SLURM_OUTPUT_LIMIT - *length;
  char *grown = realloc(*data, *length + n + 1);
  if (grown == NULL) return;
  memcpy(grown + *length, bytes, n);
  *length += n;
  grown[*length] = '\0';
  *data = grown;
}

static void on_command_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buffer) {
  command_t *command = stream->data;
  int is_output = stream == (uv_stream_t *)&command->output;
  if (n > 0) {
    if (is_output) append(&command->out, &command->out_length, buffer->base, (size_t)n);
    else append(&command->err, &command->err_length, buffer->base, (size_t)n);
  }
  free(buffer->base);
  if (n < 0) {
    uv_read_stop(stream);
    command->streams_open--;
    command_finish(command);
  }
}

static void on_command_exit(uv_process_t *process, int64_t exit_status, int term_signal) {
  command_t *command = process->data;
  command->exited = 1;
  command->exit_status = term_signal ? 128 + term_signal : exit_status;
  command_finish(command);
}

/* Runs arguments[0] (looked up in PATH) with the NULL-terminated `arguments` (copied);
 * `done` is called with what it printed once it has exited. */
static int run_command(slurm_t *slurm, const char *const *arguments, void (*done)(command_t *), int64_t id) {
  command_t *command = calloc(1, sizeof *command);
  if (command == NULL) return -ENOMEM;
  command->slurm = slurm;
  command->done = done;
  command->experiment_id = id;
  for (int i = 0; arguments[i] && i < 63; i++)
    if ((command->arguments[i] = strdup(arguments[i])) == NULL) goto no_memory;
  uv_loop_t *loop = slurm->options.loop;
  uv_pipe_init(loop, &command->output, 0);
  uv_pipe_init(loop, &command->errors, 0);
  command->output.data = command->errors.data = command->process.data = command;
  uv_stdio_container_t stdio[3] = {
      {.flags = UV_IGNORE},
      {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&command->output},
      {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&command->errors},
  };
  uv_process_options_t options = {.exit_cb = on_command_exit, .file = command->arguments[0],
                                  .args = command->arguments, .stdio_count = 3, .stdio = stdio};
  command->open_handles = 3;
  slurm->commands++;
  int result = uv_spawn(loop, &command->process, &options);
  if (result != 0) {
    /* Said as a command that failed: the callers handle both alike. */
    char message[256];
    snprintf(message, sizeof message, "cannot run %s: %s", arguments[0], uv_strerror(result));
    append(&command->err, &command->err_length, message, strlen(message));
    command->exited = 1;
    command->exit_status = 127;
    command->done(command);
    uv_close((uv_handle_t *)&command->process, on_command_closed);
    uv_close((uv_handle_t *)&command->output, on_command_closed);
    uv_close((uv_handle_t *)&command->errors, on_command_closed);
    return 0;
  }
  command->streams_open = 2;
  uv_read_start((uv_stream_t *)&command->output, on_command_alloc, on_command_read);
  uv_read_start((uv_stream_t *)&command->errors, on_command_alloc, on_command_read);
  return 0;
no_memory:
  for (int i = 0; command->arguments[i]; i++) free(command->arguments[i]);
  free(command);
  return -ENOMEM;
}

/* A command's stderr on one line, or "exit status N" when it said nothing. */
static const char *command_error(command_t *command, char *out, size_t size) {
  if (command->err == NULL || command->err[0] == '\0') {
    snprintf(out, size, "exit status %lld", (long long)command->exit_status);
    return out;
  }
  size_t used = 0;
  for (const char *c = command->err; *c && used + 1 < size; c++)
    out[used++] = *c == '\n' ? ' ' : *c;
  while (used > 0 && out[used - 1] == ' ') used--;
  out[used] = '\0';
  return out;
}

// ---------------------------------------------------------------------------------------
// the jobs table

static job_t *find_job(const slurm_t *slurm, int64_t id) {
  for (job_t *job = slurm->jobs; job; job = job->next)
    if (job->experiment_id == id) return job;
  return NULL;
}

static int count_jobs(const slurm_t *slurm) {
  int count = 0;
  for (job_t *job = slurm->jobs; job; job = job->next) count++;
  return count;
}

static void store_job(slurm_t *slurm, const job_t *job, int ended) {
  db_t *db = slurm->options.db;
  sqlite3_stmt *statement =
      db_statement(db, "UPDATE jobs SET job_id = nullif(?2, ''), state = ?3, reason = nullif(?4, ''), "
                       "node = nullif(?5, ''), restarts = ?6, "
                       "ended_at = CASE WHEN ?7 THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END WHERE id = ?1");
  if (statement == NULL) return;
  sqlite3_bind_int64(statement, 1, job->row);
  sqlite3_bind_text(statement, 2, job->job_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(statement, 3, job->state, -1, SQLITE_STATIC);
  sqlite3_bind_text(statement, 4, job->reason, -1, SQLITE_STATIC);
  sqlite3_bind_text(statement, 5, job->node, -1, SQLITE_STATIC);
  sqlite3_bind_int(statement, 6, job->restarts);
  sqlite3_bind_int(statement, 7, ended);
  if (sqlite3_step(statement) != SQLITE_DONE) db_failure(db, "updating a job");
  db_release(db, statement);
}

static void forget_job(slurm_t *slurm, job_t *job) {
  for (job_t **link = &slurm->jobs; *link; link = &(*link)->next) {
    if (*link == job) {
      *link = job->next;
      break;
    }
  }
  free(job);
}

/* The job has ended for good: stored so, forgotten, its slot free. */
static void end_job(slurm_t *slurm, job_t *job) {
  store_job(slurm, job, 1);
  forget_job(slurm, job);
  if (slurm->options.events.room) slurm->options.events.room(slurm->options.events.context);
}

// ---------------------------------------------------------------------------------------
// files in the run's directory

static int write_private_file(const char *path, const char *text, mode_t mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) return -errno;
  fchmod(fd, mode); /* an existing file keeps its mode otherwise */
  size_t length = strlen(text), done = 0;
  while (done < length) {
    ssize_t n = write(fd, text + done, length - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int code = -errno;
      close(fd);
      return code;
    }
    done += (size_t)n;
  }
  return close(fd) == 0 ? 0 : -errno;
}

/* A requeued job's next run claims the run with a new secret (its script reads job.secret
 * as it starts): the requeued attempt's worker, still posting its last events as it stops,
 * is refused rather than taking the run again as a new attempt while its job waits. */
static void new_secret(job_t *job) {
  char secret[sizeof job->secret], path[PATH_MAX + 16];
  snprintf(path, sizeof path, "%s/job.secret", job->directory);
  int result = util_random_hex(secret, SECRET_BYTES);
  if (result == 0) result = write_private_file(path, secret, 0600);
  if (result != 0) {
    fprintf(stderr, "mapsaged: cannot renew %s: %s; the requeued attempt may claim its run again\n", path,
            strerror(-result));
    return;
  }
  memcpy(job->secret, secret, sizeof secret);
}

/* The last lines of the job's output, on one line: "; log tail: a | b", or "". */
static void log_tail(const job_t *job, char *out, size_t size) {
  char path[PATH_MAX + 16], text[LOG_TAIL_BYTES + 1];
  out[0] = '\0';
  snprintf(path, sizeof path, "%s/job.log", job->directory);
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) return;
  off_t end = lseek(fd, 0, SEEK_END);
  off_t start = end > LOG_TAIL_BYTES ? end - LOG_TAIL_BYTES : 0;
  ssize_t n = pread(fd, text, LOG_TAIL_BYTES, start);
  close(fd);
  if (n <= 0) return;
  text[n] = '\0';
  /* The last five non-empty lines. */
  const char *lines[5];
  int count = 0;
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    if (!line[0]) continue;
    if (count == 5) memmove(lines, lines + 1, sizeof lines[0] * 4), count = 4;
    lines[count++] = line;
  }
  size_t used = 0;
  for (int i = 0; i < count; i++) {
    int w = snprintf(out + used, size - used, "%s%.200s", i ? " | " : "; log tail: ", lines[i]);
    if (w < 0 || (size_t)w >= size - used) break;
    used += (size_t)w;
  }
}

/* Single-quoted for sh; paths with a quote are refused before they get here. */
static int quotable(const char *text) { return strchr(text, '\'') == NULL && strchr(text, '\n') == NULL; }

static int write_script(const slurm_t *slurm, const exec_plan_t *plan, const char *path, char *error,
                        size_t error_size) {
  const slurm_options_t *options = &slurm->options;
  const char *texts[] = {plan->checkpoint_dir, options->worker_bin, options->dataset_dir, options->server_url,
                         options->settings.token_file ? options->settings.token_file : ""};
  for (size_t i = 0; i < ARRAY_SIZE(texts); i++)
    if (!quotable(texts[i]))
      return util_error(error, error_size, -EINVAL, "cannot write a job script: %s holds a quote or a line break",
                        texts[i]);
  const typeof(plan->config->resources) *resources = &plan->config->resources;
  const char *partition = resources->partition[0] ? resources->partition : options->settings.partition;
  char lines[2048] = "";
  size_t used = 0;
#define LINE(...) used += (size_t)snprintf(lines + used, used < sizeof lines ? sizeof lines - used : 0, __VA_ARGS__)
  LINE("#SBATCH --job-name=mapsage-%lld\n", (long long)plan->experiment_id);
  LINE("#SBATCH --output=%s/job.log\n#SBATCH --open-mode=append\n#SBATCH --requeue\n", plan->checkpoint_dir);
  LINE("#SBATCH --cpus-per-task=%d\n", resources->cpus ? resources->cpus : options->threads);
  if (resources->memory_mb) LINE("#SBATCH --mem=%lldM\n", (long long)resources->memory_mb);
  if (resources->time_seconds)
    LINE("#SBATCH --time=%lld-%02lld:%02lld:%02lld\n", (long long)(resources->time_seconds / 86400),
         (long long)(resources->time_seconds / 3600 % 24), (long long)(resources->time_seconds / 60 % 60),
         (long long)(resources->time_seconds % 60));
  if (partition && partition[0]) LINE("#SBATCH --partition=%s\n", partition);
  if (options->settings.account && options->settings.account[0])
    LINE("#SBATCH --account=%s\n", options->settings.account);
#undef LINE
  if (used >= sizeof lines) return util_error(error, error_size, -ENAMETOOLONG, "the job's options are too long");
  const int threads = resources->cpus ? resources->cpus : options->threads;
  char script[4 * PATH_MAX + 4096];
  int length = snprintf(
      script, sizeof script,
      "#!/bin/sh\n"
      "# MapSage experiment %lld, written by mapsaged (docs/slurm.md). A requeue runs it again:\n"
      "# it goes on from the checkpoint named in job.resume.\n"
      "%s"
      "run='%s'\n"
      "if [ ! -r \"$run/job.secret\" ]; then\n"
      "  echo \"mapsage: the data directory $run is not visible on $(hostname): mapsaged's --data-dir must be "
      "shared storage mounted at the same path on every node\" >&2\n"
      "  exit 78\n"
      "fi\n"
      "resume=$(cat \"$run/job.resume\" 2>/dev/null)\n"
      "exec '%s' --server '%s' --experiment %lld --threads %d --dataset-dir '%s' --checkpoint-dir \"$run\" \\\n"
      "  --secret-file \"$run/job.secret\" --config-file \"$run/job.config.json\" %s%s%s${resume:+--resume \"$resume\"}\n",
      (long long)plan->experiment_id, lines, plan->checkpoint_dir, options->worker_bin, options->server_url,
      (long long)plan->experiment_id, threads, options->dataset_dir,
      options->settings.token_file ? "--token-file '" : "",
      options->settings.token_file ? options->settings.token_file : "", options->settings.token_file ? "' " : "");
  if (length < 0 || (size_t)length >= sizeof script)
    return util_error(error, error_size, -ENAMETOOLONG, "the job script is too long");
  int result = write_private_file(path, script, 0700);
  if (result != 0) return util_error(error, error_size, result, "cannot write %s: %s", path, strerror(-result));
  return 0;
}

// ---------------------------------------------------------------------------------------
// submitting

static void on_submitted(command_t *command) {
  slurm_t *slurm = command->slurm;
  job_t *job = find_job(slurm, command->experiment_id);
  if (job == NULL) return; /* cancelled meanwhile: nothing was recorded for it */
  char error[1024], why[900];
  long long number = 0;
  /* --parsable: "jobid" or "jobid;cluster" */
  if (command->exit_status != 0 || command->out == NULL || sscanf(command->out, "%lld", &number) != 1 ||
      number <= 0) {
    snprintf(error, sizeof error, "sbatch refused the job: %s", command_error(command, why, sizeof why));
    snprintf(job->state, sizeof job->state, "FAILED");
    util_strlcpy(job->reason, why, sizeof job->reason);
    int64_t id = job->experiment_id;
    end_job(slurm, job);
    fprintf(stderr, "mapsaged: experiment %lld: %s\n", (long long)id, error);
    slurm->options.events.ended(slurm->options.events.context, id, "failed", error, 0);
    return;
  }
  snprintf(job->job_id, sizeof job->job_id, "%lld", number);
  snprintf(job->state, sizeof job->state, "PENDING");
  job->known_since = util_monotonic();
  store_job(slurm, job, 0);
  fprintf(stderr, "mapsaged: experiment %lld submitted as Slurm job %s\n", (long long)job->experiment_id,
          job->job_id);
  if (job->cancelling) { /* cancelled while sbatch ran */
    slurm_cancel(slurm, job->experiment_id);
  }
  if (slurm->options.events.changed) slurm->options.events.changed(slurm->options.events.context, job->experiment_id);
  if (!slurm->stopping && !uv_is_active((uv_handle_t *)&slurm->poll_timer))
    uv_timer_start(&slurm->poll_timer, on_poll_timer, slurm->options.settings.poll_ms,
                   slurm->options.settings.poll_ms);
}

/* The job's files in the run's directory: its secret, its config, where it resumes from,
 * and its script. */
static int write_job_files(const slurm_t *slurm, job_t *job, const exec_plan_t *plan, char *script,
                           size_t script_size, char *error, size_t error_size) {
  if (plan->checkpoint_dir[0] != '/')
    return util_error(error, error_size, -EINVAL,
                      "the data directory must be an absolute path the nodes see (shared storage), not %s",
                      plan->checkpoint_dir);
  int result = util_random_hex(job->secret, SECRET_BYTES);
  if (result != 0) return util_error(error, error_size, result, "getrandom: %s", strerror(-result));
  const struct {
    const char *name, *text;
  } files[] = {{"job.secret", job->secret}, {"job.config.json", plan->config_json}, {"job.resume", plan->resume}};
  for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/%s", plan->checkpoint_dir, files[i].name);
    if ((result = write_private_file(path, files[i].text, 0600)) != 0)
      return util_error(error, error_size, result, "cannot write %s in the data directory: %s", path,
                        strerror(-result));
  }
  snprintf(script, script_size, "%s/job.sh", plan->checkpoint_dir);
  return write_script(slurm, plan, script, error, error_size);
}

int slurm_submit(slurm_t *slurm, exec_plan_t *plan, char *error, size_t error_size) {
  int result = 0;
  char script[PATH_MAX + 32];
  job_t *job = calloc(1, sizeof *job);
  if (job == NULL) {
    result = util_error(error, error_size, -ENOMEM, "out of memory");
    goto done;
  }
  job->experiment_id = plan->experiment_id;
  util_strlcpy(job->directory, plan->checkpoint_dir, sizeof job->directory);
  if ((result = write_job_files(slurm, job, plan, script, sizeof script, error, error_size)) != 0) goto done;

  db_t *db = slurm->options.db;
  sqlite3_stmt *statement = db_statement(db, "INSERT INTO jobs (experiment_id, script) VALUES (?1, ?2)");
  if (statement == NULL) {
    result = util_error(error, error_size, -EIO, "the database refused the job");
    goto done;
  }
  sqlite3_bind_int64(statement, 1, plan->experiment_id);
  sqlite3_bind_text(statement, 2, script, -1, SQLITE_TRANSIENT);
  int code = sqlite3_step(statement);
  db_release(db, statement);
  if (code != SQLITE_DONE) {
    result = util_error(error, error_size, db_failure(db, "recording a job"), "the database refused the job");
    goto done;
  }
  job->row = db_last_id(db);
  snprintf(job->state, sizeof job->state, "SUBMITTING");

  const char *arguments[64] = {"sbatch", "--parsable"};
  int count = 2;
  char *extra = slurm->options.settings.extra ? strdup(slurm->options.settings.extra) : NULL;
  char *save = NULL;
  for (char *word = extra ? strtok_r(extra, " \t", &save) : NULL; word && count < 60;
       word = strtok_r(NULL, " \t", &save))
    arguments[count++] = word;
  arguments[count++] = script;
  arguments[count] = NULL;
  job->next = slurm->jobs;
  slurm->jobs = job;
  result = run_command(slurm, arguments, on_submitted, plan->experiment_id);
  free(extra);
  if (result != 0) {
    util_error(error, error_size, result, "cannot run sbatch: %s", strerror(-result));
    snprintf(job->state, sizeof job->state, "FAILED");
    store_job(slurm, job, 1);
    slurm->jobs = job->next; /* it was put first */
  } else {
    job = NULL; /* the list's now */
  }
done:
  free(job);
  exec_plan_free(plan);
  return result;
}

// ---------------------------------------------------------------------------------------
// polling

/* Pending reasons that never pass by themselves: the job can never start as asked. */
static int hopeless(const char *reason) {
  static const char *const reasons[] = {
      "PartitionTimeLimit", "PartitionNodeLimit", "PartitionConfig", "BadConstraints", "InvalidAccount",
      "InvalidQOS", "DependencyNeverSatisfied", "QOSMaxWallDurationPerJobLimit", "AssocMaxWallDurationPerJobLimit",
      "QOSMaxCpuPerJobLimit", "QOSMaxMemoryPerJob", "AccountNotAllowed", "QOSNotAllowed", NULL};
  for (int i = 0; reasons[i]; i++)
    if (strcmp(reason, reasons[i]) == 0) return 1;
  return 0;
}

static int state_is(const char *state, const char *const *states) {
  for (int i = 0; states[i]; i++)
    if (strcmp(state, states[i]) == 0) return 1;
  return 0;
}

static void say_ended(slurm_t *slurm, int64_t id, const char *status, const char *error, int retry) {
  slurm->options.events.ended(slurm->options.events.context, id, status, error, retry);
}

/* A job Slurm says has ended (or that it no longer knows: `state` NULL). */
static void job_ended(slurm_t *slurm, job_t *job, const char *state) {
  static const char *const again[] = {"TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", NULL};
  char error[2048], tail[1400];
  const int64_t id = job->experiment_id;
  const int cancelling = job->cancelling;
  /* Slurm 22.05 was seen (in test_slurm) to end a requeued job FAILED (NonZeroExitCode), its
   * log ending with the worker stopped by the requeue's SIGTERM and nothing of a new run;
   * most likely because, without slurmdbd, slurmctld does not drop the requeued attempt's
   * late batch completion (exit 143) and takes it for the end of the run started again
   * (proc_req.c, _slurm_rpc_complete_batch_script: the check for a late one is only made
   * with slurmdbd; read, not reproduced). The scheduler tells it from a real end by whether
   * the run was claimed since the requeue. A cancel from outside stays a cancel, and a
   * COMPLETED job ran to its end. */
  const int after_requeue = job->requeued && (state == NULL || (strcmp(state, "CANCELLED") != 0 &&
                                                                 strcmp(state, "COMPLETED") != 0));
  log_tail(job, tail, sizeof tail);
  if (state == NULL) {
    snprintf(error, sizeof error, "Slurm no longer knows job %s; it is submitted again", job->job_id);
    snprintf(job->state, sizeof job->state, "VANISHED");
  } else if (strcmp(state, "CANCELLED") == 0) {
    snprintf(error, sizeof error, "its Slurm job %s was cancelled outside MapSage (scancel)", job->job_id);
  } else if (state_is(state, again)) {
    snprintf(error, sizeof error, "its Slurm job %s ended %s on %s; it runs again from its last checkpoint",
             job->job_id, state, job->node[0] ? job->node : "its node");
  } else {
    const int said = job->reason[0] && strcmp(job->reason, "None") != 0;
    snprintf(error, sizeof error, "its Slurm job %s ended %s%s%s%s%s", job->job_id, state, said ? " (" : "",
             said ? job->reason : "", said ? ")" : "", tail);
  }
  end_job(slurm, job);
  if (cancelling) return; /* cancelled here: the scheduler has ended the run already */
  fprintf(stderr, "mapsaged: experiment %lld: %s\n", (long long)id, error);
  const int requeued = after_requeue ? SLURM_AFTER_REQUEUE : 0;
  if (state == NULL || (state && state_is(state, again)))
    say_ended(slurm, id, "interrupted", error, 1 | requeued);
  else if (strcmp(state, "CANCELLED") == 0)
    say_ended(slurm, id, "cancelled", error, 0);
  else
    say_ended(slurm, id, "failed", error, requeued);
}

static const char *const REQUEUE_STATES[] = {"REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", NULL};

static const char *const TERMINAL_STATES[] = {"COMPLETED", "FAILED", "OUT_OF_MEMORY", "TIMEOUT", "CANCELLED",
                                              "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT",
                                              NULL};

/* One line of squeue: "jobid|state|reason|nodes|restarts|". */
static void apply_line(slurm_t *slurm, char *line) {
  char *fields[6] = {0};
  int count = 0;
  for (char *at = line; count < 6;) {
    fields[count++] = at;
    char *bar = strchr(at, '|');
    if (bar == NULL) break;
    *bar = '\0';
    at = bar + 1;
  }
  if (count < 5) return;
  job_t *job = NULL;
  for (job_t *j = slurm->jobs; j; j = j->next)
    if (j->job_id[0] && strcmp(j->job_id, fields[0]) == 0) job = j;
  if (job == NULL) return;
  job->seen = 1;
  const char *state = fields[1], *reason = fields[2], *node = fields[3];
  const int restarts = atoi(fields[4]);
  const char *kept_reason = strcmp(reason, "None") ? reason : "";
  int changed = strcmp(job->state, state) || strcmp(job->reason, kept_reason) || strcmp(job->node, node);
  /* Slurm's restart count grows as it requeues; a REQUEUED, REQUEUE_FED or REQUEUE_HOLD
   * state (a job requeued while completing) may be shown before it does. */
  const int requeue_state = state_is(state, REQUEUE_STATES);
  if (restarts > job->restarts || (requeue_state && !job->requeued)) {
    /* Requeued (scontrol requeue, a node that failed, preemption): the attempt that ran is
     * over; the job's next start claims the run again and goes on from job.resume. */
    char error[512];
    snprintf(error, sizeof error, "Slurm requeued its job %s (%s%s%s); it runs again from its last checkpoint",
             job->job_id, state, reason[0] && strcmp(reason, "None") ? ", " : "",
             reason[0] && strcmp(reason, "None") ? reason : "");
    job->restarts = restarts > job->restarts ? restarts : job->restarts + 1;
    job->requeued = 1;
    store_job(slurm, job, 0);
    new_secret(job);
    const int64_t id = job->experiment_id;
    say_ended(slurm, id, "interrupted", error, 1);
    /* What the scheduler did about it may have cancelled the job (a study's rule). */
    if ((job = find_job(slurm, id)) == NULL) return;
    changed = 1;
  }
  const int hopeless_now = strcmp(state, "PENDING") == 0 && hopeless(kept_reason);
  if (!hopeless_now || changed) job->hopeless_since = hopeless_now ? util_monotonic() : 0;
  if (hopeless_now && !job->cancelling && util_monotonic() - job->hopeless_since >= HOPELESS_AFTER_S) {
    char error[512];
    snprintf(error, sizeof error, "Slurm cannot start its job %s: %s", job->job_id, job->reason);
    int64_t id = job->experiment_id;
    const char *arguments[] = {"scancel", job->job_id, NULL};
    run_command(slurm, arguments, on_ignored, 0);
    job->cancelling = 1;
    end_job(slurm, job);
    say_ended(slurm, id, "failed", error, 0);
    return;
  }
  if (!changed) return;
  util_strlcpy(job->state, state, sizeof job->state);
  util_strlcpy(job->reason, strcmp(reason, "None") ? reason : "", sizeof job->reason);
  util_strlcpy(job->node, node, sizeof job->node);
  if (state_is(state, TERMINAL_STATES)) {
    job_ended(slurm, job, state);
    return;
  }
  store_job(slurm, job, 0);
  if (slurm->options.events.changed) slurm->options.events.changed(slurm->options.events.context, job->experiment_id);
}

static void on_polled(command_t *command) {
  slurm_t *slurm = command->slurm;
  slurm->polling = 0;
  if (command->exit_status != 0) {
    char why[512];
    fprintf(stderr, "mapsaged: squeue failed (%s); trying again\n", command_error(command, why, sizeof why));
    return;
  }
  for (job_t *job = slurm->jobs; job; job = job->next) job->seen = 0;
  char *save = NULL;
  for (char *line = command->out ? strtok_r(command->out, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save))
    apply_line(slurm, line);
  /* Not in the answer: gone from Slurm's memory (MinJobAge past its end, or a restarted
   * controller that lost it). A job submitted after this squeue started may not be in it. */
  /* The list is walked again after each end: what the scheduler does about it (a study
   * that cancels its other runs) may end other jobs too. */
  for (int again = 1; again;) {
    again = 0;
    for (job_t *job = slurm->jobs; job && !again; job = job->next) {
      if (job->seen || !job->job_id[0] || job->cancelling || job->known_since >= slurm->poll_started) continue;
      job->seen = 1; /* said once */
      job_ended(slurm, job, NULL);
      again = 1;
    }
  }
  if (slurm->jobs == NULL) uv_timer_stop(&slurm->poll_timer);
}

static void poll_now(slurm_t *slurm) {
  if (slurm->polling || slurm->stopping) return;
  int any = 0;
  for (job_t *job = slurm->jobs; job; job = job->next) any |= job->job_id[0] != 0;
  if (!any) return;
  /* Every state, also the ended ones Slurm still remembers; the fields machine-read, '|'
   * after each (no field of these holds one). */
  const char *arguments[] = {"squeue", "--noheader", "--me", "--states=all",
                             "--Format=JobID:|,State:|,Reason:|,NodeList:|,RestartCnt:|", NULL};
  slurm->polling = 1;
  slurm->poll_started = util_monotonic();
  run_command(slurm, arguments, on_polled, 0);
}

static void on_ignored(command_t *command) { (void)command; }


void slurm_cancel(slurm_t *slurm, int64_t id) {
  job_t *job = find_job(slurm, id);
  if (job == NULL) return;
  job->cancelling = 1;
  if (!job->job_id[0]) return; /* scancel once sbatch has answered */
  const char *arguments[] = {"scancel", job->job_id, NULL};
  run_command(slurm, arguments, on_ignored, id);
  fprintf(stderr, "mapsaged: experiment %lld: scancel %s\n", (long long)id, job->job_id);
  snprintf(job->state, sizeof job->state, "CANCELLED");
  snprintf(job->reason, sizeof job->reason, "cancelled in MapSage");
  end_job(slurm, job);
}

// ---------------------------------------------------------------------------------------

int slurm_has_room(const slurm_t *slurm) {
  return !slurm->stopping && (slurm->options.settings.max_jobs <= 0 || count_jobs(slurm) < slurm->options.settings.max_jobs);
}

const char *slurm_secret(const slurm_t *slurm, int64_t id) {
  const job_t *job = find_job(slurm, id);
  return job && job->secret[0] ? job->secret : NULL;
}

void slurm_checkpoint_recorded(slurm_t *slurm, int64_t id, const char *path) {
  job_t *job = find_job(slurm, id);
  if (job == NULL) return;
  char file[PATH_MAX + 16];
  snprintf(file, sizeof file, "%s/job.resume", job->directory);
  int result = write_private_file(file, path, 0600);
  if (result != 0) fprintf(stderr, "mapsaged: cannot write %s: %s\n", file, strerror(-result));
}

static void load_jobs(slurm_t *slurm) {
  db_t *db = slurm->options.db;
  json_t *rows = db_select(db,
                           "SELECT j.id, j.experiment_id, coalesce(j.job_id, '') AS job_id, j.state, "
                           "coalesce(j.reason, '') AS reason, coalesce(j.node, '') AS node, j.restarts "
                           "FROM jobs j WHERE j.ended_at IS NULL "
                           "AND ?1 = ?2",
                           0, 0);
  size_t index;
  json_t *row;
  json_array_foreach(rows, index, row) {
    job_t *job = calloc(1, sizeof *job);
    if (job == NULL) break;
    job->row = json_integer_value(json_object_get(row, "id"));
    job->experiment_id = json_integer_value(json_object_get(row, "experiment_id"));
    util_strlcpy(job->job_id, json_string_value(json_object_get(row, "job_id")), sizeof job->job_id);
    util_strlcpy(job->state, json_string_value(json_object_get(row, "state")), sizeof job->state);
    util_strlcpy(job->reason, json_string_value(json_object_get(row, "reason")), sizeof job->reason);
    util_strlcpy(job->node, json_string_value(json_object_get(row, "node")), sizeof job->node);
    job->restarts = (int)json_integer_value(json_object_get(row, "restarts"));
    job->requeued = job->restarts > 0;
    snprintf(job->directory, sizeof job->directory, "%s/experiments/%lld", slurm->options.data_dir,
             (long long)job->experiment_id);
    char path[PATH_MAX + 16], *secret = NULL;
    size_t length = 0;
    snprintf(path, sizeof path, "%s/job.secret", job->directory);
    if (util_read_file(path, 256, &secret, &length) == 0 && length == 2 * SECRET_BYTES)
      memcpy(job->secret, secret, length);
    free(secret);
    job->next = slurm->jobs;
    slurm->jobs = job;
    if (!job->job_id[0] || !job->secret[0]) {
      /* The daemon stopped while sbatch ran (the job may exist: its worker, holding no
       * secret we know, is refused), or the secret is gone: submitted again. */
      fprintf(stderr, "mapsaged: experiment %lld: its job %s cannot be reattached (%s); submitting it again\n",
              (long long)job->experiment_id, job->job_id[0] ? job->job_id : "(being submitted)",
              job->job_id[0] ? "its job.secret is gone" : "the daemon stopped while sbatch ran");
      if (job->job_id[0]) {
        const char *arguments[] = {"scancel", job->job_id, NULL};
        run_command(slurm, arguments, on_ignored, 0);
      }
      snprintf(job->state, sizeof job->state, "VANISHED");
      store_job(slurm, job, 1);
      forget_job(slurm, job);
      continue;
    }
    fprintf(stderr, "mapsaged: experiment %lld: reattaching to Slurm job %s (%s)\n", (long long)job->experiment_id,
            job->job_id, job->state);
  }
  json_decref(rows);
}

int slurm_create(const slurm_options_t *options, slurm_t **out, char *error, size_t error_size) {
  slurm_t *slurm = calloc(1, sizeof *slurm);
  if (slurm == NULL) return util_error(error, error_size, -ENOMEM, "out of memory");
  slurm->options = *options;
  if (slurm->options.settings.poll_ms == 0) slurm->options.settings.poll_ms = SLURM_POLL_MS;
  if (options->data_dir[0] != '/') {
    free(slurm);
    return util_error(error, error_size, -EINVAL,
                      "--executor slurm: --data-dir must be an absolute path, shared with the nodes, not %s",
                      options->data_dir);
  }
  uv_timer_init(options->loop, &slurm->poll_timer);
  slurm->poll_timer.data = slurm;
  load_jobs(slurm);
  if (slurm->jobs) {
    uv_timer_start(&slurm->poll_timer, on_poll_timer, 0, slurm->options.settings.poll_ms);
  }
  *out = slurm;
  return 0;
}

static void on_poll_timer_closed(uv_handle_t *handle) {
  slurm_t *slurm = handle->data;
  slurm->commands--; /* the timer counted as one */
  maybe_free_stopped(slurm);
}

static void maybe_free_stopped(slurm_t *slurm) {
  if (!slurm->stopping || slurm->commands > 0) return;
  while (slurm->jobs) forget_job(slurm, slurm->jobs);
  void (*done)(void *) = slurm->stopped;
  void *data = slurm->stopped_data;
  free(slurm);
  if (done) done(data);
}

void slurm_stop(slurm_t *slurm, void (*done)(void *data), void *data) {
  slurm->stopping = 1;
  slurm->stopped = done;
  slurm->stopped_data = data;
  slurm->commands++;
  uv_close((uv_handle_t *)&slurm->poll_timer, on_poll_timer_closed);
}

char *slurm_job_text(db_t *db, int64_t id) {
  json_t *rows = db_select(db,
                           "SELECT job_id AS id, state, reason, node, script FROM jobs WHERE experiment_id = ?1 "
                           "AND ?2 = 0 ORDER BY id DESC LIMIT 1",
                           id, 0);
  json_t *job = json_array_get(rows, 0);
  char *text = job ? json_dumps(job, JSON_COMPACT) : NULL;
  json_decref(rows);
  return text;
}
