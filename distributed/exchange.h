// distributed/exchange.h: what the processes of a multi-process run say to each other.
// QZO needs only a few numbers from each process per step (docs/QZO.md, "Several
// GPUs"), so the whole interface is small collectives over small buffers:
//   - all-gather of one fixed-size record per rank (rank order),
//   - broadcast of bytes from rank 0,
//   - barrier,
//   - abort: this rank stops with an error and tells the others why.
// Every call waits at most the run's timeout: a rank that died (its connection
// closed) is reported at once, a rank that hangs after `timeout_s`, and the error
// names the rank. After an error the exchange is unusable (close it).
//
// Transports, behind this one interface:
//   - one process: every call is a copy (world size 1);
//   - TCP sockets with rank 0 as the hub (MASTER_ADDR:MASTER_PORT): the rendezvous,
//     the control channel (barriers, broadcasts, aborts, dead-rank detection) and,
//     on the CPU, the all-gathers too. One hub round trip is tens of microseconds
//     against a step of at least tens of milliseconds;
//   - NCCL (GPU runs, builds with SQ_HAVE_NCCL): the all-gathers of the steps go
//     through an NCCL communicator on the GPUs; its unique id travels from rank 0
//     over the socket rendezvous, and while an NCCL call is waiting the socket is
//     watched, so a rank that dies is still named at once (distributed/nccl.c).
// All-reduces are all-gathers summed by the caller in rank order: the sum is then
// the same bits on every rank and for every transport.
#ifndef SQ_DIST_EXCHANGE_H
#define SQ_DIST_EXCHANGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sq_dist sq_dist;

typedef struct {
    int rank, world_size;      // 0 ≤ rank < world_size
    int local_rank;            // the GPU of this process on its host
    char master_addr[256];     // rank 0's host (rank 0 listens on every interface)
    int master_port;
    int listen_fd;             // ≥ 0: rank 0 uses this already bound, listening socket (the local launcher's)
    double timeout_s;          // longest wait for another rank, start-up included
} sq_dist_config;

// The variables launchers set (torchrun, srun wrappers, mpirun -x): RANK,
// WORLD_SIZE, LOCAL_RANK (default: RANK), MASTER_ADDR (default 127.0.0.1),
// MASTER_PORT (under torchrun, whose agent serves its own store there, MASTER_PORT
// + 1; SQ_DIST_PORT overrides either), and SQ_DIST_LISTEN_FD from sd-qzo's own launcher. *present is false
// when WORLD_SIZE is not set (the process is not one rank of many). A value that is
// set but malformed is an error naming the variable.
int sq_dist_config_from_env(sq_dist_config *c, bool *present);

// Joins the run: world size 1 needs nothing; otherwise rank 0 accepts the others'
// connections and every rank returns once all have joined (or fails after
// timeout_s naming the ranks that did not come).
int sq_dist_open(sq_dist **out, const sq_dist_config *c);
void sq_dist_close(sq_dist *d);

// The timeout of the calls from now on (sq_dist_open used the config's).
void sq_dist_set_timeout(sq_dist *d, double timeout_s);

int sq_dist_rank(const sq_dist *d);
int sq_dist_world(const sq_dist *d);
int sq_dist_local_rank(const sq_dist *d);
bool sq_dist_is_root(const sq_dist *d);   // rank 0: the one that writes files

// all: world × bytes, filled with every rank's `mine` in rank order. `what` names
// the collective in errors ("step 12", "encode done"); every rank must make the same
// sequence of calls, and a rank found at a different call is an error naming both.
int sq_dist_allgather(sq_dist *d, const void *mine, size_t bytes, void *all, const char *what);
// buf (bytes, the same size on every rank) takes rank 0's contents.
int sq_dist_broadcast(sq_dist *d, void *buf, size_t bytes, const char *what);
int sq_dist_barrier(sq_dist *d, const char *what);
// A barrier after a phase whose length differs between ranks by more than the
// timeout may allow (encoding a data set, quantising a model): waits up to
// timeout_s instead (a rank that dies is still seen at once).
int sq_dist_barrier_within(sq_dist *d, const char *what, double timeout_s);
// This rank is stopping with `message`: the others' next (or current) call fails
// with "rank R stopped: message". Never fails; a no-op for world size 1.
void sq_dist_abort(sq_dist *d, const char *message);

// Puts the all-gathers on NCCL from now on (the current CUDA device; GPU runs).
// SQ_FAIL with a message when the build has no NCCL or NCCL fails to start.
int sq_dist_use_nccl(sq_dist *d);
bool sq_dist_nccl_compiled(void);
// "single", "socket" or "nccl": what carries the all-gathers (for the log).
const char *sq_dist_transport(const sq_dist *d);

// 64-bit FNV-1a of bytes, continuing from h (start with SQ_DIST_HASH_INIT): the
// fingerprint of the scales that ranks compare to prove they hold the same bits.
#define SQ_DIST_HASH_INIT 0xcbf29ce484222325ull
uint64_t sq_dist_hash(uint64_t h, const void *data, size_t bytes);

#endif
