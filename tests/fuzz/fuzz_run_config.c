// tests/fuzz/fuzz_run_config.c: libFuzzer target for run configs (app/options.c's
// TOML subset and JSON) with the train options table: load onto the defaults, then
// validate, as `sd-qzo train --config FILE` does. An input starting with '{' is
// read as JSON, anything else as TOML (the same rule as options.c).
#include "app/train_options.h"
#include "core/error.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_write("run.toml", data, size);
    sd_train_options o;
    sd_train_options_defaults(&o);
    if (sq_options_load_file(&sd_train_option_table, &o, path) == SQ_OK) (void)sd_train_options_validate(&o);
    return 0;
}
