#include "publish.hpp"

#include <sys/stat.h>

#include "encoding.hpp"
#include "sources.hpp"

namespace a0gw {

a0::Packet make_packet(const HeaderList& headers, std::string_view payload, bool payload_is_base64,
                       std::string& decoded) {
  std::unordered_multimap<std::string, std::string> header_map(headers.begin(), headers.end());
  if (payload_is_base64) {
    decoded.reserve(payload.size() / 4 * 3);
    if (auto bad = base64_decode(payload, decoded)) throw InvalidBase64(*bad);
    payload = decoded;
  }
  return a0::Packet(std::move(header_map), a0::string_view(payload.data(), payload.size()),
                    a0::ref);
}

FileIdentity topic_file_identity(const char* tmpl, const std::string& topic) {
  std::string path = std::string(a0::env::root()) + "/" + a0::topic_path(tmpl, topic);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return {};
  return {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
}

a0::Publisher& PublisherCache::get(const std::string& topic) {
  const char* tmpl = a0::env::topic_tmpl_pubsub();
  auto it = publishers_.find(topic);
  if (it != publishers_.end()) {
    if (topic_file_identity(tmpl, topic) == it->second.identity) return it->second.publisher;
    publishers_.erase(it);
  }
  if (publishers_.size() >= capacity_) publishers_.erase(publishers_.begin());
  try {
    a0::Publisher publisher{a0::PubSubTopic(topic)};
    Entry entry{std::move(publisher), topic_file_identity(tmpl, topic)};
    return publishers_.emplace(topic, std::move(entry)).first->second.publisher;
  } catch (const std::exception& e) {
    throw AlephZeroError(e.what());
  }
}

void PublisherCache::publish(const std::string& topic, const HeaderList& headers,
                             std::string_view payload, bool payload_is_base64) {
  std::string decoded;
  a0::Packet pkt = make_packet(headers, payload, payload_is_base64, decoded);
  std::lock_guard<std::mutex> lk(mu_);
  a0::Publisher& publisher = get(topic);
  try {
    publisher.pub(pkt);
  } catch (const std::exception& e) {
    throw AlephZeroError(e.what());
  }
}

void write_file(const std::string& path, const HeaderList& headers, std::string_view payload,
                bool payload_is_base64, bool standard_headers) {
  std::string decoded;
  a0::Packet pkt = make_packet(headers, payload, payload_is_base64, decoded);
  try {
    a0::Writer writer{a0::File(path)};
    if (standard_headers) writer.push(a0::add_standard_headers());
    writer.write(pkt);
  } catch (const std::exception& e) {
    throw AlephZeroError(e.what());
  }
}

}  // namespace a0gw
