#include "fast_pub.hpp"

#include <yyjson.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <optional>

namespace a0gw {

namespace {

constexpr std::string_view kRequestLine = "POST /api/pub HTTP/1.1\r\n";

// Must stay byte for byte what a0gw.http sends for a successful publish;
// `cors` is the Access-Control-Allow-Origin value, empty for none.
void append_success(std::string& out, std::string_view cors) {
  out.append(
      "HTTP/1.1 200 OK\r\n"
      "server: a0gw\r\n"
      "content-type: text/plain; charset=utf-8\r\n"
      "content-length: 7\r\n");
  if (!cors.empty()) {
    out.append("access-control-allow-origin: ").append(cors).append("\r\n");
    if (cors != "*") out.append("vary: Origin\r\n");
  }
  out.append("\r\nsuccess");
}

bool is_token_char(unsigned char c) {
  if (c >= '0' && c <= '9') return true;
  if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != 0;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if ((a[i] | 0x20) != (b[i] | 0x20)) return false;
  }
  return true;
}

bool contains_token(std::string_view value, std::string_view token) {
  for (size_t i = 0; i + token.size() <= value.size(); ++i) {
    if (iequals(value.substr(i, token.size()), token)) return true;
  }
  return false;
}

// The credentials of an `Authorization: Bearer <credentials>` value.
std::optional<std::string_view> bearer_credentials(std::optional<std::string_view> value) {
  if (!value) return std::nullopt;
  size_t space = value->find(' ');
  if (space == std::string_view::npos || !iequals(value->substr(0, space), "bearer")) {
    return std::nullopt;
  }
  return value->substr(space + 1);
}

std::string_view str(yyjson_val* val) {
  return {yyjson_get_str(val), yyjson_get_len(val)};
}

// The value of `key` in `obj`, or nullptr; `ambiguous` is set when the key is
// repeated (Python's json keeps the last, yyjson finds the first).
yyjson_val* unique_get(yyjson_val* obj, std::string_view key, bool& ambiguous) {
  yyjson_val* found = nullptr;
  size_t idx, max;
  yyjson_val *k, *v;
  yyjson_obj_foreach(obj, idx, max, k, v) {
    if (str(k) == key) {
      if (found) ambiguous = true;
      found = v;
    }
  }
  return found;
}

// request_encoding / response_encoding: absent, "", "none" or "base64".
bool encoding_option(yyjson_val* val, bool& base64) {
  base64 = false;
  if (!val) return true;
  if (!yyjson_is_str(val)) return false;
  std::string_view name = str(val);
  if (name == "base64") {
    base64 = true;
    return true;
  }
  return name.empty() || name == "none";
}

// Topics the Python path must look at: it reports what is wrong with them.
bool plain_topic(std::string_view topic) {
  // The Python path's bounds (a0gw.request.MAX_NAME_BYTES and _DEPTH).
  constexpr size_t kMaxBytes = 1024;
  constexpr size_t kMaxSlashes = 63;
  if (topic.empty() || topic.front() == '/' || topic.find('\0') != std::string_view::npos ||
      topic.size() > kMaxBytes ||
      size_t(std::count(topic.begin(), topic.end(), '/')) > kMaxSlashes) {
    return false;
  }
  size_t start = 0;
  while (start <= topic.size()) {
    size_t end = topic.find('/', start);
    if (end == std::string_view::npos) end = topic.size();
    std::string_view part = topic.substr(start, end - start);
    if (part == ".." || part == "." || part.empty()) return false;
    start = end + 1;
  }
  return true;
}

}  // namespace

FastPubResult FastPub::handle(std::string_view data) {
  FastPubResult result;
  while (result.consumed < data.size()) {
    size_t request_size = 0;
    size_t needed = 0;
    Outcome outcome =
        handle_one(data.substr(result.consumed), request_size, needed, result.response);
    if (outcome == Outcome::kDone) {
      result.consumed += request_size;
      result.answered += 1;
      continue;
    }
    if (outcome == Outcome::kNeedMore) result.needed = needed;
    break;
  }
  return result;
}

