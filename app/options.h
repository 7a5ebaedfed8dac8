// app/options.h: the one option machinery of every sd-qzo command. A command
// describes its settings once, as a table of sq_option rows over its own options
// struct; this module turns that table into
//   - flags: --name VALUE, --name=VALUE, a bare --bool (true) and --no-bool (false),
//     and the row's alias as a second spelling of the same option;
//   - config files (tables with config_file set): --config FILE, read before the
//     flags wherever it appears, JSON ({"lr": 1e-5}) or flat TOML (lr = 1e-5), keys
//     spelled like the flags without "--" (dashes or underscores both accepted);
//   - --help: usage line, one line per option with its alias and default as written;
//   - the settings as JSON (a run's run.json) and a fingerprint of the rows marked
//     as changing the result.
// Enumerations (SQ_OPT_ENUM) are parsed here, once, into the field's enum value; an
// unknown word is one error line listing the allowed ones. Floats are shown in the
// shortest form that reads back as the same float ("1e-05", not "9.99999975e-06").
// Every error is one line naming the flag (core/error.h); nothing here exits.
#ifndef SQ_OPTIONS_H
#define SQ_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum {
    SQ_OPT_STR,    // char field[size]
    SQ_OPT_INT,    // int; with choices: one of the listed values
    SQ_OPT_I64,    // int64_t
    SQ_OPT_U64,    // uint64_t
    SQ_OPT_FLOAT,  // float
    SQ_OPT_BOOL,   // bool
    SQ_OPT_ENUM,   // an enum (int-sized) field, written as one of choices' names
} sq_opt_type;

// One allowed value: an ENUM's word and its value, or an INT's allowed number
// (name is then its decimal spelling). Lists end with {NULL, 0}.
typedef struct {
    const char *name;
    int value;
} sq_opt_choice;

typedef struct {
    const char *name;               // flag without "--", also the config-file key
    const char *alias;              // a second accepted spelling, or NULL
    sq_opt_type type;
    size_t offset;                  // of the field in the command's options struct
    size_t size;                    // SQ_OPT_STR: the char array's size
    const sq_opt_choice *choices;   // SQ_OPT_ENUM (required), SQ_OPT_INT (optional), SQ_OPT_FLOAT (optional:
                                    // its first word, e.g. "auto", is stored as NAN and written back as the word)
    bool fingerprint;               // changes the computed result (a resumed run must match)
    const char *help;
} sq_option;

typedef struct {
    const char *command;            // "train": for messages ("sd-qzo train --help")
    const char *usage;              // printed first by --help (ends with a newline)
    const char *epilog;             // printed after the options, or NULL
    const sq_option *options;
    int count;
    size_t struct_size;             // sizeof the options struct
    void (*defaults)(void *obj);    // fills a struct with the defaults
    bool config_file;               // --config FILE is accepted
    const char *positional;         // the row a bare argument sets (once), or NULL: none taken
} sq_option_table;

// Row helpers for tables over struct S (see app/train_options.c for a table).
#define SQ_OPT_FIELD(S, f) offsetof(S, f), 0
#define SQ_OPT_STRING(S, f) offsetof(S, f), sizeof(((S *)0)->f)
// An enum field is written through an int: this catches a field that is not int-sized.
#define SQ_OPT_ENUM_FIELD(S, f) \
    offsetof(S, f) + 0 * sizeof(char[sizeof(((S *)0)->f) == sizeof(int) ? 1 : -1]), 0

// The int4 group sizes every command accepts (kernels/quant.h's layouts).
extern const sq_opt_choice sq_opt_group_sizes[];
// --device: auto | cpu | cuda, as kernels/backend.h's sq_device_request.
extern const sq_opt_choice sq_opt_devices[];

// The row for a flag or config key (name or alias, '_' read as '-'); NULL if none.
const sq_option *sq_options_find(const sq_option_table *t, const char *key);
// Applies one key = value pair (config files and flags share it).
int sq_options_set(const sq_option_table *t, void *obj, const char *key, const char *value);
int sq_options_load_file(const sq_option_table *t, void *obj, const char *path);
// Parses argv (argv[0] = the command name) into obj, which holds the defaults.
// *help is set when -h/--help was given (nothing else is read then). given, when
// not NULL, has t->count entries: given[i] is set when row i came from a flag or a
// config file (a default that depends on another setting must not override it).
int sq_options_parse(const sq_option_table *t, void *obj, int argc, char **argv, bool *help, bool *given);
// Whether the row named `name` was given (given from sq_options_parse).
bool sq_options_given(const sq_option_table *t, const bool *given, const char *name);
void sq_options_usage(const sq_option_table *t, FILE *f);

// The value of one row as --help and run.json write it ("" for an empty string).
void sq_options_format(const sq_option *o, const void *obj, char *buf, size_t size);
// An enum value's word ("?" when it is none of the choices).
const char *sq_options_choice_name(const sq_opt_choice *choices, int value);
// The shortest %g form of v that strtof reads back as v exactly.
void sq_format_float(float v, char *buf, size_t size);
// The settings as one JSON object (malloc'ed): numbers as numbers (floats in their
// shortest form), enums as their words, bools as booleans, u64 as strings (JSON
// numbers lose digits above 2^53).
char *sq_options_json(const sq_option_table *t, const void *obj);
// SHA-256 over the rows marked fingerprint, as hex.
void sq_options_fingerprint(const sq_option_table *t, const void *obj, char hex[65]);

#endif
