/* Event record layout and checksum (see record.h). */
#include <string.h>
#include <xxhash.h>
#include "bytes.h"
#include "record.h"

uint64_t record_checksum(const unsigned char *rec, size_t len) {
  return XXH3_64bits(rec + 8, len - 8);
}

void record_seal(unsigned char *rec, size_t len, const record_view *v) {
  rec[8] = RECORD_FORMAT;
  rec[9] = 0;
  put_u16be(rec + 10, (uint16_t)v->stream_len);
  put_u16be(rec + 12, (uint16_t)v->type_len);
  put_u16be(rec + 14, (uint16_t)v->schema);
  put_u64be(rec + 16, v->version);
  put_u64be(rec + 24, (uint64_t)v->time);
  memcpy(rec + 32, v->id, 16);
  put_u32be(rec + 48, (uint32_t)v->meta_len);
  put_u64be(rec, record_checksum(rec, len));
}

int record_parse(const unsigned char *rec, size_t len, record_view *v, const char **why) {
  if (len < RECORD_HEADER) { *why = "record shorter than its header"; return -1; }
  if (get_u64be(rec) != record_checksum(rec, len)) { *why = "record checksum mismatch"; return -1; }
  return record_layout(rec, len, v, why);
}

int record_layout(const unsigned char *rec, size_t len, record_view *v, const char **why) {
  if (len < RECORD_HEADER) { *why = "record shorter than its header"; return -1; }
  if (rec[8] != RECORD_FORMAT) { *why = "unknown record format"; return -1; }
  v->stream_len = get_u16be(rec + 10);
  v->type_len = get_u16be(rec + 12);
  v->schema = get_u16be(rec + 14);
  v->version = get_u64be(rec + 16);
  v->time = (int64_t)get_u64be(rec + 24);
  v->id = rec + 32;
  v->meta_len = get_u32be(rec + 48);
  size_t body = len - RECORD_HEADER;
  if (v->stream_len > body || v->type_len > body - v->stream_len ||
      v->meta_len > body - v->stream_len - v->type_len) {
    *why = "record fields overrun the record";
    return -1;
  }
  v->stream = rec + RECORD_HEADER;
  v->type = v->stream + v->stream_len;
  v->meta = v->type + v->type_len;
  v->data = v->meta + v->meta_len;
  v->data_len = body - v->stream_len - v->type_len - v->meta_len;
  return 0;
}
