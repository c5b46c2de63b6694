#include "publish.hpp"

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

void PublisherCache::publish(const std::string& topic, const HeaderList& headers,
                             std::string_view payload, bool payload_is_base64) {
  std::string decoded;
  a0::Packet pkt = make_packet(headers, payload, payload_is_base64, decoded);
  std::lock_guard<std::mutex> lk(mu_);
  try {
    a0::Publisher& publisher =
        publishers_.get(topic, [](const std::string& t) { return a0::Publisher(t); });
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
    check_alephzero_file(path);
    a0::Writer writer{a0::File(path)};
    if (standard_headers) writer.push(a0::add_standard_headers());
    writer.write(pkt);
  } catch (const std::exception& e) {
    throw AlephZeroError(e.what());
  }
}

}  // namespace a0gw
