#include "encoding.hpp"

#include <array>
#include <cstring>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

namespace a0gw {

namespace {

constexpr char kBase64Alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// Maps a byte to its 6-bit value, or 0xFF when it is not in the alphabet.
constexpr std::array<uint8_t, 256> make_base64_table() {
  std::array<uint8_t, 256> table{};
  for (auto& v : table) v = 0xFF;
  for (uint8_t i = 0; i < 64; ++i) table[static_cast<uint8_t>(kBase64Alphabet[i])] = i;
  return table;
}
constexpr auto kBase64Table = make_base64_table();

// The two characters of every 12-bit value, so three bytes take two lookups.
constexpr std::array<char, 8192> make_base64_pairs() {
  std::array<char, 8192> pairs{};
  for (size_t v = 0; v < 4096; ++v) {
    pairs[2 * v] = kBase64Alphabet[v >> 6];
    pairs[2 * v + 1] = kBase64Alphabet[v & 63];
  }
  return pairs;
}
constexpr auto kBase64Pairs = make_base64_pairs();

// Two-byte escapes JSON allows for control characters; 0 means use \u00XX.
constexpr std::array<char, 32> make_short_escapes() {
  std::array<char, 32> table{};
  table['\b'] = 'b';
  table['\f'] = 'f';
  table['\n'] = 'n';
  table['\r'] = 'r';
  table['\t'] = 't';
  return table;
}
constexpr auto kShortEscapes = make_short_escapes();

// Length of the well-formed UTF-8 sequence starting at in[i], or 0.
size_t utf8_sequence_length(const uint8_t* p, size_t remaining) {
  uint8_t b0 = p[0];
  if (b0 < 0x80) return 1;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    return (remaining >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
  }
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (remaining < 3) return 0;
    uint8_t lo = (b0 == 0xE0) ? 0xA0 : 0x80;  // No overlong forms.
    uint8_t hi = (b0 == 0xED) ? 0x9F : 0xBF;  // No surrogates.
    if (p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80) return 0;
    return 3;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    if (remaining < 4) return 0;
    uint8_t lo = (b0 == 0xF0) ? 0x90 : 0x80;
    uint8_t hi = (b0 == 0xF4) ? 0x8F : 0xBF;  // Nothing above U+10FFFF.
    if (p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
    return 4;
  }
  return 0;
}

// True when none of the 8 bytes at p needs attention from the JSON escaper
// (no byte < 0x20, no '"', no '\\', no byte >= 0x80).
inline bool plain_ascii_word(const uint8_t* p) {
  uint64_t w;
  std::memcpy(&w, p, 8);
  constexpr uint64_t kOnes = 0x0101010101010101ULL;
  constexpr uint64_t kHigh = 0x8080808080808080ULL;
  uint64_t below_space = (w - kOnes * 0x20) & ~w;
  uint64_t x = w ^ (kOnes * '"');
  uint64_t quote = (x - kOnes) & ~x;
  uint64_t y = w ^ (kOnes * '\\');
  uint64_t backslash = (y - kOnes) & ~y;
  return ((below_space | quote | backslash | w) & kHigh) == 0;
}

// Length of the run at the start of p[0, n) that the JSON escaper can copy
// as it is: ASCII, no control character, no '"' and no '\\'.
size_t plain_ascii_prefix(const uint8_t* p, size_t n) {
  size_t i = 0;
#ifdef __SSE2__
  // Sixteen bytes at a time.  A signed compare with 0x20 catches control
  // characters and, being negative, every byte >= 0x80.
  const __m128i space = _mm_set1_epi8(0x20);
  const __m128i quote = _mm_set1_epi8('"');
  const __m128i backslash = _mm_set1_epi8('\\');
  for (; i + 16 <= n; i += 16) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
    __m128i special = _mm_or_si128(_mm_cmplt_epi8(v, space),
                                   _mm_or_si128(_mm_cmpeq_epi8(v, quote),
                                                _mm_cmpeq_epi8(v, backslash)));
    int mask = _mm_movemask_epi8(special);
    if (mask != 0) return i + static_cast<size_t>(__builtin_ctz(static_cast<unsigned>(mask)));
  }
#endif
  for (; i + 8 <= n && plain_ascii_word(p + i); i += 8) {
  }
  return i;
}

}  // namespace

