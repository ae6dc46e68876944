/* token.h — the daemon's token (--token-file): one line of printable characters, at least
 * 16 of them, in a file only its owner can read (a token others can read protects
 * nothing). Read from the descriptor whose mode was checked, never the path twice. */
#ifndef MAPSAGE_TOKEN_H
#define MAPSAGE_TOKEN_H

#include <stddef.h>

/* Reads the token at `path` into *token (the caller frees it). Returns 0, or a negative
 * errno with `error` saying why, without the path: -EPERM for a file others can read,
 * -EINVAL for a token that is empty, short, or not one printable line, -EFBIG past 4 KiB. */
int token_read(const char *path, char **token, char *error, size_t error_size);

#endif
