// kernels/streams.h: two independent halves of a forward pass at once. The MMDiT's
// context stream (333 text tokens) and image stream meet only in the joint
// attention; between meetings the context half's small GEMMs and norms leave most
// of a GPU idle, so on CUDA they run on a side stream beside the image half's.
//
//   sq_stream_fork(dev);            the side stream starts after all work so far
//   sq_stream_side(dev, true);      ops from here on are queued on the side stream
//   ... context-half ops ...
//   sq_stream_side(dev, false);     back to the default stream
//   ... image-half ops ...
//   sq_stream_join(dev);            the default stream waits for the side stream
//
// Memory the two halves write between a fork and its join must be disjoint, and
// scratch freed on one side must not be reused on the other before the join: the
// caller gives the side half its own arena. On the CPU these calls do nothing (ops
// run in call order). SQ_SIDE_STREAM=0 in the environment keeps everything on the default stream.
#ifndef SQ_STREAMS_H
#define SQ_STREAMS_H

#include <stdbool.h>

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

void sq_stream_fork(sq_device device);
void sq_stream_side(sq_device device, bool on);
void sq_stream_join(sq_device device);
// True between sq_stream_side(dev, true) and (dev, false) on CUDA.
bool sq_stream_on_side(void);
// Turns the side stream on or off for this process (tests; default on unless SQ_SIDE_STREAM=0).
void sq_streams_set_enabled(bool on);

#ifdef __cplusplus
}
#endif

#endif
