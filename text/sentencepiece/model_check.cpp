#include "text/sentencepiece/model_check.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <utility>
#include <vector>

#include "text/error.h"
#include "text/unicode/utf8.h"

namespace lowbit::text {
namespace {

constexpr uint64_t kMaxFileBytes = uint64_t{1} << 30;

// libsentencepiece's normalizer keeps the rules matching a prefix of the text
// in a stack array of 32 (normalizer.h, kMaxTrieResultsSize) but loops over
// as many as the trie reports, so no text may match more.
constexpr unsigned kMaxPrefixMatches = 32;

// The wire types of protobuf's encoding (protobuf.dev/programming-guides/encoding).
enum WireType : uint32_t {
  kVarint = 0,
  kFixed64 = 1,
  kLength = 2,
  kGroupStart = 3,
  kGroupEnd = 4,
  kFixed32 = 5,
};

const char* wire_name(uint32_t wire) {
  switch (wire) {
    case kVarint: return "varint";
    case kFixed64: return "64-bit";
    case kLength: return "length-delimited";
    case kGroupStart: return "group start";
    case kGroupEnd: return "group end";
    case kFixed32: return "32-bit";
    default: return "not a wire type";
  }
}

std::string hex(uint32_t value) {
  char text[11];
  std::snprintf(text, sizeof text, "0x%08x", value);
  return text;
}

uint64_t load_le(std::string_view bytes, size_t pos, int size) {
  uint64_t value = 0;
  for (int i = size - 1; i >= 0; --i) value = (value << 8) | uint8_t(bytes[pos + size_t(i)]);
  return value;
}

// The trie walk's hot load: one little-endian word.
uint32_t load_u32(std::string_view bytes, size_t pos) {
  uint32_t value;
  std::memcpy(&value, bytes.data() + pos, sizeof value);
  if constexpr (__BYTE_ORDER__ == __ORDER_BIG_ENDIAN__) value = __builtin_bswap32(value);
  return value;
}

struct Field {
  uint32_t number = 0;
  uint32_t wire = 0;
  size_t offset = 0;          // of the tag, in the file
  uint64_t value = 0;         // varint, 64-bit and 32-bit fields
  size_t begin = 0, end = 0;  // length-delimited fields: the payload, in the file
};

// The fields of one message, which fills bytes [begin, end) of the file.
// Positions in messages are file offsets.
class Message {
 public:
  Message(std::string_view bytes, const std::string& file, std::string name, size_t begin, size_t end)
      : bytes_(bytes), file_(file), name_(std::move(name)), pos_(begin), end_(end) {}

  std::string_view bytes() const { return bytes_; }
  const std::string& file() const { return file_; }
  const std::string& name() const { return name_; }

  // Reads the next field into `field`; false at the end of the message.
  bool next(Field& field) {
    if (pos_ == end_) return false;
    field = Field{};
    field.offset = pos_;
    const uint64_t tag = varint("tag");
    if (tag > UINT32_MAX) fail(field.offset, "tag ", tag, " is wider than 32 bits");
    field.number = uint32_t(tag >> 3);
    field.wire = uint32_t(tag & 7);
    if (field.number == 0) fail(field.offset, "field number 0 (tag ", tag, ") is not allowed");
    switch (field.wire) {
      case kVarint: field.value = varint("varint"); break;
      case kFixed64: field.value = fixed(field, 8); break;
      case kFixed32: field.value = fixed(field, 4); break;
      case kLength: {
        const uint64_t length = varint("length");
        if (length > end_ - pos_)
          fail(field.offset, "field ", field.number, " is ", length, " bytes long but ", name_, " ends ",
               end_ - pos_, " bytes after its length");
        field.begin = pos_;
        field.end = pos_ + size_t(length);
        pos_ = field.end;
        break;
      }
      default:
        // Groups are deprecated, and sentencepiece_model.proto has none.
        fail(field.offset, "field ", field.number, " has wire type ", field.wire, " (", wire_name(field.wire),
             "); expected varint, 64-bit, length-delimited or 32-bit");
    }
    return true;
  }

  template <typename... Parts>
  [[noreturn]] void fail(size_t offset, const Parts&... parts) const {
    throw_error(file_, ": not a valid SentencePiece model: ", name_, " at file offset ", offset, ": ",
                parts...);
  }

