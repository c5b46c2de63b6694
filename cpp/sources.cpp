#include "sources.hpp"

#include <utility>

namespace a0gw {

namespace {

// Runs `fn`, turning AlephZero's exceptions into AlephZeroError.
template <typename Fn>
auto rethrow_as_alephzero_error(Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::exception& e) {
    throw AlephZeroError(e.what());
  }
}

// A reader and the file it maps; members are destroyed reader first.
struct FileReader {
  a0::File file;
  a0::Reader reader;
};

}  // namespace

std::shared_ptr<Stream> open_subscriber(std::shared_ptr<Hub> hub, uint64_t id,
                                        const std::string& topic, a0::Reader::Options reader_opts,
                                        StreamOptions opts) {
  auto stream = std::make_shared<Stream>(std::move(hub), id, opts);
  Stream* raw = stream.get();  // The stream closes its source before it dies.
  auto source = rethrow_as_alephzero_error([&] {
    return std::make_shared<a0::Subscriber>(
        a0::PubSubTopic(topic), reader_opts, [raw](a0::Packet pkt) { raw->deliver_packet(pkt); });
  });
  stream->attach(std::move(source));
  return stream;
}

std::shared_ptr<Stream> open_reader(std::shared_ptr<Hub> hub, uint64_t id, const std::string& path,
                                    a0::Reader::Options reader_opts, StreamOptions opts) {
  auto stream = std::make_shared<Stream>(std::move(hub), id, opts);
  Stream* raw = stream.get();
  auto source = rethrow_as_alephzero_error([&] {
    auto source = std::make_shared<FileReader>();
    source->file = a0::File(path);
    source->reader = a0::Reader(source->file, reader_opts,
                                [raw](a0::Packet pkt) { raw->deliver_packet(pkt); });
    return source;
  });
  stream->attach(std::move(source));
  return stream;
}

}  // namespace a0gw
