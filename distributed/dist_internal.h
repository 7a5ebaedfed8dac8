// distributed/dist_internal.h: what exchange.c (sockets) and nccl.c share. Not for other folders.
#ifndef SQ_DIST_INTERNAL_H
#define SQ_DIST_INTERNAL_H

#include "distributed/exchange.h"

struct sq_dist_nccl;

struct sq_dist {
    sq_dist_config cfg;
    int *fds;                  // rank 0: fds[r] is rank r's connection (fds[0] = -1); others: fds[0] is the hub
    uint32_t seq;              // collectives so far: every rank must be at the same one
    bool broken;               // an error happened: every later call fails
    char broken_msg[512];
    struct sq_dist_nccl *nccl; // NULL: all-gathers on the sockets
    int (*poll_peers)(sq_dist *d);   // sq_dist_poll_peers, for nccl.c's waits (set by sq_dist_open)
};

// Checks the sockets without waiting: a rank that closed its connection or sent an
// abort makes this fail with the message naming it (used while NCCL waits).
int sq_dist_poll_peers(sq_dist *d);
// Marks the exchange broken with the current error message, tells the other ranks
// (rank 0 relays it), and returns SQ_FAIL.
int sq_dist_fail(sq_dist *d);

// distributed/nccl.c, driven by exchange.c: rank 0 makes the id (SQ_DIST_NCCL_ID_BYTES),
// exchange.c broadcasts it, every rank opens the communicator with it. A failure is
// returned (exchange.c marks the exchange broken); the waits watch d->poll_peers.
#define SQ_DIST_NCCL_ID_BYTES 128
int sq_dist_nccl_unique_id(void *id, size_t size);
int sq_dist_nccl_open(sq_dist *d, const void *id);
int sq_dist_nccl_allgather(sq_dist *d, const void *mine, size_t bytes, void *all, const char *what);
void sq_dist_nccl_close(sq_dist *d, bool abort);

#endif
