/* mapsage.c — `mapsage`, the command-line client of the mapsaged HTTP API (docs/api.md):
 * global options, the command table, help texts, usage errors, and main(), the only place
 * that exits. The commands themselves live in commands.c, watch.c and study.c; the exit
 * codes are an interface (see CLI_EXIT_* in cli.h and docs/cli.md).
 *
 * A command with subcommands (`study`) has an entry of its own, which answers `mapsage
 * study` and `mapsage study --help`, and one entry per subcommand named "study submit" and
 * so on: main() runs the subcommand's entry, so each has its usage line and help here like
 * any command. */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "version.h"

/* The options every command shares, and each command's table (common/options.h). The
 * tables drive the parsing, and `mapsage completion` reads them: a flag added here is
 * completed too. The help texts stay written by hand, for their examples;
 * test_cli_everyday.py checks that each shows every option of its table.
 *
 * A new command: a CLI_OPTION_* key in cli.h for each new flag, a table here, a row in
 * cli_commands (name, function, usage, help, CLI_OPTIONS(table), what its arguments are),
 * and in the function a loop as command_ls has: cli_options_init, then options_next until
 * OPTIONS_END, each key handled and the rest given to cli_options_default (which answers
 * -h and words the usage errors). A command taking one id: cli_parse_id_arguments. */
#define CLI_HELP {CLI_OPTION_HELP, "help", 'h', NULL, "show this help"}
#define CLI_JSON {CLI_OPTION_JSON, "json", 0, NULL, "machine-readable output: JSON"}
#define CLI_SET {CLI_OPTION_SET, "set", 0, "PATH=VALUE", "change one field before sending; repeatable"}
#define CLI_LIMIT {CLI_OPTION_LIMIT, "limit", 0, "N", "at most N (1 to 500)"}
static const option_t cli_id_options[] = {CLI_HELP, CLI_JSON};
static const option_t cli_help_options[] = {CLI_HELP};
static const option_t cli_submit_options[] = {CLI_HELP, CLI_JSON, CLI_SET};
static const option_t cli_ls_options[] = {
  CLI_HELP, CLI_JSON, CLI_LIMIT,
  {CLI_OPTION_STATUS, "status", 0, "STATUS", "only these statuses, separated by commas"},
  {CLI_OPTION_NAME, "name", 0, "TEXT", "only names containing TEXT"},
  {CLI_OPTION_TAG, "tag", 0, "TAG", "only experiments with this tag; repeatable: any of them"},
  {CLI_OPTION_WHERE, "where", 0, "COND", "only where FIELD OP VALUE holds; repeatable: all of them"},
  {CLI_OPTION_ARCHIVED, "archived", 0, NULL, "only archived experiments"},
  {CLI_OPTION_ALL, "all", 0, NULL, "archived experiments too"},
  {CLI_OPTION_SORT, "sort", 0, "KEY", "sort by a column or a field (ascending)"},
  {CLI_OPTION_DESC, "desc", 0, NULL, "sort descending"},
  {CLI_OPTION_ORDER, "order", 0, "ORDER", "asc or desc"},
  {CLI_OPTION_COLUMNS, "columns", 0, "LIST", "add columns: fields, separated by commas"},
  {CLI_OPTION_OFFSET, "offset", 0, "N", "skip the first N rows"},
};
static const option_t cli_study_submit_options[] = {
  CLI_HELP, CLI_JSON, CLI_SET, {CLI_OPTION_DRY_RUN, "dry-run", 0, NULL, "create nothing: list the runs"}};
static const option_t cli_study_ls_options[] = {CLI_HELP, CLI_JSON, CLI_LIMIT};
static const option_t cli_study_show_options[] = {
  CLI_HELP, CLI_JSON, {CLI_OPTION_ALL, "all", 0, NULL, "every outcome the daemon compares"}};
static const option_t cli_sql_options[] = {
  CLI_HELP, CLI_JSON, {CLI_OPTION_PARAM, "param", 0, "VALUE", "bind ?1, ?2, … in order"},
  {CLI_OPTION_CSV, "csv", 0, NULL, "RFC 4180 CSV"}};
static const option_t cli_tag_options[] = {
  CLI_HELP, CLI_JSON, {CLI_OPTION_REMOVE, "remove", 0, NULL, "take the tags away instead"},
  {CLI_OPTION_CLEAR, "clear", 0, NULL, "remove every tag"}};
static const option_t cli_archive_options[] = {
  CLI_HELP, CLI_JSON, {CLI_OPTION_UNDO, "undo", 0, NULL, "bring it back to the list"}};
static const option_t cli_logs_options[] = {
  CLI_HELP, CLI_JSON, {CLI_OPTION_FOLLOW, "follow", 'f', NULL, "keep printing lines as they come"}};
static const option_t cli_dataset_add_options[] = {
  CLI_HELP, CLI_JSON,
  {CLI_OPTION_FORMAT, "format", 0, "F", "idx, npy, npz, cifar10, cifar100 or csv"},
  {CLI_OPTION_NAMES, "names", 0, "FILE", "class names, one a line"},
  {CLI_OPTION_LAYOUT, "layout", 0, "L", "npy, npz: auto, nchw or nhwc"},
  {CLI_OPTION_CLASSES, "classes", 0, "N", "the class count"}};