 private:
  // At most 10 bytes, the last of which may add only bit 63.
  uint64_t varint(const char* what) {
    const size_t start = pos_;
    uint64_t value = 0;
    for (int shift = 0;; shift += 7) {
      if (pos_ == end_) fail(start, what, " runs past the end of ", name_);
      const auto byte = uint8_t(bytes_[pos_++]);
      if (shift == 63 && byte > 1)
        fail(start, what, byte >= 0x80 ? " is longer than 10 bytes" : " does not fit 64 bits");
      value |= uint64_t(byte & 0x7F) << shift;
      if (byte < 0x80) return value;
    }
  }

  uint64_t fixed(const Field& field, int size) {
    if (end_ - pos_ < size_t(size))
      fail(field.offset, "field ", field.number, " needs ", size, " bytes but ", name_, " ends ", end_ - pos_,
           " bytes after its tag");
    pos_ += size_t(size);
    return load_le(bytes_, pos_ - size_t(size), size);
  }

  std::string_view bytes_;
  const std::string& file_;
  std::string name_;
  size_t pos_;
  size_t end_;
};

// A field of sentencepiece_model.proto that the check reads.
struct Known {
  uint32_t number;
  const char* name;
  uint32_t wire;
  bool repeated;
};

// Whether `field` is in `table`, after checking its wire type and that a
// singular field comes once (protobuf would merge repeats, last value
// winning; SentencePiece never writes them). Other fields are unknown to this
// version of the format, which protobuf keeps aside, and so they are skipped.
template <size_t N>
bool known(const Message& message, const Field& field, const Known (&table)[N], uint32_t& seen) {
  for (const Known& k : table) {
    if (k.number != field.number) continue;
    if (field.wire != k.wire)
      message.fail(field.offset, "field ", k.number, " (", k.name, ") has wire type ", field.wire, " (",
                   wire_name(field.wire), "), expected ", k.wire, " (", wire_name(k.wire), ")");
    if (!k.repeated && ((seen >> k.number) & 1))
      message.fail(field.offset, "field ", k.number, " (", k.name, ") appears a second time");
    seen |= 1u << k.number;
    return true;
  }
  return false;
}

// sentencepiece_model.proto, the fields each message of a .model is checked for.
constexpr Known kModelFields[] = {{1, "pieces", kLength, true},
                                  {2, "trainer_spec", kLength, false},
                                  {3, "normalizer_spec", kLength, false},
                                  {4, "self_test_data", kLength, false},
                                  {5, "denormalizer_spec", kLength, false}};
constexpr Known kPieceFields[] = {
    {1, "piece", kLength, false}, {2, "score", kFixed32, false}, {3, "type", kVarint, false}};
constexpr Known kNormalizerFields[] = {{1, "name", kLength, false},
                                       {2, "precompiled_charsmap", kLength, false},
                                       {3, "add_dummy_prefix", kVarint, false},
                                       {4, "remove_extra_whitespaces", kVarint, false},
                                       {5, "escape_whitespaces", kVarint, false},
                                       {6, "normalization_rule_tsv", kLength, false}};
constexpr Known kSelfTestFields[] = {{1, "samples", kLength, true}};
constexpr Known kSampleFields[] = {{1, "input", kLength, false}, {2, "expected", kLength, false}};

// ModelProto.SentencePiece.Type: NORMAL = 1 ... BYTE = 6.
constexpr uint64_t kFirstType = 1, kUserDefined = 4, kLastType = 6;

// Every field of a message whose contents the check does not need
// (TrainerSpec): only its wire format.
void skim(const Message& parent, const Field& field, const char* name) {
  Message message(parent.bytes(), parent.file(), name, field.begin, field.end);
  Field inner;
  while (message.next(inner)) {
  }
}

void check_piece(const Message& model, const Field& field, size_t index) {
  Message message(model.bytes(), model.file(), "pieces[" + std::to_string(index) + "]", field.begin,
                  field.end);
  uint32_t seen = 0;
  std::optional<Field> piece;
  uint64_t type = 1;  // the proto's default, NORMAL
  Field inner;
  while (message.next(inner)) {
    if (!known(message, inner, kPieceFields, seen)) continue;
    if (inner.number == 1) piece = inner;
    if (inner.number == 2) {
      float score;
      const auto bits = uint32_t(inner.value);
      std::memcpy(&score, &bits, sizeof score);
      // The encoders rank pieces by score; NaN or infinity would break their orderings.
      if (!std::isfinite(score)) message.fail(inner.offset, "score is ", score, ", expected a finite number");
    }
    if (inner.number == 3) {
      type = inner.value;
      if (type < kFirstType || type > kLastType)
        message.fail(inner.offset, "type is ", type, ", expected ", kFirstType, " (NORMAL) to ", kLastType,
                     " (BYTE)");
    }
  }
  if (!piece || piece->begin == piece->end)
    message.fail(field.offset, "piece (field 1) is ", piece ? "empty" : "missing",
                 "; every piece needs text");
  const std::string_view text = model.bytes().substr(piece->begin, piece->end - piece->begin);
  if (const std::optional<size_t> bad = unicode::find_invalid_utf8(text))
    message.fail(piece->begin + *bad, "piece is not valid UTF-8 (byte ", *bad, " of its ", text.size(),
                 ")");
  // libsentencepiece's matcher of user-defined pieces takes them as C strings:
  // a NUL would cut one short (or to nothing, which darts-clone throws at).
  if (const size_t nul = text.find('\0'); type == kUserDefined && nul != std::string_view::npos)
    message.fail(piece->begin + nul, "a USER_DEFINED piece holds a NUL byte (byte ", nul, " of its ",
                 text.size(), ")");
}

void check_self_test_data(const Message& model, const Field& field) {
  Message message(model.bytes(), model.file(), "self_test_data", field.begin, field.end);
  uint32_t seen = 0;
  size_t samples = 0;
  Field inner;
  while (message.next(inner)) {
    if (!known(message, inner, kSelfTestFields, seen)) continue;
    Message sample(model.bytes(), model.file(), "self_test_data.samples[" + std::to_string(samples++) + "]",
                   inner.begin, inner.end);
    uint32_t sample_seen = 0;
    Field text;
    while (sample.next(text)) known(sample, text, kSampleFields, sample_seen);
  }
}

// darts-clone's double-array unit (darts.h, DoubleArrayUnit): a leaf unit
// has bit 31 set, which no byte label matches.
bool has_leaf(uint32_t unit) { return ((unit >> 8) & 1) == 1; }
uint32_t leaf_value(uint32_t unit) { return unit & 0x7FFFFFFF; }
uint32_t label(uint32_t unit) { return unit & (0x80000000u | 0xFF); }
uint32_t offset(uint32_t unit) { return (unit >> 10) << ((unit & (1u << 9)) >> 6); }

// precompiled_charsmap: [trie size in bytes, u32 little-endian][the trie's
// units][NUL-terminated replacement strings] (normalizer.cc,
// DecodePrecompiledCharsMap). For each byte of a text, libsentencepiece's
// normalizer (darts-clone's commonPrefixSearch) moves from the unit at
// `pos` to pos ^ offset(unit) ^ byte, and that unit is a child if its label
// is the byte; a child with has_leaf has a rule whose replacement starts at
// leaf_value(unit at child ^ offset(child)) in the strings. None of it is
// bounds-checked, and any byte may come, so every node reachable from the
// root (unit 0) by any byte string is checked: its 256 possible children
// inside the trie, its leaf's string inside the blob, and at most 32 leaves
// on any path. Each node is visited once, in O(units x 256) in all.
size_t check_charsmap(const Message& spec, const Field& field) {
  const std::string_view blob = spec.bytes().substr(field.begin, field.end - field.begin);
  if (blob.size() < 8)
    spec.fail(field.begin, "precompiled_charsmap is ", blob.size(),
              " bytes; expected at least 8 (a 4-byte trie size and the trie's root unit)");
  const size_t trie_bytes = load_u32(blob, 0);
  if (trie_bytes == 0 || trie_bytes % 4 != 0)
    spec.fail(field.begin, "precompiled_charsmap's trie size is ", trie_bytes,
              " bytes; expected a positive multiple of 4 (4-byte units)");
  if (trie_bytes > blob.size() - 4)
    spec.fail(field.begin, "precompiled_charsmap's trie size is ", trie_bytes, " bytes but only ",
              blob.size() - 4, " follow the size");
  const size_t units = trie_bytes / 4;
  const std::string_view strings = blob.substr(4 + trie_bytes);
  // A replacement is read up to its NUL: it must come before the blob ends.
  const size_t last_nul = strings.rfind('\0');
  const auto unit = [&](size_t pos) { return load_u32(blob, 4 + 4 * pos); };
  const auto unit_offset = [&](size_t pos) { return field.begin + 4 + 4 * pos; };

  // Per unit: 0 not reached, 1 on the current path, 2 + n done, with at most
  // n leaves on a path from it (n <= 32 fits a byte).
  std::vector<uint8_t> state(units, 0);
  struct Node {
    size_t pos;
    size_t base;
    unsigned next_label;
    unsigned most_leaves;  // of the children done so far
  };
  std::vector<Node> path;
  const auto enter = [&](size_t pos) {
    const uint32_t u = unit(pos);
    const size_t base = pos ^ offset(u);
    if ((base | 0xFF) >= units)
      spec.fail(unit_offset(pos), "precompiled_charsmap's trie unit ", pos, " (", hex(u), ") leads to units ",
                base & ~size_t{0xFF}, "..", base | 0xFF, ", past the trie's ", units, " units");
    if (pos != 0 && has_leaf(u)) {
      const uint32_t value = leaf_value(unit(base));
      if (value >= strings.size() || last_nul == std::string_view::npos || value > last_nul)
        spec.fail(unit_offset(base), "precompiled_charsmap's trie leaf unit ", base, " has value ", value,
                  value >= strings.size() ? ", past the end of the " : ", whose string has no NUL in the ",
                  strings.size(), " bytes of replacement strings");
    }
    state[pos] = 1;
    path.push_back({pos, base, 0, 0});
  };

  enter(0);
  while (!path.empty()) {
    Node& node = path.back();
    size_t child = 0;
    bool found = false;
    while (!found && node.next_label <= 0xFF) {
      const unsigned byte = node.next_label++;
      child = node.base ^ byte;
      found = label(unit(child)) == byte;
    }
    if (found) {
      if (state[child] == 1)
        spec.fail(unit_offset(child), "precompiled_charsmap's trie has a cycle through unit ", child);
      if (state[child] == 0) {
        enter(child);  // invalidates `node`
      } else {
        node.most_leaves = std::max(node.most_leaves, unsigned(state[child] - 2));
      }
      continue;
    }
    const unsigned leaves = node.most_leaves + (node.pos != 0 && has_leaf(unit(node.pos)) ? 1 : 0);
    if (leaves > kMaxPrefixMatches)
      spec.fail(unit_offset(node.pos), "precompiled_charsmap's trie has paths through unit ", node.pos,
                " on which a text matches ", leaves, " rules; libsentencepiece has room for ",
                kMaxPrefixMatches);
    state[node.pos] = uint8_t(2 + leaves);
    path.pop_back();
    if (!path.empty()) path.back().most_leaves = std::max(path.back().most_leaves, leaves);
  }
  return units;
}

// The number of trie units of the spec's charsmap (0 for none: the
// normalizer then applies no rules).
size_t check_normalizer_spec(const Message& model, const Field& field, const char* name) {
  Message message(model.bytes(), model.file(), name, field.begin, field.end);
  uint32_t seen = 0;
  size_t units = 0;
  Field inner;
  while (message.next(inner)) {
    if (known(message, inner, kNormalizerFields, seen) && inner.number == 2 && inner.begin != inner.end)
      units = check_charsmap(message, inner);
  }
  return units;
}

}  // namespace

SentencePieceModelSummary check_sentencepiece_model(std::string_view bytes, const std::string& file) {
  if (bytes.size() > kMaxFileBytes)
    throw_error(file, ": not a valid SentencePiece model: ", bytes.size(), " bytes, over the ", kMaxFileBytes,
                "-byte limit");
  Message model(bytes, file, "ModelProto", 0, bytes.size());
  SentencePieceModelSummary summary;
  uint32_t seen = 0;
  Field field;
  while (model.next(field)) {
    if (!known(model, field, kModelFields, seen)) continue;
    switch (field.number) {
      case 1: check_piece(model, field, summary.pieces++); break;
      case 2: skim(model, field, "trainer_spec"); break;
      case 3:
        summary.normalizer_trie_units = check_normalizer_spec(model, field, "normalizer_spec");
        break;
      case 4: check_self_test_data(model, field); break;
      case 5:
        summary.denormalizer_trie_units = check_normalizer_spec(model, field, "denormalizer_spec");
        break;
    }
  }
  if (summary.pieces == 0) model.fail(bytes.size(), "no pieces (field 1); a model needs at least one");
  return summary;
}

std::string read_sentencepiece_model(const std::string& path) {
  std::error_code error;
  const uintmax_t size = std::filesystem::file_size(path, error);
  if (error) throw_error(path, ": cannot be read as a SentencePiece model (", error.message(), ")");
  if (size > kMaxFileBytes)
    throw_error(path, ": is ", size, " bytes; a SentencePiece model over ", kMaxFileBytes,
                " bytes (1 GiB) is refused (real ones are under 10 MB)");
  std::ifstream in(path, std::ios::binary);
  std::string bytes(size_t(size), '\0');
  if (!in.read(bytes.data(), std::streamsize(size)))
    throw_error(path, ": cannot be read as a SentencePiece model (", size, " bytes expected, ", in.gcount(),
                " read)");
  check_sentencepiece_model(bytes, path);
  return bytes;
}

}  // namespace lowbit::text
