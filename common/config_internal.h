/* config_internal.h — what the files of the config's validator share and nothing else
 * includes (callers use config.h): the field readers of config.c, each section's reader
 * and the names its values are written with. config.c reads one field with its path;
 * config_dataset.c, config_model.c, config_training.c and config_distill.c each read
 * their sections; config_json.c walks the sections in order and writes the config back. */
#ifndef MAPSAGE_CONFIG_INTERNAL_H
#define MAPSAGE_CONFIG_INTERNAL_H

#include <stddef.h>

#include <jansson.h>

#include "config.h"

/* The readers keep their short names in the section files (they are on nearly every line
 * there), as add_error does; the linker sees them with the module's prefix. */
#define add_error cfg_add_error
#define join cfg_join
#define json_type_name cfg_json_type_name
#define check_known_keys cfg_check_known_keys
#define get_object cfg_get_object
#define get_integer cfg_get_integer
#define get_int cfg_get_int
#define get_number cfg_get_number
#define get_string cfg_get_string
#define get_choice cfg_get_choice
#define is_identifier cfg_is_identifier

/* config.c: one field of an object at `prefix`, its default kept when absent, an
 * error recorded (never a stop) when it is of the wrong type or out of range. */
const char *join(char *buffer, size_t size, const char *prefix, const char *key);
const char *json_type_name(const json_t *value);
void check_known_keys(const json_t *object, const char *prefix, const char *const *known,
                      cfg_errors_t *errors);
const json_t *get_object(const json_t *object, const char *prefix, const char *key, cfg_errors_t *errors);
int get_integer(const json_t *object, const char *prefix, const char *key, long long minimum,
                long long maximum, long long *out, cfg_errors_t *errors);
void get_int(const json_t *object, const char *prefix, const char *key, int minimum, int maximum,
             int *out, cfg_errors_t *errors);
int get_number(const json_t *object, const char *prefix, const char *key, double minimum, int open_minimum,
               double maximum, double *out, cfg_errors_t *errors);
int get_string(const json_t *object, const char *prefix, const char *key, char *out, size_t size,
               cfg_errors_t *errors);
int get_choice(const json_t *object, const char *prefix, const char *key, const char *const *choices,
               int fallback, cfg_errors_t *errors);
int is_identifier(const char *name);

/* The sections, each read from the config's root into `config` (config_json.c says in
 * which order: some read what an earlier one filled in). */
void cfg_parse_dataset(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors);
void cfg_parse_model(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors);
void cfg_parse_grow(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors);
void cfg_parse_optimizer(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors);
void cfg_parse_stages(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors);
void cfg_parse_resources(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors);
void cfg_parse_teacher(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors);
void cfg_parse_temperature(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors);
void cfg_parse_features(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors);
void cfg_parse_adversarial(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors);
void cfg_check_terms(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors);

/* What config_json.c writes back (cfg_to_json), each where its section is read. */
const char *cfg_dataset_name(const cfg_experiment_t *config);
json_t *cfg_layer_to_json(const cfg_layer_t *layer);
extern const char *const cfg_optimizer_kinds[];
extern const char *const cfg_lr_schedules[];
extern const char *const cfg_temperature_schedules[];
extern const char *const cfg_gates[];
extern const char *const cfg_adversarial_losses[];

#endif