static const option_t cli_export_options[] = {
  CLI_HELP,
  {CLI_OPTION_EPOCH, "epoch", 0, "N", "the checkpoint of epoch N (default: the latest)"},
  {CLI_OPTION_FORMAT, "format", 0, "F", "safetensors (default) or checkpoint"},
  {CLI_OPTION_OUTPUT, "output", 'o', "FILE", "the file to write"}};
/* `mapsage [OPTIONS] COMMAND`: what comes before the command. */
static const option_t cli_global_options[] = {
  {CLI_OPTION_SERVER, "server", 0, "URL", "the daemon to talk to"},
  {CLI_OPTION_TOKEN_FILE, "token-file", 0, "FILE", "the daemon's bearer token"},
  CLI_JSON,
  CLI_HELP,
  {CLI_OPTION_VERSION, "version", 0, NULL, "print the version and exit"},
};

#define CLI_OPTIONS(table) table, ARRAY_SIZE(table)

static const cli_command_t cli_commands[] = {
  {"submit", command_submit, "submit FILE|- [--set PATH=VALUE]... [--json]",
   "Queues the experiment config in FILE, or on standard input for -. Prints the new\n"
   "experiment's id on stdout and \"submitted experiment 7 (queued)\" on stderr. An\n"
   "invalid config is refused with every bad field listed by its path (exit 1).\n"
   "\n"
   "   --set PATH=VALUE   change one field before sending; repeatable. PATH is a key\n"
   "                      followed by .key or [index] steps: name, optimizer.lr,\n"
   "                      stages[1].epochs; missing object keys are created. VALUE is\n"
   "                      JSON when it parses as JSON (5, 0.01, true, null,\n"
   "                      '{\"type\":\"relu\"}', '\"42\"'), otherwise a string (baseline)\n"
   "   --json             print the server's JSON answer (id, status) instead of the id\n"
   "\n"
   "Examples:\n"
   "   mapsage submit examples/baseline.json\n"
   "   ID=$(mapsage submit base.json --set name=lr-0.01 --set optimizer.lr=0.01)\n"
   "   generate-config | mapsage submit -\n",
   CLI_OPTIONS(cli_submit_options), "file"},
  {"ls", command_ls,
   "ls [--status STATUS] [--name TEXT] [--tag TAG]... [--where COND]... [--archived|--all] "
   "[--sort KEY [--desc|--order ORDER]] [--columns LIST] [--limit N] [--offset N] [--json]",
   "Lists experiments, newest first: ID, NAME, STATUS, EPOCH (done/total), TEST-ACC\n"
   "(final test accuracy), AGE (since it was submitted) and DURATION (its run so far),\n"
   "then a column per field of --columns. Archived experiments are left out.\n"
   "\n"
   "   --status STATUS   only these: queued, running, succeeded, failed, cancelled,\n"
   "                     interrupted; several separated by commas\n"
   "   --name TEXT       only experiments whose name contains TEXT\n"
   "   --tag TAG         only experiments with this tag; repeatable (or TAG,TAG):\n"
   "                     those with any of them\n"
   "   --where COND      only experiments where FIELD OP VALUE holds, OP one of = != <\n"
   "                     <= > >=; repeatable: all must hold. A FIELD is a path into the\n"
   "                     stored config (optimizer.lr, stages[0].epochs) or summary.NAME\n"
   "                     (summary.final_test_accuracy)\n"
   "   --archived        only archived experiments\n"
   "   --all             archived experiments too\n"
   "   --sort KEY        sort by a column (id, name, status, priority, teacher,\n"
   "                     created_at, started_at, finished_at, attempts, progress, step,\n"
   "                     duration, archived_at) or a FIELD; ascending, runs without the\n"
   "                     value last\n"
   "   --desc            sort descending (the same as --order desc)\n"
   "   --order ORDER     asc or desc\n"
   "   --columns LIST    add a column per FIELD of LIST, separated by commas (at most 16)\n"
   "   --limit N         at most N experiments (1 to 500; the server's default is 100)\n"
   "   --offset N        skip the first N (the next page of a sorted list)\n"
   "   --json            print the server's JSON answer as it is\n"
   "\n"
   "Examples:\n"
   "   mapsage ls --status queued,running --name kd\n"
   "   mapsage ls --tag baseline --where 'optimizer.lr>0.01' --sort summary.final_test_accuracy --desc\n"
   "   mapsage ls --all --columns optimizer.lr,summary.best_val_accuracy\n",
   CLI_OPTIONS(cli_ls_options), NULL},
  {"show", command_show, "show ID [--json]",
   "Shows one experiment: name, status, error, times, attempts, progress, the dataset\n"
   "and its checksum, the summary its worker reported, the worker's details and the\n"
   "stored config, with every default filled in.\n"
   "\n"
   "   --json   print the server's JSON answer as it is\n"
   "\n"
   "Example:\n"
   "   mapsage show 7 --json | jq .summary.final_test_accuracy\n",
   CLI_OPTIONS(cli_id_options), "experiment"},
  {"watch", command_watch, "watch ID [--json]",
   "Follows an experiment live until it ends. On a terminal one line is kept up to\n"
   "date: status, epoch, step, latest loss, accuracies, examples/s. Each finished\n"
   "epoch and each status change also leaves a line of its own; those lines are all\n"
   "that is printed when the output is not a terminal. A broken connection is resumed\n"
   "where it left off (up to 5 tries in a row). Ctrl-C stops the watching, not the\n"
   "experiment.\n"
   "\n"
   "   --json   print each event of the stream as a JSON line instead:\n"
   "            {\"event\": \"metric\", \"id\": \"12\", \"data\": {...}} (docs/api.md)\n"
   "\n"
   "Exit status: 0 if the run succeeded; 1 if it failed or was cancelled (its error\n"
   "is printed); 3 if the server cannot be reached; 130 after Ctrl-C.\n"
   "\n"
   "Example:\n"
   "   mapsage watch \"$(mapsage submit examples/baseline.json)\" && echo trained\n",
   CLI_OPTIONS(cli_id_options), "experiment"},
  {"cancel", command_cancel, "cancel ID [--json]",
   "Stops an experiment. A queued one is cancelled at once. A running one is asked\n"
   "to stop and becomes cancelled once its worker has exited ('mapsage watch ID'\n"
   "follows it). An experiment that has already ended is refused (exit 1).\n"
   "\n"
   "   --json   print the server's JSON answer as it is\n"
   "\n"
   "Example:\n"
   "   mapsage cancel 7\n",
   CLI_OPTIONS(cli_id_options), "experiment"},
  {"tag", command_tag, "tag ID TAG... [--remove] [--json] | tag ID --clear",
   "Adds tags to an experiment and prints its tags. A tag is 1 to 64 letters,\n"
   "digits or . _ - : / +.\n"
   "\n"
   "   --remove   take the tags away instead\n"
   "   --clear    remove every tag\n"
   "   --json     print the server's JSON answer (the experiment) as it is\n"
   "\n"
   "Example:\n"
   "   mapsage tag 7 baseline sweep-3\n",
   CLI_OPTIONS(cli_tag_options), "experiment"},
  {"note", command_note, "note ID TEXT|- [--json]",
   "Sets an experiment's free-text note: TEXT (quoted), or standard input for -\n"
   "(a final newline dropped); \"\" clears it. The note shows on the dashboard.\n"
   "\n"
   "   --json   print the server's JSON answer (the experiment) as it is\n"
   "\n"
   "Example:\n"
   "   mapsage note 7 'lr too high: diverged at epoch 3'\n",
   CLI_OPTIONS(cli_id_options), "experiment"},
  {"rename", command_rename, "rename ID NAME [--json]",
   "Gives an experiment a new name (its stored config's name follows).\n"
   "\n"
   "   --json   print the server's JSON answer (the experiment) as it is\n"
   "\n"
   "Example:\n"
   "   mapsage rename 7 baseline-lr0.05\n",
   CLI_OPTIONS(cli_id_options), "experiment"},
  {"archive", command_archive, "archive ID [--undo] [--json]",
   "Archives an experiment: it leaves the default list (the dashboard's and\n"
   "'mapsage ls') and is kept, whole.\n"
   "\n"
   "   --undo   bring it back to the list\n"
   "   --json   print the server's JSON answer (the experiment) as it is\n"
   "\n"
   "Example:\n"
   "   mapsage archive 7\n",
   CLI_OPTIONS(cli_archive_options), "experiment"},
  {"rm", command_rm, "rm ID [--json]",
   "Deletes an experiment: its rows (curves, log, checkpoints, tags) and its\n"
   "checkpoint files. Refused (exit 1, with the reason) while it runs, while another\n"
   "experiment names it as its teacher, and for a run of a study.\n"
   "\n"
   "   --json   print the server's JSON answer as it is\n"
   "\n"
   "Example:\n"
   "   mapsage rm 7\n",
   CLI_OPTIONS(cli_id_options), "experiment"},
  {"report", command_report, "report ID [--json]",
   "Analyses an experiment: for each stage, how each loss term moved (the mean of\n"
   "its first and last 20 steps) and what share of the total loss it took; the run\n"
   "against its teacher and its baseline (the latest run of the same student and\n"
   "data without a teacher); and findings in words: a term that dominates, a task\n"
   "loss that stalls while imitation improves, a gate that concentrates, overfitting.\n"
   "\n"
   "   --json   print the server's JSON answer as it is\n"
   "\n"
   "Example:\n"
   "   mapsage report 12\n",
   CLI_OPTIONS(cli_id_options), "experiment"},
  {"study", command_study, "study COMMAND [ARGS]",
   "Studies: one submission that expands into many matched runs (arms, seeds, grid\n"
   "cells, the matched baseline of every distilling arm, a teacher the study trains),\n"
   "followed by the daemon to their statistics.\n"
   "\n"
   "Commands:\n"
   "   study submit FILE|-   queue a study (or --dry-run: the runs it would create)\n"
   "   study ls              list studies, newest first\n"
   "   study show ID         one study: status, arms, comparisons with their baselines\n"
   "   study watch ID        follow a study live until every run has ended\n"
   "   study cancel ID       stop a study's queued and running runs\n"
   "\n"
   "See 'mapsage study COMMAND --help' for one command's options.\n"
   "\n"
   "Example:\n"
   "   ID=$(mapsage study submit kd-study.json) && mapsage study watch \"$ID\" &&\n"
   "       mapsage study show \"$ID\"\n",
   CLI_OPTIONS(cli_help_options), NULL},
  {"study submit", command_study_submit, "study submit FILE|- [--dry-run] [--set PATH=VALUE]... [--json]",
   "Queues the study in FILE, or on standard input for -. Prints the new study's id on\n"
   "stdout and \"submitted study 3 (queued): 14 runs\" on stderr. An invalid study is\n"
   "refused with every problem listed by its path in the study (exit 1).\n"
   "\n"
   "   --dry-run          create nothing: print the runs the study expands into, one a\n"
   "                      line (index, name, role, arm, seed, optimizer steps), then\n"
   "                      their count and total steps\n"
   "   --set PATH=VALUE   change one field of the study before sending; repeatable;\n"
   "                      as for 'mapsage submit': seeds=5, base.optimizer.lr=0.01,\n"
   "                      arms.kd.temperature.start=4\n"
   "   --json             print the server's JSON answer as it is\n"
   "\n"
   "Examples:\n"
   "   mapsage study submit kd-study.json --dry-run\n"
   "   ID=$(mapsage study submit kd-study.json --set seeds=5)\n",
   CLI_OPTIONS(cli_study_submit_options), "file"},
  {"study ls", command_study_ls, "study ls [--limit N] [--json]",
   "Lists studies, newest first: ID, NAME, STATUS, RUNS (ended/total) and AGE (since it\n"
   "was submitted).\n"
   "\n"
   "   --limit N   at most N studies (1 to 500; the server's default is 100)\n"
   "   --json      print the server's JSON answer as it is\n"
   "\n"
   "Example:\n"
   "   mapsage study ls --limit 10\n",
   CLI_OPTIONS(cli_study_ls_options), NULL},
  {"study show", command_study_show, "study show ID [--all] [--json]",
   "Shows one study: name, status, runs by status, error and times; a table of its arms\n"
   "(N counted runs, mean test and best validation accuracy, each ± the half-width of\n"
   "its 95% interval); each distilling arm against its matched baseline (the mean\n"
   "paired difference over seeds with its 95% interval, p and Holm-adjusted p, or\n"
   "\"unmatched\" when the two sides trained different numbers of steps); the best cell\n"
   "of a grid and each axis's means; the runs stopped early. Accuracies are in percent,\n"
   "their differences in percentage points.\n"
   "\n"
   "   --all    compare every outcome the daemon compares (test loss too), not only\n"
   "            test and best validation accuracy\n"
   "   --json   print the server's JSON answer as it is\n"
   "\n"
   "Example:\n"
   "   mapsage study show 3 --json | jq '.comparisons[] | select(.outcome == \"test_accuracy\")'\n",
   CLI_OPTIONS(cli_study_show_options), "study"},
  {"study watch", command_study_watch, "study watch ID [--json]",
   "Follows a study live until every run has ended: a line each time one of its runs\n"
   "changes status (with its test accuracy when it succeeds), and the progress: on a\n"
   "terminal one line kept up to date, otherwise a line each time a run ends. A broken\n"
   "connection is resumed (up to 5 tries in a row). Ctrl-C stops the watching, not the\n"
   "study.\n"
   "\n"
   "   --json   print each event of the stream as a JSON line instead:\n"
   "            {\"event\": \"run\", \"data\": {...}} (docs/api.md)\n"
   "\n"
   "Exit status: 0 if the study succeeded; 1 if it failed or was cancelled (its error\n"
   "is printed); 3 if the server cannot be reached; 130 after Ctrl-C.\n"
   "\n"
   "Example:\n"
   "   mapsage study watch \"$(mapsage study submit kd-study.json)\" && echo done\n",
   CLI_OPTIONS(cli_id_options), "study"},
  {"study cancel", command_study_cancel, "study cancel ID [--json]",
   "Cancels a study: its queued runs at once, its running ones asked to stop. The study\n"
   "ends once they have ('mapsage study watch ID' follows it). A study that has already\n"
   "ended is refused (exit 1).\n"
   "\n"
   "   --json   print the server's JSON answer as it is\n"
   "\n"
   "Example:\n"
   "   mapsage study cancel 3\n",
   CLI_OPTIONS(cli_id_options), "study"},
  {"rerun", command_rerun, "rerun ID [--set PATH=VALUE]... [--json]",
   "Queues a new experiment with the stored config of experiment ID (every default\n"
   "filled in, as 'mapsage show ID' prints it), changed by each --set. Prints the new\n"
   "experiment's id on stdout and \"submitted experiment 8 (queued): rerun of 7\" on\n"
   "stderr. A --set whose path does not fit the config is refused naming the path\n"
   "(exit 2); a config the server refuses, with every bad field by its path (exit 1).\n"
   "A stage's lr, filled in from optimizer.lr, follows a new optimizer.lr; a stage\n"
   "given an lr of its own keeps it.\n"
   "\n"
   "   --set PATH=VALUE   change one field; repeatable; as for 'mapsage submit':\n"
   "                      optimizer.lr=0.01, seed=2, stages[1].epochs=5, name=again\n"
   "   --json             print the server's JSON answer (id, status) instead of the id\n"
   "\n"
   "Examples:\n"
   "   mapsage rerun 7 --set seed=2\n"
   "   for lr in 0.1 0.03 0.01; do mapsage rerun 7 --set optimizer.lr=$lr; done\n",
   CLI_OPTIONS(cli_submit_options), "experiment"},
  {"logs", command_logs, "logs ID [-f | --follow] [--json]",
   "Prints an experiment's log: what its worker wrote on standard error, each line\n"
   "prefixed with the attempt (\"attempt 1 | ...\"), and the stdout lines that were not\n"
   "protocol events.\n"
   "\n"
   "   -f, --follow   keep printing lines as they arrive until the experiment ends\n"
   "                  (the log is read again every second)\n"
   "   --json         one JSON object a line: {\"attempt\": 1, \"line\": \"...\"}\n"
   "\n"
   "Examples:\n"
   "   mapsage logs 7\n"
   "   mapsage logs -f \"$(mapsage submit examples/baseline.json)\"\n",
   CLI_OPTIONS(cli_logs_options), "experiment"},
  {"dataset", command_dataset, "dataset COMMAND [ARGS]",
   "The dataset registry: datasets by name, their checksum, statistics and warnings.\n"
   "\n"
   "Commands:\n"
   "   dataset add NAME FILE...   register a dataset from its files\n"
   "   dataset ls                 list the registered datasets\n"
   "   dataset show NAME          one dataset's details and statistics (JSON)\n"
   "   dataset rm NAME            forget a dataset (its files are kept)\n"
   "\n"
   "Example:\n"
   "   mapsage dataset add cifar10 cifar10/*.bin cifar10/batches.meta.txt\n",
   CLI_OPTIONS(cli_help_options), NULL},
  {"dataset add", command_dataset_add,
   "dataset add NAME FILE... [--format F] [--names FILE] [--layout L] [--classes N] [--json]",
   "Registers a dataset under NAME from its files, which must lie inside the daemon's\n"
   "datasets directory (relative paths are taken from it). The daemon reads every file,\n"
   "checks it and measures it; prints the content's SHA-256 on stdout, the shape and any\n"
   "warning (imbalance, duplicates, leakage) on stderr. A bad file is refused with the\n"
   "reason (exit 1). Files are sorted by their names: \"test\" or \"t10k\" marks test\n"
   "files, \"label\" (or a leading y) labels, .txt the class names.\n"
   "\n"
   "   --format F     idx, npy, npz, cifar10, cifar100 or csv (default: from the names)\n"
   "   --names FILE   class names, one a line\n"
   "   --layout L     npy, npz: auto, nchw or nhwc\n"
   "   --classes N    the class count (default: the names, the format, the largest label)\n"
   "   --json         print the server's JSON answer as it is\n"
   "\n"
   "Example:\n"
   "   mapsage dataset add mnist mnist/train-images-idx3-ubyte.gz mnist/train-labels-idx1-ubyte.gz \\\n"
   "       mnist/t10k-images-idx3-ubyte.gz mnist/t10k-labels-idx1-ubyte.gz\n",
   CLI_OPTIONS(cli_dataset_add_options), "file"},
  {"dataset ls", command_dataset_ls, "dataset ls [--json]",
   "Lists the registered datasets: name, format, classes, input shape, examples and the\n"
   "number of warnings.\n"
   "\n"
   "   --json   print the server's JSON answer as it is\n",
   CLI_OPTIONS(cli_id_options), NULL},
  {"dataset show", command_dataset_show, "dataset show NAME",
   "Prints one dataset as the server describes it (JSON): files, checksum, class names,\n"
   "class counts per split, per-channel mean and deviation, duplicates, warnings.\n",
   CLI_OPTIONS(cli_help_options), NULL},
  {"dataset rm", command_dataset_rm, "dataset rm NAME [--json]",
   "Removes a dataset from the registry; its files stay in the datasets directory, and\n"
   "runs that trained on it keep its name and checksum. Refused (exit 1) while a queued\n"
   "or running experiment uses it (the server names them), and for fashion-mnist, the\n"
   "default.\n"
   "\n"
   "   --json   print the server's JSON answer as it is\n"
   "\n"
   "Example:\n"
   "   mapsage dataset rm cifar10\n",
   CLI_OPTIONS(cli_id_options), NULL},
  {"export", command_export, "export ID [--epoch N] [--format safetensors|checkpoint] (-o | --output) FILE",
   "Writes a run's weights to FILE: as safetensors (default; the config's layer names in\n"
   "PyTorch's shapes, the config as metadata; docs/export.md loads it into PyTorch), or the\n"
   "checkpoint file as stored. Without --epoch, the latest checkpoint.\n"
   "\n"
   "   --epoch N      the checkpoint of epoch N\n"
   "   --format F     safetensors (default) or checkpoint\n"
   "   -o, --output FILE  the file to write\n"
   "\n"
   "Example:\n"
   "   mapsage export 12 -o model.safetensors\n",
   CLI_OPTIONS(cli_export_options), "experiment"},
  {"sql", command_sql, "sql STATEMENT|- [--param VALUE]... [--csv | --json]",
   "Runs one read-only SQL statement over the whole history (tables and views in\n"
   "docs/sql.md) and prints the result as an aligned table: a header, a rule, one\n"
   "line per row; numbers right-aligned, reals to 6 significant digits, NULL empty,\n"
   "control characters escaped, cells cut to 80 columns. \"(3 rows, 1.2 ms)\" follows\n"
   "on stderr, and a note when the server's row limit cut the answer. With - the\n"
   "statement is read from standard input; put -- before one that starts with -.\n"
   "Anything but reading is refused with the server's reason (exit 1).\n"
   "\n"
   "   --param VALUE   bind ?1, ?2, ... in order; repeatable. VALUE goes as a number,\n"
   "                   true, false or null when it is one in JSON, as the string\n"
   "                   inside a JSON string literal ('\"42\"'), else as text\n"
   "   --csv           RFC 4180 CSV with a header line: numbers in full, NULL an\n"
   "                   empty field, the empty string \"\"\n"
   "   --json          the server's answer as it came, laid out one row a line\n"
   "\n"
   "Examples:\n"
   "   mapsage sql \"SELECT id, name, best_test_accuracy FROM experiment_summary\"\n"
   "   mapsage sql \"SELECT step, value FROM metrics WHERE experiment_id = ?1 AND name = ?2\" \\\n"
   "       --param 7 --param loss/total --csv > curve.csv\n"
   "   mapsage sql - < best-per-dataset.sql\n",
   CLI_OPTIONS(cli_sql_options), NULL},
  {"completion", command_completion, "completion bash|zsh",
   "Prints the shell completion script for bash or zsh: commands, their options,\n"
   "experiment and study ids (asked of the server as you type), files where a file\n"
   "goes. Installed packages load it by themselves; by hand:\n"
   "\n"
   "Examples:\n"
   "   source <(mapsage completion bash)             # in ~/.bashrc\n"
   "   mapsage completion zsh > ~/.zfunc/_mapsage    # with fpath+=(~/.zfunc) in ~/.zshrc\n",
   CLI_OPTIONS(cli_help_options), "shell"},
};

