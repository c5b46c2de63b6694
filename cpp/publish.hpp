// One-shot writes: publishing on a pubsub topic and writing to a file.
#pragma once

#include <a0.h>

#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "topic_cache.hpp"

namespace a0gw {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// A payload that is not valid base64; `offset` is the first bad character.
struct InvalidBase64 : std::invalid_argument {
  size_t offset;
  explicit InvalidBase64(size_t off)
      : std::invalid_argument("not valid base64 at character " + std::to_string(off)),
        offset(off) {}
};

// A packet too large for the AlephZero file it would be written to.  AlephZero
// 0.3 does not check this itself: its writer writes past the end of the file.
struct PacketTooLarge : WriteRefused {
  using WriteRefused::WriteRefused;
};

// Throws PacketTooLarge unless `pkt`, with the headers AlephZero's writers
// add, fits in an AlephZero file of `file_size` bytes (0: unknown, not
// checked); `what` names the file in the message.  Returns the bytes the
// packet takes in the file, at most.
uint64_t check_packet_fits(const a0::Packet& pkt, uint64_t file_size, const std::string& what);

// Builds a packet, decoding a base64 payload first.  The packet refers to
// `payload` or to `decoded`, which must outlive it.  Raises InvalidBase64.
a0::Packet make_packet(const HeaderList& headers, std::string_view payload, bool payload_is_base64,
                       std::string& decoded);

// Publishers kept open per topic, so a publish does not reopen and remap the
// topic's file every time.  Holds at most `capacity` topics.
class PublisherCache {
 public:
  explicit PublisherCache(size_t capacity)
      : publishers_(capacity, [] { return a0::env::topic_tmpl_pubsub(); }) {}

  // Publishes with AlephZero's standard headers added, as a0::Publisher does.
  void publish(const std::string& topic, const HeaderList& headers, std::string_view payload,
               bool payload_is_base64);

 private:
  std::mutex mu_;
  TopicCache<a0::Publisher> publishers_;
};

// Writes one packet to the AlephZero file at `path`, adding the standard
// headers only when asked.
void write_file(const std::string& path, const HeaderList& headers, std::string_view payload,
                bool payload_is_base64, bool standard_headers);

}  // namespace a0gw
