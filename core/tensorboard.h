// core/tensorboard.h: TensorBoard event files, written without TensorFlow or a
// protobuf library. An event file is a sequence of TFRecord records
//   uint64 length | uint32 masked CRC32C(length bytes) | data | uint32 masked CRC32C(data)
// (all little-endian), each holding one serialised tensorboard.Event protobuf; the
// first record is the file_version "brain.Event:2" event. This module encodes the
// few messages a training run needs (scalars as Summary.Value.simple_value, PNG
// images as Summary.Value.image, SessionLog START) byte for byte as the tensorboard
// package's EventFileWriter writes them: proto3 fields in field-number order, fields
// at their default value left out (tests/unit/test_tensorboard.c compares with a
// fixture that package wrote). Every record is flushed as it is written, so a crash
// loses at most the record in flight; TensorBoard stops reading a file at a torn one.
//
// The message fields (tensorboard/compat/proto/event.proto and summary.proto):
//   Event: wall_time 1 (double), step 2 (int64), file_version 3 (string),
//          summary 5 (Summary), session_log 7 (SessionLog), source_metadata 10
//   Summary: value 1 (repeated Value); Value: tag 1, simple_value 2 (float), image 4
//   Summary.Image: height 1, width 2, colorspace 3 (int32), encoded_image_string 4
//   SessionLog: status 1 (enum, START = 1); SourceMetadata: writer 1 (string)
#ifndef SQ_TENSORBOARD_H
#define SQ_TENSORBOARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord uses; crc
// starts at 0 and may be chained over pieces.
uint32_t sq_crc32c(uint32_t crc, const void *data, size_t n);
// TFRecord's masking of a stored CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
uint32_t sq_crc32c_mask(uint32_t crc);

// A growing protobuf encoding. Appends never fail: running out of memory sets `oom`
// and later appends do nothing, so a message is built first and checked once.
typedef struct {
    uint8_t *data;
    size_t len, cap;
    bool oom;
} sq_pb;

void sq_pb_free(sq_pb *b);
void sq_pb_varint(sq_pb *b, uint64_t v);                      // a bare base-128 varint
void sq_pb_uint(sq_pb *b, int field, uint64_t v);             // wire type 0 (int32/int64/enum; 0 omitted)
void sq_pb_double(sq_pb *b, int field, double v);             // wire type 1 (+0.0 omitted)
void sq_pb_float(sq_pb *b, int field, float v);               // wire type 5, always written (a oneof member)
void sq_pb_bytes(sq_pb *b, int field, const void *p, size_t n);   // wire type 2, always written
void sq_pb_string(sq_pb *b, int field, const char *s);        // wire type 2 ("" omitted)

// The Event messages, into `out` (appended).
void sq_tb_event_file_version(sq_pb *out, double wall_time, const char *writer);
void sq_tb_event_scalar(sq_pb *out, double wall_time, int64_t step, const char *tag, float value);
// png: the PNG file's bytes; colorspace 3 (RGB).
void sq_tb_event_image(sq_pb *out, double wall_time, int64_t step, const char *tag, int width, int height,
                       const uint8_t *png, size_t png_len);
void sq_tb_event_session_start(sq_pb *out, double wall_time, int64_t step);
// One TFRecord around data (appended to out).
void sq_tb_record(sq_pb *out, const uint8_t *data, size_t n);

typedef struct {
    FILE *f;
    char path[1200];
} sq_tb_writer;

// Creates dir/events.out.tfevents.<10-digit seconds>.<host>.<pid>.0 and writes the
// file_version event. TensorBoard reads a folder's event files in name order, so
// the time in the name is made later than any event file already in dir (a resumed
// run's file then always follows the earlier ones). writer: SourceMetadata.writer.
int sq_tb_open(sq_tb_writer *w, const char *dir, const char *writer);
// The same into a given path with a given wall time (tests, fixtures).
int sq_tb_open_path(sq_tb_writer *w, const char *path, double wall_time, const char *writer);
// Each writes one record and flushes it. Errors name the file.
int sq_tb_write_event(sq_tb_writer *w, const sq_pb *event);
int sq_tb_scalar(sq_tb_writer *w, double wall_time, int64_t step, const char *tag, float value);
int sq_tb_image(sq_tb_writer *w, double wall_time, int64_t step, const char *tag, int width, int height,
                const uint8_t *png, size_t png_len);
int sq_tb_session_start(sq_tb_writer *w, double wall_time, int64_t step);
void sq_tb_close(sq_tb_writer *w);

// Seconds since the Unix epoch (the wall_time of events).
double sq_tb_wall_time(void);

#endif
