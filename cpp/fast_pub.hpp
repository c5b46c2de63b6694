// The native fast path for POST /api/pub.
//
// Publishing is the one REST call that arrives at high rates, and parsing
// HTTP with h11 in Python would cap it.  This parser takes the bytes a
// connection received while its Python HTTP state is idle and answers every
// complete, well-formed publish at their start, all without the GIL.  Anything
// else (another route, an error to report, an unusual header) is left to the
// Python path, which owns every error text: the fast path only ever answers
// "success", so both paths behave identically to a client.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

#include "access.hpp"
#include "publish.hpp"

namespace a0gw {

struct FastPubResult {
  size_t consumed = 0;   // Bytes of requests answered.
  size_t answered = 0;   // How many requests that was.
  std::string response;  // Their responses, in order.
  // The request after `consumed` is a publish the fast path will take once
  // this many more bytes arrive (0: hand the rest to the Python path).
  size_t needed = 0;
};

class FastPub {
 public:
  FastPub(PublisherCache& publishers, AccessRules rules, size_t max_body_bytes,
          size_t max_header_bytes)
      : publishers_(publishers),
        rules_(std::move(rules)),
        max_body_(max_body_bytes),
        max_header_(max_header_bytes) {}

  FastPubResult handle(std::string_view data);

 private:
  enum class Outcome { kDone, kNeedMore, kDecline };

  // Parses and performs one request at the start of `data`; appends its
  // response to `response` when done.
  Outcome handle_one(std::string_view data, size_t& request_size, size_t& needed,
                     std::string& response);
  // Publishes the JSON body; false when it is anything but a valid publish.
  bool publish_body(std::string_view body);

  PublisherCache& publishers_;
  AccessRules rules_;
  size_t max_body_;
  size_t max_header_;
};

}  // namespace a0gw
