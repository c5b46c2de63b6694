#include "publish.hpp"

#include "encoding.hpp"
#include "sources.hpp"

namespace a0gw {

namespace {

// Room the headers AlephZero's writers add to a packet take at most: the
// standard five (times, writer id and sequence numbers) and an RPC's own,
// with their index entries, rounded up generously.
constexpr uint64_t kAddedHeadersBound = 1024;

}  // namespace

uint64_t check_packet_fits(const a0::Packet& pkt, uint64_t file_size, const std::string& what) {
  a0_packet_stats_t stats;
  if (a0_packet_stats(*pkt.c, &stats) != A0_OK) throw PacketTooLarge("Packet size unknown.");
  uint64_t overhead = kTransportHeaderSize + sizeof(a0_transport_frame_hdr_t) + kAddedHeadersBound;
  if (file_size == 0 || stats.serial_size + overhead <= file_size) {
    return stats.serial_size + overhead;
  }
  uint64_t room = file_size > overhead ? file_size - overhead : 0;
  throw PacketTooLarge("Packet of " + std::to_string(stats.serial_size) +
                       " bytes does not fit in " + what + ": its file has " +
                       std::to_string(file_size) + " bytes, room for packets up to about " +
                       std::to_string(room) + ".");
}

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
    std::string what = "topic '" + topic + "'";
    uint64_t need = check_packet_fits(pkt, publishers_.file_size(topic), what);
    publishers_.check_space(topic, need, what);
    publisher.pub(pkt);
  } catch (const WriteRefused&) {
    throw;
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
    a0::File file(path);
    std::string what = "file '" + path + "'";
    check_space(path, file_identity(path), check_packet_fits(pkt, file.size(), what), what);
    a0::Writer writer{file};
    if (standard_headers) writer.push(a0::add_standard_headers());
    writer.write(pkt);
  } catch (const WriteRefused&) {
    throw;
  } catch (const std::exception& e) {
    throw AlephZeroError(e.what());
  }
}

}  // namespace a0gw
