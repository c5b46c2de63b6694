// One-shot writes: publishing on a pubsub topic and writing to a file.
#pragma once

#include <a0.h>

#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace a0gw {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// Device and inode of a file; zeros when it does not exist.
struct FileIdentity {
  uint64_t dev = 0;
  uint64_t ino = 0;
  bool operator==(const FileIdentity& o) const { return dev == o.dev && ino == o.ino; }
};

// Identity of the file a topic of protocol template `tmpl` lives in.
FileIdentity topic_file_identity(const char* tmpl, const std::string& topic);

// A payload that is not valid base64; `offset` is the first bad character.
struct InvalidBase64 : std::invalid_argument {
  size_t offset;
  explicit InvalidBase64(size_t off)
      : std::invalid_argument("not valid base64 at character " + std::to_string(off)),
        offset(off) {}
};

// Builds a packet, decoding a base64 payload first.  The packet refers to
// `payload` or to `decoded`, which must outlive it.  Raises InvalidBase64.
a0::Packet make_packet(const HeaderList& headers, std::string_view payload, bool payload_is_base64,
                       std::string& decoded);

// Publishers kept open per topic, so a publish does not reopen and remap the
// topic's file every time.  Holds at most `capacity` topics.
class PublisherCache {
 public:
  explicit PublisherCache(size_t capacity) : capacity_(capacity) {}

  // A cached publisher is reopened when its file was removed or replaced
  // (the root wiped and re-created), so publishes never go to an unlinked file.

  // Publishes with AlephZero's standard headers added, as a0::Publisher does.
  void publish(const std::string& topic, const HeaderList& headers, std::string_view payload,
               bool payload_is_base64);

 private:
  a0::Publisher& get(const std::string& topic);

  struct Entry {
    a0::Publisher publisher;
    FileIdentity identity;
  };

  size_t capacity_;
  std::mutex mu_;
  std::unordered_map<std::string, Entry> publishers_;
};

// Writes one packet to the AlephZero file at `path`, adding the standard
// headers only when asked.
void write_file(const std::string& path, const HeaderList& headers, std::string_view payload,
                bool payload_is_base64, bool standard_headers);

}  // namespace a0gw