static const char cli_usage[] =
  "usage: mapsage [--server URL] [--token-file FILE] [--json] COMMAND [ARGS]\n";

static const char cli_main_help[] =
  "\n"
  "The command-line client of mapsaged, the MapSage experiment daemon: queue\n"
  "knowledge-distillation experiments, follow them live, look at their results.\n"
  "\n"
  "Commands:\n"
  "   submit FILE|-      queue an experiment config; prints the new experiment's id\n"
  "   ls                 list experiments, newest first\n"
  "   show ID            one experiment: status, times, progress, summary, config\n"
  "   watch ID           follow a run live until it ends\n"
  "   cancel ID          stop a queued or running experiment\n"
  "   rerun ID           queue the experiment's config again, changed by --set\n"
  "   logs ID            the worker's log (-f: follow it)\n"
  "   report ID          the run's analysis: loss terms, teacher, baseline, findings\n"
  "   sql STATEMENT|-    query the history with read-only SQL (table, --csv, --json)\n"
  "   study COMMAND      studies: submit (or --dry-run), ls, show, watch, cancel\n"
  "   dataset COMMAND    the dataset registry: add, ls, show, rm\n"
  "   export ID -o FILE  a run's weights as safetensors (or its checkpoint)\n"
  "   completion SHELL   the bash or zsh completion script\n"
  "   help [COMMAND]     this help, or one command's\n"
  "\n"
  "Options:\n"
  "   --server URL       the daemon to talk to (default: $MAPSAGE_SERVER, else the\n"
  "                      config file's server, else " CLI_DEFAULT_SERVER ")\n"
  "   --token-file FILE  send the token in FILE as \"Authorization: Bearer\" with every\n"
  "                      request (default: $MAPSAGE_TOKEN_FILE, else the config file's\n"
  "                      token-file)\n"
  "   --json             machine-readable output, as the command's own --json\n"
  "   -h, --help         show this help\n"
  "   --version          print the version and exit\n"
  "\n"
  "Config file:\n"
  "   $XDG_CONFIG_HOME/mapsage/config (default ~/.config/mapsage/config), lines of\n"
  "   KEY = VALUE, # comments. Keys: server (a URL) and token-file (a path; ~/ is the\n"
  "   home directory, a relative path is relative to the file's directory). A flag\n"
  "   wins over the environment, which wins over the file.\n"
  "\n"
  "Exit status:\n"
  "   0  success\n"
  "   1  the server refused the request (its error is printed), the config or\n"
  "      study is invalid, or the watched run or study failed or was cancelled\n"
  "   2  usage error: unknown command or option, missing argument, unreadable file\n"
  "   3  cannot reach the server\n"
  "\n"
  "Example:\n"
  "   ID=$(mapsage submit examples/baseline.json --set optimizer.lr=0.01)\n"
  "   mapsage watch \"$ID\" && mapsage show \"$ID\"\n"
  "\n"
  "See 'mapsage COMMAND --help' for one command's options.\n";

