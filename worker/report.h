/* report.h — a worker's events over HTTP, for a worker the daemon does not spawn (a cluster
 * node, `sbatch`): the second transport of the one protocol (docs/design.md).
 *
 * mapsage-worker --server URL reads its experiment's config from GET
 * /api/experiments/{id} and writes its events to the FILE* report_open() returns, exactly
 * as it writes them to stdout under the daemon. The stream posts them to POST
 * /api/experiments/{id}/events: metric lines in batches (every REPORT_BATCH_MS or
 * REPORT_BATCH_BYTES), every other event at once. A post that fails for the network or a
 * 5xx is tried again for about a minute before the write fails. When the daemon answers 409
 * (the run was cancelled, or has ended there) the stream raises `stop`, so the training
 * loop stops at its next step, and drops what follows. */
#ifndef MAPSAGE_REPORT_H
#define MAPSAGE_REPORT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define REPORT_BATCH_MS 250
#define REPORT_BATCH_BYTES 65536
#define REPORT_STOPPED_BY_DAEMON (-1) /* the value `stop` is given on a 409 */

/* Where the daemon is and how to talk to it. */
typedef struct {
  const char *server; /* "http://host:8787" */
  int64_t experiment;
  const char *token;  /* the bearer token, or NULL */
  const char *secret; /* the run's secret given beforehand (a Slurm job's, --secret-file): hex,
                         sent with every post, the first one included; NULL: from the claim */
} report_target_t;

/* The experiment's config as JSON text (the caller frees it). Returns 0, or a negative
 * errno with the reason in `error` (the server's own words when it answered). */
int report_fetch_config(const report_target_t *target, char **text, size_t *length, char *error,
                        size_t error_size);

/* Reads the daemon's answer to a post: the claim's run secret as the header later posts
 * carry (`header` is "" when the answer has none), and each event it refused, whose reason
 * goes to `on_refused`. -EPROTO for a secret that is not what a daemon sends (hex, under
 * 200 characters): a forged answer must not write headers of its choosing. */
int report_read_answer(const char *answer, char *header, size_t header_size, void (*on_refused)(const char *message));

/* The events stream; fclose() posts what is left. NULL with the reason in `error`. */
FILE *report_open(const report_target_t *target, volatile sig_atomic_t *stop, char *error, size_t error_size);

#endif
