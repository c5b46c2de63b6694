// The Python face of the native core: a0gw._native.
//
// Every call that touches shared memory, copies a payload or may block drops
// the GIL first (py::gil_scoped_release at the call site below).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <map>

#include "encoding.hpp"
#include "fast_pub.hpp"
#include "publish.hpp"
#include "sources.hpp"
#include "stream.hpp"

namespace py = pybind11;
using namespace a0gw;

namespace {

a0::Reader::Options reader_options(int init, int iter) {
  return a0::Reader::Options(static_cast<a0::Reader::Init>(init),
                             static_cast<a0::Reader::Iter>(iter));
}

// One frame handed to Python without a copy: the event loop writes it
// through a memoryview that keeps this object, and so the string, alive.
struct OwnedFrame {
  std::string data;
  size_t offset;
};

// Hands a batch to Python as (data, close_code, close_reason).  A single
// frame goes as it is; several are joined into one bytes object (allocated
// with the GIL, filled without it) so the socket gets one write.
py::tuple batch_to_python(Batch batch) {
  if (batch.frames.size() == 1) {
    auto frame = std::make_unique<OwnedFrame>(
        OwnedFrame{std::move(batch.frames[0]), batch.offsets[0]});
    py::memoryview view(py::cast(std::move(frame)));
    return py::make_tuple(std::move(view), batch.close_code, std::move(batch.close_reason));
  }
  PyObject* raw = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(batch.total));
  if (!raw) throw py::error_already_set();
  py::bytes data = py::reinterpret_steal<py::bytes>(raw);
  char* dst = PyBytes_AS_STRING(raw);
  {
    py::gil_scoped_release release;
    for (size_t i = 0; i < batch.frames.size(); ++i) {
      size_t len = batch.frames[i].size() - batch.offsets[i];
      std::memcpy(dst, batch.frames[i].data() + batch.offsets[i], len);
      dst += len;
    }
    batch.frames.clear();
  }
  return py::make_tuple(std::move(data), batch.close_code, std::move(batch.close_reason));
}

