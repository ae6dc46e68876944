-- schema.sql — the MapSage database, built into mapsaged and applied when it starts.
--
-- One plain SQLite file in WAL mode: `sqlite3 mapsage.db` can read it while the daemon
-- runs. The daemon is the only writer. Times are UTC text in ISO 8601 with milliseconds
-- ('2026-11-27T19:30:00.123Z'): they sort as text and julianday() reads them.
-- docs/sql.md explains every table and view, with queries.
--
-- The daemon runs this whole file at every start, in one transaction: tables and indexes
-- are created if missing, and views are dropped and made again, so a database always has
-- the views of the daemon that opened it. PRAGMA user_version counts the versions of the
-- tables: version 3 is this file; a change to a released table adds a migration (in
-- daemon/db.c) that brings version N to N+1 (2 added experiments.planned_epochs and
-- planned_stages; 3 added the study tables, which need no migration: they are created
-- when missing).

CREATE TABLE IF NOT EXISTS experiments (
  id           INTEGER PRIMARY KEY,
  name         TEXT NOT NULL DEFAULT '',
  status       TEXT NOT NULL DEFAULT 'queued'
               CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
  priority     INTEGER NOT NULL DEFAULT 0,     -- higher runs first, then older first
  teacher_id   INTEGER REFERENCES experiments (id), -- waits for this run to succeed; NULL: none
                                               -- (or a teacher given as a checkpoint file)
  config       TEXT NOT NULL,                  -- the config as JSON, every default filled in
  created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  started_at   TEXT,                           -- when its latest attempt started
  finished_at  TEXT,
  attempts     INTEGER NOT NULL DEFAULT 0,     -- worker processes started for it
  crashes      INTEGER NOT NULL DEFAULT 0,     -- of those, how many crashed (and were retried)
  error        TEXT,                           -- why it failed, in words
  worker       TEXT,                           -- JSON the worker reported at start (host, pid, params…)
  summary      TEXT,                           -- JSON the worker reported at the end
  epoch        INTEGER,                        -- progress: the latest epoch, step and stage seen
  step         INTEGER,
  stage        INTEGER,
  planned_epochs INTEGER,                      -- the config's epochs in all its stages
  planned_stages INTEGER                       -- how many stages the config has
);
CREATE INDEX IF NOT EXISTS experiments_by_queue ON experiments (status, priority DESC, id);
CREATE INDEX IF NOT EXISTS experiments_by_teacher ON experiments (teacher_id) WHERE teacher_id IS NOT NULL;

-- Every per-step value, one row per (experiment, name, step). Written idempotently: a run
-- that repeats steps (resumed from a checkpoint) overwrites rather than duplicates.
CREATE TABLE IF NOT EXISTS metrics (
  experiment_id INTEGER NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
  name          TEXT NOT NULL,                 -- 'loss/total', 'lr', 'grad_norm/fc1', …
  step          INTEGER NOT NULL,              -- optimizer updates, from 1
  epoch         INTEGER NOT NULL,              -- from 1
  stage         INTEGER NOT NULL,              -- index into the config's stages, from 0
  value         REAL NOT NULL,
  PRIMARY KEY (experiment_id, name, step)
) WITHOUT ROWID;

-- The names of each experiment's curves, one row each: what there is to plot, and the
-- index by which the live stream replays metrics in step order.
CREATE TABLE IF NOT EXISTS series (
  experiment_id INTEGER NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
  name          TEXT NOT NULL,
  PRIMARY KEY (experiment_id, name)
) WITHOUT ROWID;