const cli_command_t *cli_command_list(size_t *count) {
  *count = ARRAY_SIZE(cli_commands);
  return cli_commands;
}

const option_t *cli_global_option_list(size_t *count) {
  *count = ARRAY_SIZE(cli_global_options);
  return cli_global_options;
}

static const cli_command_t *cli_find(const char *name) {
  for (size_t i = 0; i < ARRAY_SIZE(cli_commands); i++)
    if (strcmp(cli_commands[i].name, name) == 0) return &cli_commands[i];
  return NULL;
}

/* A command as the user typed it: never one of the "group sub" entries, whose names hold a
 * space, so `mapsage "study submit"` is not a command. */
static const cli_command_t *cli_find_command(const char *name) {
  return strchr(name, ' ') == NULL ? cli_find(name) : NULL;
}

/* The entry "group sub" when `sub` names one of group's subcommands, else NULL. */
static const cli_command_t *cli_find_subcommand(const char *group, const char *sub) {
  char name[64];
  if (sub[0] == '-' || strchr(sub, ' ') != NULL) return NULL;
  if (snprintf(name, sizeof name, "%s %s", group, sub) >= (int)sizeof name) return NULL;
  return cli_find(name);
}

int cli_help(const char *name) {
  const cli_command_t *command = cli_find(name);
  if (command == NULL) return CLI_EXIT_USAGE;
  printf("usage: mapsage %s\n\n%s", command->usage, command->help);
  return CLI_EXIT_OK;
}

