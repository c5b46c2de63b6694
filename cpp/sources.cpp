#include "sources.hpp"

#include "encoding.hpp"
#include "publish.hpp"

#include <cstdlib>
#include <cstring>
#include <utility>

namespace a0gw {

namespace {

// Runs `fn`, turning AlephZero's exceptions into AlephZeroError.
template <typename Fn>
auto rethrow_as_alephzero_error(Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const WriteRefused&) {
    throw;
  } catch (const std::exception& e) {
    throw AlephZeroError(e.what());
  }
}

// Refuses a topic whose existing file AlephZero would misread.
void check_topic_file(const char* tmpl, const std::string& topic) {
  check_alephzero_file(topic_file_path(tmpl, topic));
}

// Packet buffers for AlephZero's C readers; each is freed after its callback.
const a0_alloc_t kMallocAlloc = {
    nullptr,
    [](void*, size_t size, a0_buf_t* out) {
      out->data = static_cast<uint8_t*>(std::malloc(size));
      out->size = size;
      return out->data || size == 0 ? A0_OK : A0_ERR_SYS;
    },
    [](void*, a0_buf_t buf) {
      std::free(buf.data);
      return A0_OK;
    },
};

a0_reader_options_t c_options(a0::Reader::Options opts) {
  return {static_cast<a0_reader_init_t>(opts.init), static_cast<a0_reader_iter_t>(opts.iter)};
}

// Turns an AlephZero C error into AlephZeroError with AlephZero's text.
void check(a0_err_t err) {
  if (err == A0_OK) return;
  throw AlephZeroError(err == A0_ERR_CUSTOM_MSG ? a0_err_msg
                       : err == A0_ERR_SYS     ? std::strerror(a0_err_syscode)
                                               : a0_strerror(err));
}

// The C subscriber: its packets reach the stream without the C++ API's
// per-packet header map.
struct CSubscriber {
  a0_subscriber_t sub;
  CSubscriber(const std::string& topic, a0::Reader::Options opts, Stream* stream) {
    check(a0_subscriber_init(&sub, a0_pubsub_topic_t{topic.c_str(), nullptr}, kMallocAlloc,
                             c_options(opts), Stream::packet_callback(stream)));
  }
  ~CSubscriber() { a0_subscriber_close(&sub); }
};

// The C reader of a file; the File (mapping) outlives it.
struct CFileReader {
  a0::File file;
  a0_reader_t reader;
  CFileReader(const std::string& path, a0::Reader::Options opts, Stream* stream) : file(path) {
    check(a0_reader_init(&reader, *file.arena().c, kMallocAlloc, c_options(opts),
                         Stream::packet_callback(stream)));
  }
  ~CFileReader() { a0_reader_close(&reader); }
};

struct CLogListener {
  a0_log_listener_t listener;
  CLogListener(const std::string& topic, a0::LogLevel level, a0::Reader::Options opts,
               Stream* stream) {
    check(a0_log_listener_init(&listener, a0_log_topic_t{topic.c_str(), nullptr}, kMallocAlloc,
                               static_cast<a0_log_level_t>(level), c_options(opts),
                               Stream::packet_callback(stream)));
  }
  ~CLogListener() { a0_log_listener_close(&listener); }
};

}  // namespace

std::shared_ptr<Stream> open_subscriber(std::shared_ptr<Hub> hub, uint64_t id,
                                        const std::string& topic, a0::Reader::Options reader_opts,
                                        StreamOptions opts) {
  auto stream = std::make_shared<Stream>(std::move(hub), id, opts);
  Stream* raw = stream.get();  // The stream closes its source before it dies.
  auto source = rethrow_as_alephzero_error([&] {
    check_topic_file(a0::env::topic_tmpl_pubsub(), topic);
    return std::make_shared<CSubscriber>(topic, reader_opts, raw);
  });
  stream->attach(std::move(source));
  return stream;
}

std::shared_ptr<Stream> open_reader(std::shared_ptr<Hub> hub, uint64_t id, const std::string& path,
                                    a0::Reader::Options reader_opts, StreamOptions opts) {
  auto stream = std::make_shared<Stream>(std::move(hub), id, opts);
  Stream* raw = stream.get();
  auto source = rethrow_as_alephzero_error([&] {
    check_alephzero_file(path);
    return std::make_shared<CFileReader>(path, reader_opts, raw);
  });
  stream->attach(std::move(source));
  return stream;
}

}  // namespace a0gw

namespace a0gw {

std::shared_ptr<Stream> open_log_listener(std::shared_ptr<Hub> hub, uint64_t id,
                                          const std::string& topic, a0::LogLevel level,
                                          a0::Reader::Options reader_opts, StreamOptions opts) {
  auto stream = std::make_shared<Stream>(std::move(hub), id, opts);
  Stream* raw = stream.get();
  auto source = rethrow_as_alephzero_error([&] {
    check_topic_file(a0::env::topic_tmpl_log(), topic);
    return std::make_shared<CLogListener>(topic, level, reader_opts, raw);
  });
  stream->attach(std::move(source));
  return stream;
}

namespace {

// A prpc client and its one connection, cancelled when the stream drops it.
struct PrpcSession {
  a0::PrpcClient client;
  std::string connection_id;

