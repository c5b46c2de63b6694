// Byte-level encodings used on the hot path: base64, UTF-8 checking, JSON
// string escaping and WebSocket frame headers.  Pure functions; no Python and
// no AlephZero here, so every function is safe to call without the GIL.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace a0gw {

// Appends the standard base64 (RFC 4648 §4, padded) of `in` to `out`.
void base64_encode(std::string_view in, std::string& out);

// Decodes padded standard base64.  On failure returns the byte offset of the
// first character that cannot be part of valid base64; `out` is then garbage.
std::optional<size_t> base64_decode(std::string_view in, std::string& out);

// Returns the offset of the first byte that is not part of well-formed UTF-8
// (RFC 3629 §4), or nullopt when all of `in` is well formed.
std::optional<size_t> utf8_invalid_offset(std::string_view in);

// Appends `in` as the inside of a JSON string (RFC 8259 §7), without quotes.
// Returns the offset of the first invalid UTF-8 byte instead of appending
// everything when `in` is not UTF-8.
std::optional<size_t> json_escape(std::string_view in, std::string& out);

// Size of the header of an unmasked server frame carrying `payload_len` bytes.
size_t ws_header_size(size_t payload_len);

// Writes the header of a final, unmasked text frame (RFC 6455 §5.2) of
// `payload_len` bytes at `dst`, which must have ws_header_size() bytes.
void ws_write_text_header(size_t payload_len, char* dst);

}  // namespace a0gw