-- Per-epoch evaluations: split 'train', 'val', 'test' (and 'teacher'), name 'accuracy',
-- 'loss', …; the full metric name is split || '/' || name.
CREATE TABLE IF NOT EXISTS evals (
  experiment_id INTEGER NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
  split         TEXT NOT NULL,
  split_order   INTEGER NOT NULL,              -- train 0, val 1, test 2, teacher 3: stream order
  name          TEXT NOT NULL,
  epoch         INTEGER NOT NULL,
  step          INTEGER NOT NULL,              -- the step after which it was computed
  stage         INTEGER NOT NULL,
  value         REAL NOT NULL,
  at            TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')), -- when it was stored
  PRIMARY KEY (experiment_id, split, name, epoch)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS evals_by_step ON evals (experiment_id, step, split_order);

-- Where each stage begins: the dashboard's stage markers. `step` is the number of steps
-- done before the stage starts (its first step is step + 1).
CREATE TABLE IF NOT EXISTS stage_starts (
  experiment_id INTEGER NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
  stage         INTEGER NOT NULL,
  name          TEXT NOT NULL,
  epoch         INTEGER NOT NULL,              -- its first epoch, from 1
  step          INTEGER NOT NULL,
  PRIMARY KEY (experiment_id, stage)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS checkpoints (
  experiment_id INTEGER NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
  epoch         INTEGER NOT NULL,
  step          INTEGER NOT NULL,
  path          TEXT NOT NULL,
  bytes         INTEGER NOT NULL,
  created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  PRIMARY KEY (experiment_id, epoch)
) WITHOUT ROWID;

-- The worker's standard error (and protocol lines the daemon could not use), per attempt.
CREATE TABLE IF NOT EXISTS logs (
  experiment_id INTEGER NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
  attempt       INTEGER NOT NULL,
  line_number   INTEGER NOT NULL,
  at            TEXT NOT NULL,
  line          TEXT NOT NULL,
  PRIMARY KEY (experiment_id, attempt, line_number)
) WITHOUT ROWID;

-- ---------------------------------------------------------------------------------------
-- Studies: many experiments that answer one question (docs/studies.md). A study is stored
-- once and expanded at submission into ordinary experiments, each linked by study_runs.

CREATE TABLE IF NOT EXISTS studies (
  id           INTEGER PRIMARY KEY,
  name         TEXT NOT NULL,
  description  TEXT NOT NULL DEFAULT '',
  spec         TEXT NOT NULL,                  -- the study as submitted (JSON)
  status       TEXT NOT NULL DEFAULT 'queued'
               CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
  created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  started_at   TEXT,                           -- when its first run started
  finished_at  TEXT,                           -- when its last run ended
  error        TEXT,                           -- failed: which runs failed
  statistics   TEXT                            -- JSON: arms, comparisons, grid (as the API shows them),
                                               -- computed by the daemon each time one of its runs ends
);

-- One row per run and the role it plays for an arm: `role` is 'teacher', 'arm' or
-- 'baseline'; a baseline's arm is '<arm>/baseline' for the arm it is matched to, and a
-- baseline serving several arms (or cells) has a row for each. `cell` holds the grid or
-- random values of the arm's cell as JSON ('{}' without a grid).
CREATE TABLE IF NOT EXISTS study_runs (
  study_id      INTEGER NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
  experiment_id INTEGER NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
  role          TEXT NOT NULL CHECK (role IN ('teacher', 'arm', 'baseline')),
  arm           TEXT NOT NULL,
  seed          INTEGER NOT NULL,
  cell          TEXT NOT NULL DEFAULT '{}',
  stopped_epoch INTEGER,                       -- early stopping: the epoch after which it was stopped
  PRIMARY KEY (study_id, experiment_id, arm, cell)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS study_runs_by_experiment ON study_runs (experiment_id);

-- The statistics in rows, rewritten with studies.statistics: each arm's outcomes, and each
-- distilling arm against its matched baseline (paired over seeds). Read them through the
-- views study_arm_summary and study_comparison.
CREATE TABLE IF NOT EXISTS study_arm_statistics (
  study_id  INTEGER NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
  arm       TEXT NOT NULL,
  cell      TEXT NOT NULL,
  role      TEXT NOT NULL,
  outcome   TEXT NOT NULL,                     -- test_accuracy, best_val_accuracy, test_loss, agreement, wall_time_s
  n         INTEGER NOT NULL,                  -- runs that succeeded and were not stopped early
  mean      REAL,
  sd        REAL,
  ci_low    REAL,                              -- the 95% t interval of the mean
  ci_high   REAL,
  PRIMARY KEY (study_id, arm, cell, outcome)
) WITHOUT ROWID;

-- The dataset registry (daemon/dataset.c, docs/datasets.md): files inside --datasets-dir,
-- their content's SHA-256, shape and what registration measured. Runs refer to a dataset
-- by name (experiments.dataset) and keep the checksum they trained on
-- (experiments.dataset_checksum, added by daemon/db.c when missing).
CREATE TABLE IF NOT EXISTS datasets (
  name          TEXT PRIMARY KEY,
  source        TEXT NOT NULL,                 -- JSON: format, train, test, names, layout, classes
  checksum      TEXT,                          -- SHA-256 of the files; NULL until first read
  classes       INTEGER,
  channels      INTEGER,
  height        INTEGER,
  width         INTEGER,
  train_size    INTEGER,
  test_size     INTEGER,
  class_names   TEXT,                          -- JSON array, or NULL
  statistics    TEXT,                          -- JSON: counts, mean and std, duplicates, warnings
  samples       TEXT,                          -- JSON: a few base64 images per class
  registered_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS study_comparison_statistics (
  study_id  INTEGER NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
  arm       TEXT NOT NULL,
  cell      TEXT NOT NULL,
  baseline  TEXT NOT NULL,
  outcome   TEXT NOT NULL,
  n         INTEGER NOT NULL,                  -- seeds where both sides succeeded
  mean_diff REAL,                              -- arm − baseline, paired by seed
  ci_low    REAL,
  ci_high   REAL,
  p         REAL,                              -- paired t-test, two-sided
  p_holm    REAL,                              -- Holm–Bonferroni over the study's comparisons of this outcome
  matched   INTEGER NOT NULL,                  -- 1: every pair trained the same number of steps
  PRIMARY KEY (study_id, arm, cell, outcome)
) WITHOUT ROWID;

-- ---------------------------------------------------------------------------------------
-- Views for people writing SQL by hand.

-- All curves in one long table: per-step metrics and per-epoch evaluations under their
-- full names ('loss/total', 'test/accuracy').
DROP VIEW IF EXISTS curves;
CREATE VIEW curves AS
  SELECT experiment_id, name, step, epoch, stage, value FROM metrics
  UNION ALL
  SELECT experiment_id, split || '/' || name, step, epoch, stage, value FROM evals;

-- One row per experiment with its key config fields and its final and best figures.
DROP VIEW IF EXISTS experiment_summary;
CREATE VIEW experiment_summary AS
  SELECT
    e.id,
    e.name,
    e.status,
    e.teacher_id                                             AS teacher,
    json_extract(e.config, '$.dataset.name')                 AS dataset,
    json_extract(e.config, '$.seed')                         AS seed,
    json_extract(e.config, '$.optimizer.type')               AS optimizer,
    json_extract(e.config, '$.batch_size')                   AS batch_size,
    e.planned_epochs                                         AS epochs,
    (SELECT group_concat(json_extract(s.value, '$.name') || ':' || json_extract(s.value, '$.epochs'), ' → ')
       FROM json_each(e.config, '$.stages') AS s)            AS stage_plan,
    (SELECT group_concat(printf('%g/%g/%g', json_extract(s.value, '$.task_weight'),
                                json_extract(s.value, '$.distill_weight'), json_extract(s.value, '$.feature_weight')), ' → ')
       FROM json_each(e.config, '$.stages') AS s)            AS weights,
    json_extract(e.config, '$.temperature.schedule')         AS temperature_schedule,
    json_extract(e.config, '$.temperature.start')            AS temperature_start,
    json_extract(e.config, '$.temperature.end')              AS temperature_end,
    json_array_length(e.config, '$.features')                AS feature_pairs,
    (SELECT value FROM evals v WHERE v.experiment_id = e.id AND v.split = 'test'
        AND v.name = 'accuracy' ORDER BY v.epoch DESC LIMIT 1) AS final_test_accuracy,
    (SELECT max(value) FROM evals v WHERE v.experiment_id = e.id AND v.split = 'test'
        AND v.name = 'accuracy')                             AS best_test_accuracy,
    (SELECT max(value) FROM evals v WHERE v.experiment_id = e.id AND v.split = 'val'
        AND v.name = 'accuracy')                             AS best_val_accuracy,
    (SELECT value FROM evals v WHERE v.experiment_id = e.id AND v.split = 'test'
        AND v.name = 'loss' ORDER BY v.epoch DESC LIMIT 1)   AS final_test_loss,
    (SELECT max(epoch) FROM evals v WHERE v.experiment_id = e.id AND v.split = 'test') AS epochs_done,
    e.step                                                   AS steps_done,
    round((julianday(CASE WHEN e.status = 'running' THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                          ELSE e.finished_at END)
           - julianday(e.started_at)) * 86400.0, 3)          AS duration_s, -- NULL until it ends
    e.attempts,
    e.error,
    e.created_at,
    e.started_at,
    e.finished_at
  FROM experiments e;

-- Each loss term per stage of each experiment: where the stage starts and ends, and the
-- term's mean over the first and the last 20 steps of the stage (single steps are noisy;
-- a fifth of the stage when that is shorter),
-- so "did the task loss fall during distillation?" is one query. Covers loss/* and
-- weighted/* (each term times its weight in that stage).
DROP VIEW IF EXISTS stage_summary;
CREATE VIEW stage_summary AS
  WITH spans AS (
    SELECT experiment_id, stage, name, min(step) AS first_step, max(step) AS last_step,
           count(*) AS steps, avg(value) AS mean_value,
           max(1, min(20, count(*) / 5)) AS window  -- a short stage still shows movement
      FROM metrics
     WHERE name LIKE 'loss/%' OR name LIKE 'weighted/%'
     GROUP BY experiment_id, stage, name)
  SELECT s.experiment_id,
         s.stage,
         json_extract(e.config, '$.stages[' || s.stage || '].name') AS stage_name,
         s.name,
         s.first_step,
         s.last_step,
         s.steps,
         (SELECT avg(value) FROM metrics f WHERE f.experiment_id = s.experiment_id AND f.name = s.name
             AND f.step BETWEEN s.first_step AND s.first_step + s.window - 1) AS start_value,
         (SELECT avg(value) FROM metrics l WHERE l.experiment_id = s.experiment_id AND l.name = s.name
             AND l.step BETWEEN s.last_step - s.window + 1 AND s.last_step) AS end_value,
         s.mean_value
    FROM spans s JOIN experiments e ON e.id = s.experiment_id;

-- Each arm of each study with its outcomes: n, mean, sd and 95% interval.
DROP VIEW IF EXISTS study_arm_summary;
CREATE VIEW study_arm_summary AS
  SELECT s.study_id, t.name AS study, s.arm, s.role, s.cell, s.outcome, s.n, s.mean, s.sd, s.ci_low, s.ci_high
    FROM study_arm_statistics s JOIN studies t ON t.id = s.study_id;

-- Each distilling arm against its matched baseline: the paired difference and its test.
DROP VIEW IF EXISTS study_comparison;
CREATE VIEW study_comparison AS
  SELECT c.study_id, t.name AS study, c.arm, c.baseline, c.cell, c.outcome, c.n, c.mean_diff, c.ci_low, c.ci_high,
         c.p, c.p_holm, c.matched
    FROM study_comparison_statistics c JOIN studies t ON t.id = c.study_id;