  ~PrpcSession() {
    // Empty until the request is known to go out: nothing to cancel then
    // (and AlephZero would read an id of 36 bytes from it).
    if (connection_id.empty()) return;
    try {
      client.cancel(connection_id);
    } catch (const std::exception&) {
      // The server's topic is gone; there is nothing left to cancel.
    }
  }
};

}  // namespace

std::shared_ptr<Stream> open_prpc(std::shared_ptr<Hub> hub, uint64_t id, const std::string& topic,
                                  a0::Packet request, StreamOptions opts) {
  auto stream = std::make_shared<Stream>(std::move(hub), id, opts);
  Stream* raw = stream.get();
  auto session = rethrow_as_alephzero_error([&] {
    check_topic_file(a0::env::topic_tmpl_prpc(), topic);
    auto session = std::make_shared<PrpcSession>();
    session->client = a0::PrpcClient(a0::PrpcTopic(topic));
    std::string what = "prpc topic '" + topic + "'";
    std::string path = topic_file_path(a0::env::topic_tmpl_prpc(), topic);
    FileIdentity file = file_identity(path);  // One look at it serves both checks.
    check_space(path, file, check_packet_fits(request, file.size, what), what);
    session->connection_id = std::string(request.id());
    return session;
  });
  // Attach before connecting: the session must be owned by the stream as soon
  // as progress can arrive.
  stream->attach(session);
  rethrow_as_alephzero_error([&] {
    session->client.connect(request,
                            [raw](a0::Packet pkt, bool done) { raw->deliver_packet(pkt, done); });
  });
  return stream;
}

std::shared_ptr<Stream> open_discovery(std::shared_ptr<Hub> hub, uint64_t id,
                                       const std::string& root, const std::string& tmpl,
                                       const std::string& topic_glob, StreamOptions opts) {
  static const std::string kTopicMark = "{topic}";
  size_t mark = tmpl.find(kTopicMark);
  if (mark == std::string::npos) throw AlephZeroError("Topic template has no {topic}: " + tmpl);
  std::string prefix = tmpl.substr(0, mark);
  std::string suffix = tmpl.substr(mark + kTopicMark.size());
  std::string base = root;
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  std::string pattern = rethrow_as_alephzero_error(
      [&] { return base + "/" + a0::topic_path(tmpl, topic_glob); });

  auto stream = std::make_shared<Stream>(std::move(hub), id, opts);
  Stream* raw = stream.get();
  auto on_discovery = [raw, base, prefix, suffix](const std::string& abspath) {
    if (abspath.size() <= base.size() + 1) return;
    std::string relpath = abspath.substr(base.size() + 1);
    if (relpath.size() < prefix.size() + suffix.size()) return;
    std::string topic =
        relpath.substr(prefix.size(), relpath.size() - prefix.size() - suffix.size());
    std::string json = "{\"abspath\":\"";
    // A name that is not UTF-8 cannot be sent as JSON text; such files are
    // skipped rather than ending the whole discovery.
    if (json_escape(abspath, json)) return;
    json.append("\",\"relpath\":\"");
    json_escape(relpath, json);
    json.append("\",\"topic\":\"");
    json_escape(topic, json);
    json.append("\"}");
    raw->deliver_json(json);
  };
  auto source = rethrow_as_alephzero_error(
      [&] { return std::make_shared<a0::Discovery>(pattern, on_discovery); });
  stream->attach(std::move(source));
  return stream;
}

std::shared_ptr<Stream> RpcClients::call(std::shared_ptr<Hub> hub, uint64_t id,
                                         const std::string& topic, a0::Packet request,
                                         StreamOptions opts) {
  opts.websocket = false;
  opts.scheduler = Scheduler::kImmediate;
  auto stream = std::make_shared<Stream>(std::move(hub), id, opts);
  rethrow_as_alephzero_error([&] {
    std::lock_guard<std::mutex> lk(mu_);
    // The callback owns the stream, so a reply after a cancel finds it closed
    // rather than freed.
    a0::RpcClient& client =
        clients_.get(topic, [](const std::string& t) { return a0::RpcClient(t); });
    std::string what = "rpc topic '" + topic + "'";
    clients_.check_space(topic, check_packet_fits(request, clients_.file_size(topic), what),
                         what);
    client.send(request, [stream](a0::Packet reply) { stream->deliver_packet(reply); });
  });
  return stream;
}

void RpcClients::cancel(const std::string& topic, const std::string& request_id) {
  std::lock_guard<std::mutex> lk(mu_);
  a0::RpcClient* client = clients_.find(topic);
  if (client == nullptr) return;
  try {
    client->cancel(request_id);
  } catch (const std::exception&) {
    // Already answered or already cancelled.
  }
}

}  // namespace a0gw