void base64_encode(std::string_view in, std::string& out) {
  size_t start = out.size();
  out.resize(start + (in.size() + 2) / 3 * 4);
  char* dst = out.data() + start;
  auto* src = reinterpret_cast<const uint8_t*>(in.data());
  size_t n = in.size();
  size_t i = 0;

  // Whole groups of three bytes, as two 12-bit halves.
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t(src[i]) << 16) | (uint32_t(src[i + 1]) << 8) | src[i + 2];
    std::memcpy(dst, &kBase64Pairs[2 * (v >> 12)], 2);
    std::memcpy(dst + 2, &kBase64Pairs[2 * (v & 0xFFF)], 2);
    dst += 4;
  }

  // The tail, padded with '='.
  if (i < n) {
    uint32_t v = uint32_t(src[i]) << 16;
    if (i + 1 < n) v |= uint32_t(src[i + 1]) << 8;
    *dst++ = kBase64Alphabet[(v >> 18) & 63];
    *dst++ = kBase64Alphabet[(v >> 12) & 63];
    *dst++ = (i + 1 < n) ? kBase64Alphabet[(v >> 6) & 63] : '=';
    *dst++ = '=';
  }
}

std::optional<size_t> base64_decode(std::string_view in, std::string& out) {
  size_t n = in.size();
  if (n % 4 != 0) return n - n % 4;
  auto* src = reinterpret_cast<const uint8_t*>(in.data());

  // Padding may only close the last group.
  size_t pad = 0;
  if (n >= 1 && src[n - 1] == '=') ++pad;
  if (n >= 2 && src[n - 2] == '=') ++pad;
  size_t start = out.size();
  out.resize(start + n / 4 * 3 - pad);
  auto* dst = reinterpret_cast<uint8_t*>(out.data() + start);

  for (size_t i = 0; i < n; i += 4) {
    bool last = (i + 4 == n);
    uint8_t c[4];
    for (size_t k = 0; k < 4; ++k) {
      bool padding_slot = last && k >= 4 - pad;
      if (padding_slot) {
        c[k] = 0;
        continue;
      }
      c[k] = kBase64Table[src[i + k]];
      if (c[k] == 0xFF) return i + k;
    }
    uint32_t v = (uint32_t(c[0]) << 18) | (uint32_t(c[1]) << 12) | (uint32_t(c[2]) << 6) | c[3];
    *dst++ = uint8_t(v >> 16);
    if (!(last && pad == 2)) *dst++ = uint8_t(v >> 8);
    if (!(last && pad >= 1)) *dst++ = uint8_t(v);
  }
  return std::nullopt;
}

std::optional<size_t> utf8_invalid_offset(std::string_view in) {
  auto* p = reinterpret_cast<const uint8_t*>(in.data());
  size_t n = in.size();
  size_t i = 0;
  while (i < n) {
    // Skip ASCII eight bytes at a time.
    if (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      if ((w & 0x8080808080808080ULL) == 0) {
        i += 8;
        continue;
      }
    }
    size_t len = utf8_sequence_length(p + i, n - i);
    if (len == 0) return i;
    i += len;
  }
  return std::nullopt;
}

std::optional<size_t> json_escape(std::string_view in, std::string& out) {
  auto* p = reinterpret_cast<const uint8_t*>(in.data());
  size_t n = in.size();
  size_t i = 0;
  size_t run_start = 0;  // Start of bytes not yet copied to `out`.
  while (i < n) {
    i += plain_ascii_prefix(p + i, n - i);
    if (i >= n) break;
    uint8_t b = p[i];
    if (b >= 0x80) {
      size_t len = utf8_sequence_length(p + i, n - i);
      if (len == 0) return i;
      i += len;
      continue;
    }
    if (b >= 0x20 && b != '"' && b != '\\') {
      ++i;
      continue;
    }

    // Flush the plain run, then write the escape.
    out.append(in.data() + run_start, i - run_start);
    out.push_back('\\');
    if (b == '"' || b == '\\') {
      out.push_back(char(b));
    } else if (kShortEscapes[b]) {
      out.push_back(kShortEscapes[b]);
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      char esc[5] = {'u', '0', '0', kHex[b >> 4], kHex[b & 15]};
      out.append(esc, 5);
    }
    ++i;
    run_start = i;
  }
  out.append(in.data() + run_start, n - run_start);
  return std::nullopt;
}

size_t ws_header_size(size_t payload_len) {
  if (payload_len < 126) return 2;
  if (payload_len < 65536) return 4;
  return 10;
}

void ws_write_text_header(size_t payload_len, char* dst) {
  auto* d = reinterpret_cast<uint8_t*>(dst);
  d[0] = 0x81;  // FIN and opcode 1 (text).
  if (payload_len < 126) {
    d[1] = uint8_t(payload_len);
  } else if (payload_len < 65536) {
    d[1] = 126;
    d[2] = uint8_t(payload_len >> 8);
    d[3] = uint8_t(payload_len);
  } else {
    d[1] = 127;
    for (int k = 0; k < 8; ++k) d[2 + k] = uint8_t(uint64_t(payload_len) >> (56 - 8 * k));
  }
}

}  // namespace a0gw