/* One line of help as roff inside .nf: a backslash written \e, a minus \-, and \& before
 * a line that would otherwise start with a request. */
static void cli_roff_line(const char *line, size_t length) {
  if (length > 0 && (line[0] == '.' || line[0] == '\'')) fputs("\\&", stdout);
  for (size_t i = 0; i < length; i++) {
    if (line[i] == '\\') fputs("\\e", stdout);
    else if (line[i] == '-') fputs("\\-", stdout);
    else putchar(line[i]);
  }
  putchar('\n');
}

/* `mapsage help --man`: every command's help as the COMMANDS section of mapsage(1), in the
 * form help2man's --include reads (the build makes the man page from it and --help). */
int cli_help_man(void) {
  printf("[COMMANDS]\n");
  for (size_t i = 0; i < ARRAY_SIZE(cli_commands); i++) {
    const cli_command_t *command = &cli_commands[i];
    printf(".SS \"mapsage ");
    cli_roff_line(command->usage, strcspn(command->usage, "\n"));
    printf(".nf\n");
    for (const char *line = command->help; *line != '\0';) {
      size_t length = strcspn(line, "\n");
      cli_roff_line(line, length);
      line += length + (line[length] == '\n');
    }
    printf(".fi\n");
  }
  return CLI_EXIT_OK;
}