// Calls `take` (a Stream method that hands over frames) without the GIL.
template <typename F>
Batch without_gil(F&& take) {
  py::gil_scoped_release release;
  return take();
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "Native core of a0gw: AlephZero access, frame building and encodings.";

  py::register_exception<AlephZeroError>(m, "AlephZeroError", PyExc_RuntimeError);
  py::register_exception<InvalidBase64>(m, "InvalidBase64", PyExc_ValueError);
  py::register_exception<PacketTooLarge>(m, "PacketTooLarge", PyExc_ValueError);
  py::register_exception<NoSpace>(m, "NoSpace", PyExc_OSError);

  m.attr("INIT_OLDEST") = static_cast<int>(a0::Reader::Init::OLDEST);
  m.attr("INIT_MOST_RECENT") = static_cast<int>(a0::Reader::Init::MOST_RECENT);
  m.attr("INIT_AWAIT_NEW") = static_cast<int>(a0::Reader::Init::AWAIT_NEW);
  m.attr("ITER_NEXT") = static_cast<int>(a0::Reader::Iter::NEXT);
  m.attr("ITER_NEWEST") = static_cast<int>(a0::Reader::Iter::NEWEST);
  m.attr("SCHEDULER_IMMEDIATE") = static_cast<int>(Scheduler::kImmediate);
  m.attr("SCHEDULER_ON_ACK") = static_cast<int>(Scheduler::kOnAck);
  m.attr("SCHEDULER_ON_DRAIN") = static_cast<int>(Scheduler::kOnDrain);
  m.attr("ENCODING_NONE") = static_cast<int>(Encoding::kNone);
  m.attr("ENCODING_BASE64") = static_cast<int>(Encoding::kBase64);

  // --- Encodings (exposed for tests and benchmarks) -------------------------
  m.def(
      "b64encode",
      [](py::bytes data) {
        std::string_view in = data;
        std::string out;
        {
          py::gil_scoped_release release;
          base64_encode(in, out);
        }
        return py::bytes(out);
      },
      "Standard padded base64 of `data`.");
  m.def(
      "b64decode",
      [](std::string_view text) {
        std::string out;
        std::optional<size_t> bad;
        {
          py::gil_scoped_release release;
          bad = base64_decode(text, out);
        }
        if (bad) throw InvalidBase64(*bad);
        return py::bytes(out);
      },
      "Decodes padded standard base64; raises InvalidBase64.");

  // --- Hub and streams --------------------------------------------------------
  py::class_<OwnedFrame>(m, "OwnedFrame", py::buffer_protocol(), "Bytes of one frame.")
      .def_buffer([](OwnedFrame& f) {
        return py::buffer_info(f.data.data() + f.offset, 1,
                               py::format_descriptor<uint8_t>::format(), 1,
                               {f.data.size() - f.offset}, {1}, /*readonly=*/true);
      });

  py::class_<Hub, std::shared_ptr<Hub>>(m, "Hub", "Wakes the event loop when streams have frames.")
      .def(py::init<>())
      .def_property_readonly("fd", &Hub::fd)
      .def("take_ready", &Hub::take_ready, "Clears the eventfd; returns ready stream ids.");

  py::class_<StreamOptions>(m, "StreamOptions", "How a stream schedules and encodes its frames.")
      .def(py::init([](int scheduler, int encoding, std::optional<uint64_t> seq_min,
                       size_t drain_bytes, size_t immediate_bytes, bool newest_only,
                       bool report_gaps) {
             StreamOptions opts;
             opts.scheduler = static_cast<Scheduler>(scheduler);
             opts.encoding = static_cast<Encoding>(encoding);
             opts.seq_min = seq_min;
             opts.drain_bytes = drain_bytes;
             opts.immediate_bytes = immediate_bytes;
             opts.newest_only = newest_only;
             opts.report_gaps = report_gaps;
             return opts;
           }),
           py::arg("scheduler"), py::arg("encoding"), py::arg("seq_min") = py::none(),
           py::arg("drain_bytes") = StreamOptions{}.drain_bytes,
           py::arg("immediate_bytes") = StreamOptions{}.immediate_bytes,
           py::arg("newest_only") = false, py::arg("report_gaps") = false);

  py::class_<Stream, std::shared_ptr<Stream>>(m, "Stream", "Frames from one AlephZero source.")
      .def_property_readonly("id", &Stream::id)
      .def_property_readonly("dropped", &Stream::dropped)
      .def_property_readonly("delivered", &Stream::delivered)
      .def(
          "take",
          [](Stream& s) { return batch_to_python(without_gil([&] { return s.take(); })); },
          "Returns (frames, close_code, close_reason); frames is one bytes object.")
      .def(
          "flush",
          [](Stream& s, bool socket_idle) {
            return batch_to_python(without_gil([&] { return s.flush(socket_idle); }));
          },
          py::arg("socket_idle"),
          "Like take(); with socket_idle, sends queued frames to the attached socket\n"
          "first, returns what it did not take, and starts direct mode if it took all.")
      .def("attach_socket", &Stream::attach_socket, py::arg("fd"),
           "Gives the stream its own duplicate of the connection's socket.")
      .def(
          "hold",
          [](Stream& s) {
            py::tuple batch = batch_to_python(without_gil([&] { return s.hold(); }));
            return py::object(batch[0]);
          },
          "Ends direct mode before the event loop writes to the socket; returns\n"
          "the rest of a frame the socket has part of, to write first.")
      .def("ack", &Stream::ack, py::call_guard<py::gil_scoped_release>())
      .def("close", &Stream::close, py::call_guard<py::gil_scoped_release>());

  m.def(
      "open_subscriber",
      [](std::shared_ptr<Hub> hub, uint64_t id, const std::string& topic, int init, int iter,
         const StreamOptions& opts) {
        py::gil_scoped_release release;
        return open_subscriber(std::move(hub), id, topic, reader_options(init, iter), opts);
      },
      py::arg("hub"), py::arg("id"), py::arg("topic"), py::arg("init"), py::arg("iter"),
      py::arg("options"), "Streams the pubsub topic `topic`.");
  m.def(
      "open_reader",
      [](std::shared_ptr<Hub> hub, uint64_t id, const std::string& path, int init, int iter,
         const StreamOptions& opts) {
        py::gil_scoped_release release;
        return open_reader(std::move(hub), id, path, reader_options(init, iter), opts);
      },
      py::arg("hub"), py::arg("id"), py::arg("path"), py::arg("init"), py::arg("iter"),
      py::arg("options"), "Streams the AlephZero file at `path`.");

  m.def(
      "open_log_listener",
      [](std::shared_ptr<Hub> hub, uint64_t id, const std::string& topic, int level, int init,
         int iter, const StreamOptions& opts) {
        py::gil_scoped_release release;
        return open_log_listener(std::move(hub), id, topic, static_cast<a0::LogLevel>(level),
                                 reader_options(init, iter), opts);
      },
      py::arg("hub"), py::arg("id"), py::arg("topic"), py::arg("level"), py::arg("init"),
      py::arg("iter"), py::arg("options"), "Streams the log of `topic` at `level` and above.");
  m.def(
      "open_prpc",
      [](std::shared_ptr<Hub> hub, uint64_t id, const std::string& topic,
         const HeaderList& headers, std::string_view payload, bool payload_is_base64,
         const StreamOptions& opts) {
        py::gil_scoped_release release;
        std::string decoded;
        a0::Packet request = make_packet(headers, payload, payload_is_base64, decoded);
        return open_prpc(std::move(hub), id, topic, std::move(request), opts);
      },
      py::arg("hub"), py::arg("id"), py::arg("topic"), py::arg("headers"), py::arg("payload"),
      py::arg("base64"), py::arg("options"),
      "Opens a progressive RPC on `topic` and streams its progress.");
  m.def(
      "open_discovery",
      [](std::shared_ptr<Hub> hub, uint64_t id, const std::string& root, const std::string& tmpl,
         const std::string& topic_glob, const StreamOptions& opts) {
        py::gil_scoped_release release;
        return open_discovery(std::move(hub), id, root, tmpl, topic_glob, opts);
      },
      py::arg("hub"), py::arg("id"), py::arg("root"), py::arg("template"), py::arg("topic"),
      py::arg("options"), "Announces AlephZero files matching a topic glob, now and later.");
  m.def(
      "topic_templates",
      [] {
        return std::map<std::string, std::string>{
            {"file", "{topic}"},
            {"cfg", a0::env::topic_tmpl_cfg()},
            {"log", a0::env::topic_tmpl_log()},
            {"prpc", a0::env::topic_tmpl_prpc()},
            {"pubsub", a0::env::topic_tmpl_pubsub()},
            {"rpc", a0::env::topic_tmpl_rpc()},
        };
      },
      "File-name template of each protocol, as AlephZero reads them from its environment.");

  py::class_<RpcClients>(m, "RpcClients", "RPC clients kept open per topic.")
      .def(py::init<size_t>(), py::arg("capacity") = 256)
      .def(
          "call",
          [](RpcClients& clients, std::shared_ptr<Hub> hub, uint64_t id, const std::string& topic,
             const HeaderList& headers, std::string_view payload, bool payload_is_base64,
             int encoding) {
            py::gil_scoped_release release;
            std::string decoded;
            a0::Packet request = make_packet(headers, payload, payload_is_base64, decoded);
            StreamOptions opts;
            opts.encoding = static_cast<Encoding>(encoding);
            auto stream = clients.call(std::move(hub), id, topic, request, opts);
            return std::make_pair(stream, std::string(request.id()));
          },
          py::arg("hub"), py::arg("id"), py::arg("topic"), py::arg("headers"),
          py::arg("payload"), py::arg("base64"), py::arg("encoding"),
          "Sends a request; returns (stream yielding the reply body, request id).")
      .def("cancel", &RpcClients::cancel, py::call_guard<py::gil_scoped_release>(),
           py::arg("topic"), py::arg("request_id"));

  // --- One-shot writes ----------------------------------------------------------
  py::class_<PublisherCache>(m, "PublisherCache", "Publishers kept open per topic.")
      .def(py::init<size_t>(), py::arg("capacity") = 256)
      .def(
          "publish",
          [](PublisherCache& cache, const std::string& topic, const HeaderList& headers,
             std::string_view payload, bool payload_is_base64) {
            py::gil_scoped_release release;
            cache.publish(topic, headers, payload, payload_is_base64);
          },
          py::arg("topic"), py::arg("headers"), py::arg("payload"), py::arg("base64"),
          "Publishes one packet on `topic` with AlephZero's standard headers.");
  py::class_<AccessRules>(m, "AccessRules", "The access rules the native publish path enforces.")
      .def(py::init<std::optional<std::string>, std::vector<std::string>, std::vector<std::string>,
                    std::vector<std::string>>(),
           py::arg("token"), py::arg("origins"), py::arg("allow_topics"), py::arg("deny_topics"));
  py::class_<FastPub>(m, "FastPub", "Native path for POST /api/pub.")
      .def(py::init<PublisherCache&, AccessRules, size_t, size_t>(), py::keep_alive<1, 2>(),
           py::arg("publishers"), py::arg("rules"), py::arg("max_body_bytes"),
           py::arg("max_header_bytes"))
      .def(
          "handle",
          [](FastPub& fast, py::buffer data) {
            py::buffer_info info = data.request();
            std::string_view view(static_cast<const char*>(info.ptr),
                                  static_cast<size_t>(info.size * info.itemsize));
            FastPubResult result;
            {
              py::gil_scoped_release release;
              result = fast.handle(view);
            }
            return py::make_tuple(result.consumed, result.answered, py::bytes(result.response),
                                  result.needed);
          },
          "Answers the complete publishes at the start of `data`; returns (bytes "
          "consumed, requests answered, responses, bytes still needed for the next one).");
  m.def(
      "write_file",
      [](const std::string& path, const HeaderList& headers, std::string_view payload,
         bool payload_is_base64, bool standard_headers) {
        py::gil_scoped_release release;
        write_file(path, headers, payload, payload_is_base64, standard_headers);
      },
      py::arg("path"), py::arg("headers"), py::arg("payload"), py::arg("base64"),
      py::arg("standard_headers"), "Writes one packet to the AlephZero file at `path`.");

  // --- Deadman --------------------------------------------------------------------
  py::class_<a0::Deadman>(m, "Deadman", "AlephZero deadman of a topic.", py::module_local())
      .def(py::init([](const std::string& topic) { return a0::Deadman(a0::DeadmanTopic(topic)); }))
      .def("take", py::overload_cast<>(&a0::Deadman::take),
           py::call_guard<py::gil_scoped_release>())
      .def("try_take", &a0::Deadman::try_take, py::call_guard<py::gil_scoped_release>())
      .def("release", &a0::Deadman::release, py::call_guard<py::gil_scoped_release>());
}
