// app/cmd_train.c: `sd-qzo train`: options, the run folder, the data, then the two
// phases of app/train.h (encode once into the cache, then QZO steps). The run folder
// OUT holds run.json (the settings and their fingerprint), checkpoint.safetensors,
// log.jsonl / log.csv, previews/ and report.html; a second run into the same OUT is
// refused unless it resumes that run (same fingerprint) or says --overwrite.
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "app/commands.h"
#include "app/train.h"
#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/path.h"
#include "core/progress.h"
#include "datasets/buckets.h"
#include "distributed/exchange.h"
#include "distributed/launch.h"
#include "kernels/backend.h"
#include "kernels/ops.h"
#include "qzo/checkpoint.h"

static volatile sig_atomic_t stop_requested = 0;

static void on_signal(int sig) {
    (void)sig;
    // A second Ctrl-C kills at once: the handler goes back to the default.
    if (stop_requested) signal(sig, SIG_DFL);
    stop_requested = 1;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

// One run per OUT at a time: an exclusive flock on OUT/.lock, taken before anything
// else reads or writes OUT and held until the process ends (the kernel drops it on
// any exit, SIGKILL included, so a stale .lock never blocks). *created: OUT did
// not exist and was made for the lock.
static int lock_output(const char *out, int *fd, bool *created) {
    char path[1100];
    *created = !sq_is_dir(out);
    if (*created && sq_mkdirs(out) != SQ_OK) return SQ_FAIL;
    snprintf(path, sizeof path, "%s/.lock", out);
    int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (f < 0) return sq_error_errno("cannot open %s", path);
    if (flock(f, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(f);
        if (e == EWOULDBLOCK)
            return sq_errorf("%s is locked: another `sd-qzo train` is running into %s; wait for it to end or choose "
                             "another --output", path, out);
        errno = e;
        return sq_error_errno("cannot lock %s", path);
    }
    *fd = f;
    return SQ_OK;
}

// A refused start leaves no trace in an OUT it created: the lock file, then OUT
// itself when empty.
static void unlock_output(const char *out, int fd, bool created, bool started) {
    if (fd < 0) return;
    if (created && !started) {
        char path[1100];
        snprintf(path, sizeof path, "%s/.lock", out);
        unlink(path);
        rmdir(out);
    }
    close(fd);
}

// Atomic writes (core/safetensors.h, run.json) go through "<name>.tmp.<pid>"; a
// process killed mid-write (SIGKILL, power loss) leaves that file behind. With the
// lock held, those of processes no longer alive are removed.
static void remove_stale_temps(const char *out) {
    DIR *d = opendir(out);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *t = strstr(e->d_name, ".tmp.");
        while (t && strstr(t + 1, ".tmp.")) t = strstr(t + 1, ".tmp.");
        if (!t || t == e->d_name || !t[5]) continue;
        char *end;
        errno = 0;
        long pid = strtol(t + 5, &end, 10);
        if (*end || errno || pid <= 0 || t[5] < '0' || t[5] > '9') continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char path[1400];
        snprintf(path, sizeof path, "%s/%s", out, e->d_name);
        if (unlink(path) == 0) sq_log_info("removed %s, left by an interrupted write of process %ld (no longer running)", path, pid);
    }
    closedir(d);
}

// The run folder: refuses to mix two different runs (a different fingerprint, or
// any earlier run when not resuming).
static int check_output(const sd_trainer *t) {
    const sd_train_options *o = &t->opt;
    char run_json[1100], ckpt[1100], fp[65];
    snprintf(run_json, sizeof run_json, "%s/run.json", o->output);
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", o->output);
    sd_train_options_fingerprint(o, fp);
    if (sq_is_file(run_json) && !o->overwrite) {
        sq_config *c;
        if (sq_config_load(&c, run_json) != SQ_OK) return sq_error_context("--output holds an unreadable run.json");
        const char *old = sq_config_string_or(c, "fingerprint", "");
        bool same = !strcmp(old, fp);
        sq_config_free(c);
        if (!o->resume[0])
            return sq_errorf("%s already holds a training run%s; continue it with --resume %s, or pass --overwrite to start "
                             "afresh there", o->output, sq_is_file(ckpt) ? " (with a checkpoint)" : "", ckpt);
        if (!same)
            return sq_errorf("--resume: the settings differ from the run in %s (see its run.json); a resumed run must use "
                             "the same data, model and optimiser settings", o->output);
    }
    return SQ_OK;
}

// Records this run's settings in OUT/run.json, once everything has been checked (a
// run that fails at start leaves no run.json to block the next attempt).
static int write_run_json(const sd_trainer *t) {
    const sd_train_options *o = &t->opt;
    char run_json[1100], fp[65];
    snprintf(run_json, sizeof run_json, "%s/run.json", o->output);
    sd_train_options_fingerprint(o, fp);
    if (sq_mkdirs(o->output) != SQ_OK) return SQ_FAIL;
    char *settings = sd_train_options_json(o);
    cJSON *root = settings ? cJSON_Parse(settings) : NULL;
    free(settings);
    if (!root) return sq_errorf("out of host memory");
    cJSON *wrap = cJSON_CreateObject();
    cJSON_AddStringToObject(wrap, "fingerprint", fp);
    cJSON_AddItemToObject(wrap, "options", root);
    // what the processes computed (a resumed run may use another count: it rewrites this)
    int W = sq_dist_world(t->dist);
    cJSON *ranks = cJSON_CreateObject();
    cJSON_AddNumberToObject(ranks, "world_size", W);
    cJSON_AddStringToObject(ranks, "split", o->split == SD_SPLIT_BATCH ? "batch" : "queries");
    cJSON_AddStringToObject(ranks, "exchange", sq_dist_transport(t->dist));
    cJSON_AddStringToObject(ranks, "meaning",
                            W == 1 ? "one process: batch-size and queries are the step's"
                            : o->split == SD_SPLIT_BATCH
                                ? "batch-size and queries are the step's totals; each process evaluates every query on "
                                  "its share of the batch and the losses are averaged weighted by shard size, so the run "
                                  "equals a one-process run up to the order of floating-point additions"
                                : "batch-size and queries are the step's totals; each process evaluates its share of the "
                                  "queries on the whole batch and every process applies all of them in query order, so "
                                  "the run is the one-process run bit for bit");
    cJSON_AddItemToObject(wrap, "processes", ranks);
    char *text = cJSON_Print(wrap);
    cJSON_Delete(wrap);
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", run_json, (int)getpid());
    FILE *f = text ? fopen(tmp, "w") : NULL;
    int rc = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF ? SQ_OK : SQ_FAIL;
    if (f && fclose(f) != 0) rc = SQ_FAIL;
    if (rc == SQ_OK && rename(tmp, run_json) != 0) rc = SQ_FAIL;
    free(text);
    if (rc != SQ_OK) {
        unlink(tmp);
        return sq_error_errno("cannot write %s", run_json);
    }
    return SQ_OK;
}

static int open_dataset(sd_dataset **out, const sd_train_options *o, const char *images, const char *captions, bool train) {
    sd_dataset_opts d;
    sd_dataset_opts_default(&d);
    d.folder.images_dir = images;
    d.folder.captions_file = captions[0] ? captions : NULL;
    d.folder.caption_ext = o->caption_ext;
    d.folder.recursive = o->recursive;
    d.folder.bad_images = o->skip_bad_images ? SD_BAD_IMAGE_SKIP : SD_BAD_IMAGE_FAIL;
    d.resolution = o->resolution;
    d.buckets = o->buckets;
    d.seed = o->seed;
    if (train) {
        d.crop = o->random_crop ? SD_CROP_RANDOM : SD_CROP_CENTER;
        d.random_flip = o->flip;
        d.captions.dropout = o->caption_dropout;
        d.captions.shuffle_tags = o->shuffle_tags;
        d.captions.keep_tags = o->keep_tags;
        d.batch_size = o->batch_size;
        // loss masks weight the training loss only; the validation loss stays unmasked
        d.masks.mode = o->masks[0] ? SD_MASKS_DIR : o->alpha_mask ? SD_MASKS_ALPHA : SD_MASKS_NONE;
        d.masks.dir = o->masks;
        d.masks.missing = o->masks_missing ? SD_MASK_MISSING_WARN : SD_MASK_MISSING_FAIL;
    }
    // validation: centre crops, exact captions, one image per batch, never changing
    if (sd_dataset_open(out, &d) != SQ_OK)
        return sq_error_context(!train ? "--val-images" : d.masks.mode == SD_MASKS_DIR ? "--images/--masks" : "--images");
    return SQ_OK;
}

// Preview prompts: --sample-prompts (one per line), else the first distinct
// captions of the training set, so previews show what is being taught.
static int load_prompts(sd_trainer *t) {
    const int max_default = 4;
    t->prompts = calloc(64, sizeof *t->prompts);
    if (!t->prompts) return sq_errorf("out of host memory");
    if (t->opt.sample_prompts[0]) {
        FILE *f = fopen(t->opt.sample_prompts, "r");
        if (!f) return sq_error_errno("--sample-prompts %s", t->opt.sample_prompts);
        char line[4096];
        while (fgets(line, sizeof line, f) && t->n_prompts < 64) {
            line[strcspn(line, "\r\n")] = 0;
            if (!line[0]) continue;
            if (!(t->prompts[t->n_prompts++] = strdup(line))) { fclose(f); return sq_errorf("out of host memory"); }
        }
        fclose(f);
        if (t->n_prompts == 0) return sq_errorf("--sample-prompts %s: no prompts in the file", t->opt.sample_prompts);
        return SQ_OK;
    }
    for (int i = 0; i < sd_dataset_count(t->data) && t->n_prompts < max_default; i++) {
        const char *c = sd_dataset_entry(t->data, i)->caption;
        bool seen = !c[0];
        for (int j = 0; j < t->n_prompts && !seen; j++) seen = !strcmp(t->prompts[j], c);
        if (!seen && !(t->prompts[t->n_prompts++] = strdup(c))) return sq_errorf("out of host memory");
    }
    return SQ_OK;
}

// --resolution and --buckets against the VAE and the MMDiT, before anything is
// encoded (datasets/buckets.h holds the rule).
static int check_resolution(const sd_trainer *t) {
    sd_vae_config vc;
    sd_mmdit_config mc;
    if (sd_train_vae_config(t, &vc) != SQ_OK) return SQ_FAIL;
    if (t->synthetic) sd_mmdit_config_preset(&mc, t->preset);
    else if (sd_mmdit_config_read(&mc, t->opt.model) != SQ_OK) return sq_error_context("--model");
    char origin[4300] = "";
    if (!t->synthetic) sd_mmdit_config_origin(t->opt.model, origin, sizeof origin);
    sd_size_limits lim = {sd_vae_factor(&vc), mc.patch_size, mc.pos_embed_max_size, origin[0] ? origin : NULL};
    return sd_check_resolution(t->opt.resolution, t->opt.buckets, &lim);
}

static int setup(sd_trainer *t) {
    sd_train_options *o = &t->opt;
    sq_set_num_threads(o->threads);
    if (sq_backend_select(o->device, &t->device) != SQ_OK) return SQ_FAIL;
    t->dtype = t->device == SQ_CUDA ? SQ_BF16 : SQ_F32;
    if (sd_train_parse_synthetic(o->model, &t->synthetic, &t->preset) != SQ_OK) return SQ_FAIL;
    struct stat st;
    if (t->synthetic) {
        if (!o->encoders[0])
            return sq_errorf("--model %s needs --encoders DIR for its tokenizers (a folder with tokenizer/, tokenizer_2/, "
                             "tokenizer_3/, e.g. tests/fixtures/pipeline/tiny)", o->model);
        snprintf(t->components, sizeof t->components, "%s", o->encoders);
    } else if (stat(o->model, &st) != 0) return sq_error_errno("--model %s", o->model);
    else if (o->encoders[0]) snprintf(t->components, sizeof t->components, "%s", o->encoders);
    else if (S_ISDIR(st.st_mode)) snprintf(t->components, sizeof t->components, "%s", o->model);
    else return sq_errorf("--model %s is a single file: also give --encoders PIPELINE_DIR (an SD3.5 diffusers folder with "
                          "vae/, text_encoder*/, tokenizer*/ and scheduler/)", o->model);
    if (t->synthetic) sd_scheduler_default(&t->scheduler);
    else if (sd_scheduler_load(&t->scheduler, t->components) != SQ_OK) {
        sq_log_warn("%s; using SD3.5's scheduler (shift 3.0)", sq_error_message());
        sd_scheduler_default(&t->scheduler);
    }
    t->sigma.sampling = o->timestep_sampling;
    t->sigma.logit_mean = o->logit_mean;
    t->sigma.logit_std = o->logit_std;
    t->sigma.mode_scale = o->mode_scale;
    t->sigma.shift = o->shift > 0 ? o->shift : (float)t->scheduler.shift;
    if (check_resolution(t) != SQ_OK) return SQ_FAIL;

    if (open_dataset(&t->data, o, o->images, o->captions, true) != SQ_OK) return SQ_FAIL;
    sd_epoch_plan plan;
    if (sd_dataset_epoch(t->data, 0, &plan) != SQ_OK) return SQ_FAIL;
    t->batches_per_epoch = plan.count;
    sd_epoch_plan_free(&plan);
    if (t->batches_per_epoch < 1) return sq_errorf("--images: no complete batch of %d images", o->batch_size);
    if (o->val_images[0] && open_dataset(&t->val, o, o->val_images, o->val_captions, false) != SQ_OK) return SQ_FAIL;
    if (!t->val && t->root) sq_log_warn("no --val-images: the run reports training loss only (noisy); a held-out set gives a fixed-noise validation loss");
    if (load_prompts(t) != SQ_OK) return SQ_FAIL;

    if (o->cache && o->cache_dir[0]) snprintf(t->cache_dir, sizeof t->cache_dir, "%s", o->cache_dir);
    else snprintf(t->cache_dir, sizeof t->cache_dir, "%s/%s", o->output, o->cache ? "cache" : ".cache-this-run");
    t->temp_cache = !o->cache;
    if (sd_cache_open(&t->cache, t->cache_dir) != SQ_OK) return SQ_FAIL;
    // what runs where, in order: the phases never share the device
    const char *dev = t->device == SQ_CUDA ? "the GPU" : "the CPU";
    sq_log_info("plan: 1) text encoders (CLIP-L, CLIP-G%s) on %s%s, freed; 2) VAE encoder on %s, freed; "
                "3) int4 MMDiT + fp32 scales on %s%s", o->t5 ? (o->t5_int8 ? ", T5 int8" : ", T5 bf16") : ", no T5",
                dev, o->low_vram && t->device == SQ_CUDA ? " with their blocks streamed from host memory (--low-vram)" : "",
                dev, dev, o->sample_every > 0 ? "; the VAE decoder joins it for previews" : "");
    sq_log_info("training on %d images (%d batches per epoch), %s, device %s", sd_dataset_count(t->data),
                t->batches_per_epoch, t->val ? "with a validation set" : "no validation set",
                t->device == SQ_CUDA ? "cuda (bf16)" : "cpu (fp32)");
    return SQ_OK;
}

static void teardown(sd_trainer *t) {
    if (t->cache) sd_cache_close(t->cache);
    if (t->temp_cache && t->cache_dir[0]) nftw(t->cache_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (t->data) sd_dataset_close(t->data);
    if (t->val) sd_dataset_close(t->val);
    for (int i = 0; i < t->n_prompts; i++) free(t->prompts[i]);
    free(t->prompts);
}

// What W processes can share out (checked by the launcher, before any starts, and
// by each process).
static int check_world(const sd_train_options *o, int W) {
    if (W == 1) return SQ_OK;
    if (isnan(o->lr)) return sq_errorf("--lr auto runs in one process: calibrate once without --gpus, then pass the chosen --lr");
    if (o->split == SD_SPLIT_QUERIES && o->queries < W)
        return sq_errorf("--split queries shares --queries %d out over %d processes: give at least %d queries, or --split batch",
                         o->queries, W, W);
    if (o->split == SD_SPLIT_BATCH && o->batch_size < W)
        return sq_errorf("--split batch shares --batch-size %d out over %d processes: give at least %d (--batch-size is the "
                         "step's total), or --split queries", o->batch_size, W, W);
    return SQ_OK;
}

// --gpus N / --processes N on this host: checked here, before any rank starts, so
// a run that cannot work fails with one line rather than N.
static int check_local_launch(const sd_train_options *o) {
    if (check_world(o, o->gpus > 1 ? o->gpus : o->processes) != SQ_OK) return SQ_FAIL;
    if (o->gpus > 1) {
        if (!sq_cuda_compiled())
            return sq_errorf("--gpus %d: this build of sd-qzo has no CUDA backend (CPU only); --processes %d runs CPU "
                             "processes", o->gpus, o->gpus);
        if (o->device == SQ_DEVICE_CPU) return sq_errorf("--gpus %d with --device cpu: use --processes %d for CPU processes", o->gpus, o->gpus);
        if (!sq_dist_nccl_compiled())
            return sq_errorf("--gpus %d: this build of sd-qzo has no NCCL (meson found no nccl.h and libnccl; see README, "
                             "\"Several GPUs\")", o->gpus);
        int n = sq_cuda_device_count();
        if (n < o->gpus) return sq_errorf("--gpus %d: only %d GPU%s visible", o->gpus, n, n == 1 ? " is" : "s are");
    } else if (o->device == SQ_DEVICE_CUDA) {
        return sq_errorf("--processes %d runs CPU processes: leave out --device cuda (for GPUs: --gpus %d)", o->processes, o->processes);
    }
    return SQ_OK;
}

// Joins the run as one of several processes (or as the only one): the exchange,
// this process's GPU, quiet logs on ranks other than 0, and the checks that need
// the world size.
static int join_run(sd_trainer *t) {
    sq_dist_config dc;
    bool launched;
    if (sq_dist_config_from_env(&dc, &launched) != SQ_OK) return SQ_FAIL;
    // processes start at different times (another host, a slow file system): joining
    // waits at least a minute; then --rank-timeout bounds the steps
    dc.timeout_s = t->opt.rank_timeout > 60 ? t->opt.rank_timeout : 60;
    if (launched && dc.world_size > 1 && t->opt.processes > 1) t->opt.device = SQ_DEVICE_CPU;   // our own CPU ranks
    if (sq_dist_open(&t->dist, &dc) != SQ_OK) return SQ_FAIL;
    sq_dist_set_timeout(t->dist, t->opt.rank_timeout);
    t->root = sq_dist_is_root(t->dist);
    int W = dc.world_size;
    if (W == 1) return SQ_OK;
    if (!t->root) {
        char tag[32];
        snprintf(tag, sizeof tag, "rank %d", dc.rank);
        sq_log_set_tag(tag);
        if (!getenv("SD_QZO_LOG")) sq_log_set_level(SQ_LOG_WARN);   // rank 0 tells the story
        sq_progress_set_quiet(true);
    }
    sq_cuda_set_ordinal(dc.local_rank);
    return check_world(&t->opt, W);
}

// GPU ranks exchange through NCCL (SQ_EXCHANGE=socket keeps the sockets: same
// numbers, for comparison); CPU ranks through the sockets.
static int start_exchange(sd_trainer *t) {
    if (sq_dist_world(t->dist) == 1 || t->device != SQ_CUDA) return SQ_OK;
    const char *ex = getenv("SQ_EXCHANGE");
    if (ex && !strcmp(ex, "socket")) return SQ_OK;
    if (!sq_dist_nccl_compiled())
        return sq_errorf("%d GPU processes need NCCL, and this build of sd-qzo has none (see README, \"Several GPUs\")",
                         sq_dist_world(t->dist));
    return sq_dist_use_nccl(t->dist);
}

int sq_cmd_train(int argc, char **argv) {
    sd_trainer t;
    memset(&t, 0, sizeof t);
    sd_train_options_defaults(&t.opt);
    bool help;
    if (sd_train_options_parse(&t.opt, argc, argv, &help) != SQ_OK) return SQ_FAIL;
    if (help) {
        sd_train_options_usage(stdout);
        return SQ_OK;
    }
    if (sd_train_options_validate(&t.opt) != SQ_OK) return SQ_FAIL;
    int local = t.opt.gpus > 1 ? t.opt.gpus : t.opt.processes;
    if (local > 1 && !getenv("SQ_DIST_LAUNCHED")) {
        if (getenv("WORLD_SIZE"))
            return sq_errorf("WORLD_SIZE is set: this process is one rank of a launcher's run (torchrun, srun, mpirun); "
                             "leave out --gpus/--processes, the launcher starts the processes");
        if (check_local_launch(&t.opt) != SQ_OK) return SQ_FAIL;
        return sq_dist_launch_local(local, argc, argv, t.opt.rank_timeout + 30);
    }
    stop_requested = 0;
    t.stop = &stop_requested;
    t.root = true;   // until join_run knows better
    int lock_fd = -1;
    bool created_out = false;
    int rc = join_run(&t);
    // rank 0 alone touches OUT
    sq_checkpoint_info resumed;
    if (rc == SQ_OK && t.root) {
        rc = lock_output(t.opt.output, &lock_fd, &created_out);
        if (rc == SQ_OK) remove_stale_temps(t.opt.output);
        // a resumed run with other --train-blocks / --train-layers / --ema gets that line
        // rather than check_output's "the settings differ" (they are not in the
        // fingerprint: the checkpoint records them); an unreadable checkpoint is reported below
        if (rc == SQ_OK && t.opt.resume[0]) {
            if (sq_checkpoint_read_file(t.opt.resume, &resumed) == SQ_OK) rc = sd_train_check_resume(&t.opt, &resumed);
            else sq_error_clear();
        }
        if (rc == SQ_OK) rc = check_output(&t);
    }
    // the others touch nothing (not even the cache, which may live in OUT) before
    // rank 0 has checked OUT: a refused run then stops them all at once
    if (rc == SQ_OK && sq_dist_world(t.dist) > 1) rc = sq_dist_barrier_within(t.dist, "output checked", SD_PHASE_TIMEOUT_S);
    int64_t first_step = 0;
    // --resume: the checkpoint (metadata and scale values) is checked before anything
    // is written into OUT; the encode phase only needs the steps still to run
    if (rc == SQ_OK && t.opt.resume[0] && sq_checkpoint_read_step(t.opt.resume, &first_step) != SQ_OK)
        rc = sq_error_context("--resume");
    if (rc == SQ_OK) rc = setup(&t);
    if (rc == SQ_OK) rc = start_exchange(&t);
    if (rc == SQ_OK && sq_dist_world(t.dist) > 1) {
        rc = sq_dist_barrier_within(t.dist, "start", SD_PHASE_TIMEOUT_S);   // every process is ready before run.json says the run started
        if (rc == SQ_OK && t.root)
            sq_log_info("%d processes, split: %s, exchange over %s", sq_dist_world(t.dist),
                        t.opt.split == SD_SPLIT_BATCH ? "batch" : "queries", sq_dist_transport(t.dist));
    }
    if (rc == SQ_OK && t.root) rc = write_run_json(&t);
    bool started = rc == SQ_OK;
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    sd_train_timing_start(&t.timing, first_step);
    if (rc == SQ_OK) {
        rc = sd_train_encode(&t, first_step);
        sd_train_timing_add(&t.timing, SD_PHASE_ENCODE, sq_time_now() - t.timing.t_start);
    }
    if (rc == SQ_OK) rc = sd_train_loop(&t);
    // the last collective: no process leaves (and rank 0 removes no --no-cache
    // folder) while another still works
    if (rc == SQ_OK && sq_dist_world(t.dist) > 1) rc = sq_dist_barrier_within(t.dist, "end", SD_PHASE_TIMEOUT_S);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (rc != SQ_OK) sq_dist_abort(t.dist, sq_error_message());
    if (rc == SQ_OK && t.root) printf("done: %s/checkpoint.safetensors, report %s/report.html\n", t.opt.output, t.opt.output);
    if (!t.root) t.temp_cache = false;   // rank 0's to remove
    teardown(&t);
    if (t.root) unlock_output(t.opt.output, lock_fd, created_out, started);
    if (rc != SQ_OK && !t.root) sq_error_context("rank %d", sq_dist_rank(t.dist));
    sq_dist_close(t.dist);
    return rc;
}