int cli_out_of_memory(void) {
  fprintf(stderr, "mapsage: out of memory\n");
  return CLI_EXIT_FAILED;
}

int cli_usage_error(const char *name, const char *format, ...) {
  const cli_command_t *command = cli_find(name);
  va_list arguments;
  va_start(arguments, format);
  fputs("mapsage: ", stderr);
  vfprintf(stderr, format, arguments);
  va_end(arguments);
  if (command != NULL)
    fprintf(stderr, "\nusage: mapsage %s\nTry 'mapsage %s --help' for more.\n", command->usage, name);
  else
    fprintf(stderr, "\n%sTry 'mapsage --help' for more.\n", cli_usage);
  return CLI_EXIT_USAGE;
}

void cli_options_init(options_t *parser, const char *command, int argc, char **argv) {
  const cli_command_t *entry = cli_find(command);
  /* An entry without a table of its own still answers -h. */
  if (entry != NULL && entry->options != NULL)
    options_init(parser, entry->options, entry->n_options, argc, argv);
  else
    options_init(parser, cli_help_options, ARRAY_SIZE(cli_help_options), argc, argv);
}

int cli_options_default(const options_t *parser, const char *command, int key) {
  if (key == CLI_OPTION_HELP) return cli_help(command);
  if (key == OPTIONS_ERROR) return cli_usage_error(command, "%s", parser->error);
  if (key == OPTIONS_ARGUMENT) return cli_usage_error(command, "unexpected argument %s", parser->value);
  /* An option in the command's table that the command forgot to handle. */
  return cli_usage_error(command, "--%s is not handled here", parser->option != NULL ? parser->option->name : "?");
}

