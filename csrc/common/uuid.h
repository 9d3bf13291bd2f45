/* Event ids: 16-byte UUIDs, generated as version 7 (time-ordered) when the
 * caller gives none, and their 36-character text form. */
#ifndef CHRONICLE_UUID_H
#define CHRONICLE_UUID_H

#include <stddef.h>
#pragma GCC visibility push(hidden)   /* internal to the module (common/export.h) */

#define UUID_TEXT_LEN 36

/* Fills out[16] with a fresh UUIDv7; returns 0, or -1 when no randomness was available. */
int uuid_v7(unsigned char out[16]);
/* The same with the clock already read (ms since the epoch, uuid_now_ms):
 * one append reads it once for all its events. Ids stay increasing within a
 * process whatever `ms` is. */
int uuid_v7_at(unsigned char out[16], unsigned long long ms);
unsigned long long uuid_now_ms(void);
/* Parses the canonical 8-4-4-4-12 hex form (either case); returns 0 or -1. */
int uuid_parse(const char *s, size_t len, unsigned char out[16]);
/* Writes the lowercase canonical form (36 chars, no NUL). */
void uuid_format(const unsigned char id[16], char out[UUID_TEXT_LEN]);

#pragma GCC visibility pop
#endif