FastPub::Outcome FastPub::handle_one(std::string_view data, size_t& request_size, size_t& needed,
                                     std::string& response) {
  // Request line: only this exact one is ours.
  size_t prefix = std::min(data.size(), kRequestLine.size());
  if (data.substr(0, prefix) != kRequestLine.substr(0, prefix)) return Outcome::kDecline;
  size_t head_end = data.find("\r\n\r\n");
  if (head_end == std::string_view::npos) {
    if (data.size() > max_header_) return Outcome::kDecline;
    needed = 1;
    return Outcome::kNeedMore;
  }
  if (head_end + 4 > max_header_) return Outcome::kDecline;

  // Header fields (RFC 9112 §5): anything unusual goes to h11.
  std::string_view fields = data.substr(kRequestLine.size(), head_end + 2 - kRequestLine.size());
  bool have_host = false;
  bool have_length = false;
  size_t content_length = 0;
  std::optional<std::string_view> authorization;
  std::optional<std::string_view> origin;
  while (!fields.empty()) {
    size_t eol = fields.find("\r\n");
    std::string_view line = fields.substr(0, eol);
    fields.remove_prefix(eol + 2);
    size_t colon = line.find(':');
    if (colon == 0 || colon == std::string_view::npos) return Outcome::kDecline;
    std::string_view name = line.substr(0, colon);
    for (unsigned char c : name) {
      if (!is_token_char(c)) return Outcome::kDecline;
    }
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    for (unsigned char c : value) {
      if ((c < 0x20 && c != '\t') || c == 0x7F) return Outcome::kDecline;
    }

    if (iequals(name, "host")) {
      if (have_host) return Outcome::kDecline;
      have_host = true;
    } else if (iequals(name, "content-length")) {
      if (have_length || value.empty() || value.size() > 12) return Outcome::kDecline;
      for (char c : value) {
        if (c < '0' || c > '9') return Outcome::kDecline;
        content_length = content_length * 10 + size_t(c - '0');
      }
      have_length = true;
    } else if (iequals(name, "authorization")) {
      // Python takes the last Bearer header of several: rare, so its job.
      if (authorization) return Outcome::kDecline;
      authorization = value;
    } else if (iequals(name, "origin")) {
      if (origin) return Outcome::kDecline;
      origin = value;
    } else if (iequals(name, "transfer-encoding") || iequals(name, "expect") ||
               iequals(name, "upgrade")) {
      return Outcome::kDecline;
    } else if (iequals(name, "connection")) {
      if (contains_token(value, "close") || contains_token(value, "upgrade")) {
        return Outcome::kDecline;
      }
    }
  }
  if (!have_host || !have_length || content_length > max_body_) return Outcome::kDecline;

  // Access rules: whatever they might refuse is Python's to answer.
  std::optional<std::string_view> cors = rules_.cors_origin(origin);
  if (!cors || !rules_.token_accepted(bearer_credentials(authorization))) {
    return Outcome::kDecline;
  }

  // The body, once all of it is here.
  size_t body_start = head_end + 4;
  if (data.size() < body_start + content_length) {
    needed = body_start + content_length - data.size();
    return Outcome::kNeedMore;
  }
  if (!publish_body(data.substr(body_start, content_length))) return Outcome::kDecline;
  request_size = body_start + content_length;
  append_success(response, *cors);
  return Outcome::kDone;
}

bool FastPub::publish_body(std::string_view body) {
  std::unique_ptr<yyjson_doc, decltype(&yyjson_doc_free)> doc(
      yyjson_read(body.data(), body.size(), YYJSON_READ_NOFLAG), &yyjson_doc_free);
  if (!doc) return false;
  yyjson_val* root = yyjson_doc_get_root(doc.get());
  if (!yyjson_is_obj(root)) return false;

  // Fields: topic, packet {headers?, payload}, request_encoding?, response_encoding?
  bool ambiguous = false;
  yyjson_val* topic = unique_get(root, "topic", ambiguous);
  yyjson_val* packet = unique_get(root, "packet", ambiguous);
  yyjson_val* request_encoding = unique_get(root, "request_encoding", ambiguous);
  yyjson_val* response_encoding = unique_get(root, "response_encoding", ambiguous);
  if (ambiguous || !yyjson_is_str(topic) || !yyjson_is_obj(packet)) return false;
  yyjson_val* payload = unique_get(packet, "payload", ambiguous);
  yyjson_val* headers = unique_get(packet, "headers", ambiguous);
  if (ambiguous || !yyjson_is_str(payload)) return false;
  bool base64 = false;
  bool unused = false;
  if (!encoding_option(request_encoding, base64) || !encoding_option(response_encoding, unused)) {
    return false;
  }
  if (!plain_topic(str(topic)) || !rules_.topic_allowed(str(topic))) return false;

  HeaderList header_list;
  if (headers) {
    if (!yyjson_is_arr(headers)) return false;
    size_t idx, max;
    yyjson_val* pair;
    yyjson_arr_foreach(headers, idx, max, pair) {
      if (!yyjson_is_arr(pair) || yyjson_arr_size(pair) != 2) return false;
      yyjson_val* key = yyjson_arr_get(pair, 0);
      yyjson_val* val = yyjson_arr_get(pair, 1);
      if (!yyjson_is_str(key) || !yyjson_is_str(val)) return false;
      header_list.emplace_back(std::string(str(key)), std::string(str(val)));
    }
  }

  try {
    publishers_.publish(std::string(str(topic)), header_list, str(payload), base64);
  } catch (const std::exception&) {
    // Bad base64 or an AlephZero error: the Python path reports it.
    return false;
  }
  return true;
}

}  // namespace a0gw