int cli_parse_id(const char *text, long long *id) {
  if (text[0] < '0' || text[0] > '9') return -EINVAL;
  char *end;
  errno = 0;
  long long value = strtoll(text, &end, 10);
  if (errno != 0 || *end != '\0' || value <= 0) return -EINVAL;
  *id = value;
  return 0;
}

int cli_parse_id_arguments(const char *command, const char *what, int argc, char **argv, long long *id,
                           const cli_flag_t *flags) {
  options_t parser;
  cli_options_init(&parser, command, argc, argv);
  const char *id_text = NULL;
  int key;
  while ((key = options_next(&parser)) != OPTIONS_END) {
    const cli_flag_t *flag = flags;
    while (flag != NULL && flag->key != 0 && flag->key != key) flag++;
    if (flag != NULL && flag->key != 0 && flag->value != NULL) *flag->value = 1;
    else if (key == OPTIONS_ARGUMENT && id_text != NULL)
      return cli_usage_error(command, "one %s at a time: got %s and %s", what, id_text, parser.value);
    else if (key == OPTIONS_ARGUMENT)
      id_text = parser.value;
    else
      return cli_options_default(&parser, command, key);
  }
  if (id_text == NULL) return cli_usage_error(command, "which %s? give its ID", what);
  if (cli_parse_id(id_text, id) != 0) return cli_usage_error(command, "an ID is a positive number, not %s", id_text);
  return CLI_PROCEED;
}

