// mmdit/forward_graph.c: see mmdit/forward_graph.h.
#include "mmdit/forward_graph.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "kernels/graph.h"
#include "kernels/ops.h"
#include "mmdit/blocks.h"

// Kinds of pass kept at once: training needs one (its + and - passes share a
// graph), a validation pass another, the EMA's validation a third.
#define GRAPH_SLOTS 4

// What a recorded pass depends on; compared bytewise (built from zero).
typedef struct {
    const void *arena_base;
    size_t arena_size, arena_mark;   // an arena made again at the same place but smaller is another
    int64_t latent[4], context[3], pooled[2];
    int perturbed;
    uint64_t weights;   // fingerprint of the model struct and its blocks: every buffer pointer, frozen flag, index
} pass_key;

enum { SLOT_FREE, SLOT_NEW, SLOT_WARM, SLOT_RECORDED, SLOT_FAILED };

typedef struct {
    int state;
    pass_key key;
    unsigned long generation;   // kernels/graph.h: the backend's memory when warmed or recorded
    unsigned long last_use;
    sq_graph *graph;
    sq_tensor latent, feat, context, pooled, out;   // the recorded pass's own inputs and output
} slot;

struct sd_forward_graphs {
    slot s[GRAPH_SLOTS];
    unsigned long clock;
    long recorded, replayed;
};

void sd_forward_graph_counts(const sd_mmdit *m, long *recorded, long *replayed) {
    *recorded = m->graphs ? m->graphs->recorded : 0;
    *replayed = m->graphs ? m->graphs->replayed : 0;
}

sd_forward_graphs *sd_forward_graphs_new(void) { return calloc(1, sizeof(sd_forward_graphs)); }

static void slot_clear(slot *s) {
    sq_graph_free(s->graph);
    sq_tensor *ts[] = {&s->latent, &s->feat, &s->context, &s->pooled, &s->out};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) sq_tensor_free(ts[i]);
    memset(s, 0, sizeof *s);
}

void sd_forward_graphs_free(sd_forward_graphs *g) {
    if (!g) return;
    for (int i = 0; i < GRAPH_SLOTS; i++) slot_clear(&g->s[i]);
    free(g);
}

static uint64_t mix(uint64_t h, const void *bytes, size_t n) {
    const unsigned char *b = bytes;
    for (size_t i = 0; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    for (size_t i = n & ~(size_t)7; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

// The weights a pass reads are named by the model's tensors: swapping the EMA in
// (tensor handles exchanged), quantising, freezing a layer all change these bytes.
// About 0.3 MB for SD3.5 Large: tens of microseconds.
static uint64_t weights_fingerprint(const sd_mmdit *m) {
    uint64_t h = mix(0xcbf29ce484222325ull, m, sizeof *m);
    return mix(h, m->blocks, (size_t)m->cfg.num_layers * sizeof *m->blocks);
}

static pass_key key_of(const sd_forward_pass *f) {
    pass_key k;
    memset(&k, 0, sizeof k);
    k.arena_base = f->a->base;
    k.arena_size = f->a->size;
    k.arena_mark = sq_arena_mark(f->a);
    memcpy(k.latent, f->latent->shape, sizeof k.latent);
    memcpy(k.context, f->context->shape, sizeof k.context);
    memcpy(k.pooled, f->pooled->shape, sizeof k.pooled);
    k.perturbed = f->p && f->p->sign != 0;
    k.weights = weights_fingerprint(f->m);
    return k;
}

// The slot of this kind of pass, or a new one (the least recently used is dropped).
static slot *slot_for(sd_forward_graphs *g, const pass_key *k) {
    for (int i = 0; i < GRAPH_SLOTS; i++)
        if (g->s[i].state != SLOT_FREE && !memcmp(&g->s[i].key, k, sizeof *k)) return &g->s[i];
    slot *victim = &g->s[0];
    for (int i = 1; i < GRAPH_SLOTS && victim->state != SLOT_FREE; i++)
        if (g->s[i].state == SLOT_FREE || g->s[i].last_use < victim->last_use) victim = &g->s[i];
    slot_clear(victim);
    victim->state = SLOT_NEW;
    victim->key = *k;
    return victim;
}

static int record(slot *s, const sd_forward_pass *f, sd_forward_run_fn run) {
    const sd_mmdit *m = f->m;
    if (!s->latent.data &&
        (sq_tensor_alloc(&s->latent, m->dtype, m->device, 4, f->latent->shape) ||
         sq_tensor_alloc(&s->feat, m->dtype, m->device, 2, (int64_t[]){f->latent->shape[0], 256}) ||
         sq_tensor_alloc(&s->context, m->dtype, m->device, 3, f->context->shape) ||
         sq_tensor_alloc(&s->pooled, m->dtype, m->device, 2, f->pooled->shape) ||
         sq_tensor_alloc(&s->out, m->dtype, m->device, 4, f->out->shape)))
        return SQ_FAIL;
    sd_forward_pass staged = {m, f->a, &s->latent, NULL, &s->context, &s->pooled, f->p, &s->out};
    if (sq_graph_begin(m->device) != SQ_OK) return SQ_FAIL;
    int rc = run(&staged, &s->feat);
    sq_graph *g = sq_graph_end(m->device);
    if (rc != SQ_OK || !g) {
        sq_graph_free(g);
        return SQ_FAIL;
    }
    s->graph = g;
    s->state = SLOT_RECORDED;
    s->generation = sq_graph_generation();
    return SQ_OK;
}

static int replay(slot *s, const sd_forward_pass *f) {
    sq_copy(&s->latent, f->latent);
    sq_copy(&s->context, f->context);
    sq_copy(&s->pooled, f->pooled);
    if (sd_time_features_upload(f->timestep, &s->feat) != SQ_OK) return SQ_FAIL;
    sq_graph_launch(s->graph, f->p);
    sq_copy(f->out, &s->out);
    return SQ_OK;
}

int sd_forward_graph_run(const sd_forward_pass *f, sd_forward_run_fn run) {
    sd_forward_graphs *g = f->m->graphs;
    if (!g) return run(f, NULL);
    pass_key k = key_of(f);
    slot *s = slot_for(g, &k);
    s->last_use = ++g->clock;
    if (s->state == SLOT_FAILED) return run(f, NULL);
    if (s->state != SLOT_NEW && s->generation != sq_graph_generation()) {
        // buffers the graph points into were freed (kernels/graph.h): warm up again
        sq_graph_free(s->graph);
        s->graph = NULL;
        s->state = SLOT_NEW;
    }
    if (s->state == SLOT_NEW) {
        int rc = run(f, NULL);
        if (rc == SQ_OK) {
            s->state = SLOT_WARM;
            s->generation = sq_graph_generation();
        }
        return rc;
    }
    if (s->state == SLOT_WARM) {
        if (record(s, f, run) != SQ_OK) {
            sq_log_warn("CUDA graph: %s; this kind of forward pass runs op by op from now on", sq_error_message());
            s->state = SLOT_FAILED;
            return run(f, NULL);
        }
        g->recorded++;
    }
    g->replayed++;
    return replay(s, f);
}