int cli_parse_id_command(const cli_global_t *global, const char *command, int argc, char **argv, long long *id,
                         int *json) {
  if (json != NULL && global->json) *json = 1;
  const cli_flag_t flags[] = {{CLI_OPTION_JSON, json}, {0, NULL}};
  return cli_parse_id_arguments(command, "experiment", argc, argv, id, flags);
}

/* `mapsage [OPTIONS]` up to the command: fills `global`; CLI_PROCEED with *next at the
 * command, or the exit code (after --help, --version or a usage error). */
static int cli_parse_global(int argc, char **argv, cli_global_t *global, int *next) {
  options_t parser;
  options_init(&parser, cli_global_options, ARRAY_SIZE(cli_global_options), argc, argv);
  parser.stop_at_argument = 1;
  int key;
  while ((key = options_next(&parser)) != OPTIONS_END) {
    switch (key) {
    case CLI_OPTION_SERVER: global->server = parser.value; break;
    case CLI_OPTION_TOKEN_FILE: global->token_file = parser.value; break;
    case CLI_OPTION_JSON: global->json = 1; break;
    case CLI_OPTION_HELP: printf("%s%s", cli_usage, cli_main_help); return CLI_EXIT_OK;
    case CLI_OPTION_VERSION: printf("mapsage %s\n", MAPSAGE_VERSION); return CLI_EXIT_OK;
    default: return cli_usage_error("", "%s", parser.error);
    }
  }
  *next = parser.index;
  return CLI_PROCEED;
}

int main(int argc, char **argv) {
  cli_global_t global = {0};
  int i = 1;
  int parsed = cli_parse_global(argc, argv, &global, &i);
  if (parsed != CLI_PROCEED) return parsed;
  if (i == argc) {
    fprintf(stderr, "%s%s", cli_usage, cli_main_help);
    return CLI_EXIT_USAGE;
  }

  const char *name = argv[i];
  if (strcmp(name, "help") == 0) {
    if (i + 1 >= argc) {
      printf("%s%s", cli_usage, cli_main_help);
      return CLI_EXIT_OK;
    }
    if (strcmp(argv[i + 1], "--man") == 0 && i + 2 == argc) return cli_help_man();
    if (cli_find_command(argv[i + 1]) == NULL)
      return cli_usage_error("", "'%s' is not a mapsage command", argv[i + 1]);
    const cli_command_t *sub = i + 2 < argc ? cli_find_subcommand(argv[i + 1], argv[i + 2]) : NULL;
    return cli_help(sub != NULL ? sub->name : argv[i + 1]);
  }
  const cli_command_t *command = cli_find_command(name);
  if (command == NULL) return cli_usage_error("", "'%s' is not a mapsage command", name);
  /* `study submit …` runs the entry "study submit" with argv[0] = "submit"; anything else
   * after `study` is the group's own to answer (its help, or an unknown subcommand). */
  const cli_command_t *sub = i + 1 < argc ? cli_find_subcommand(name, argv[i + 1]) : NULL;
  if (sub != NULL) {
    command = sub;
    i++;
  }

  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    fprintf(stderr, "mapsage: cannot initialise libcurl\n");
    return CLI_EXIT_FAILED;
  }
  int exit_code = command->run(&global, argc - i, argv + i);
  curl_global_cleanup();
  /* A full disk or a closed pipe must not pass for success: scripts read our stdout. */
  if (fflush(stdout) != 0 || ferror(stdout)) {
    fprintf(stderr, "mapsage: cannot write the output: %s\n", strerror(errno));
    if (exit_code == CLI_EXIT_OK) exit_code = CLI_EXIT_FAILED;
  }
  return exit_code;
}
