// SentencePiece .model files taken apart and put back together for the
// tests: a small protobuf reader and writer (the wire format of
// protobuf.dev/programming-guides/encoding, without groups), the
// precompiled_charsmap layout of sentencepiece's normalizer.cc ([u32 trie
// bytes][darts-clone units][NUL-terminated strings]) and darts-clone's unit
// bits (darts.h), so that a test can edit one unit of a real model's trie.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit::testing {

namespace protobuf {

constexpr uint32_t kVarint = 0, kLength = 2, kFixed32 = 5;

inline std::string varint(uint64_t value) {
  std::string out;
  for (; value >= 0x80; value >>= 7) out.push_back(char(0x80 | (value & 0x7F)));
  out.push_back(char(value));
  return out;
}

inline uint64_t read_varint(std::string_view bytes, size_t& pos) {
  uint64_t value = 0;
  for (int shift = 0;; shift += 7) {
    const auto byte = uint8_t(bytes.at(pos++));
    value |= uint64_t(byte & 0x7F) << shift;
    if (byte < 0x80) return value;
  }
}

// One field: its number, wire type and value bytes (a varint's bytes, a
// fixed value's bytes, or a length-delimited field's payload).
struct Field {
  uint32_t number;
  uint32_t wire;
  std::string value;
};

// The fields of a well-formed message, in order.
inline std::vector<Field> fields(std::string_view message) {
  std::vector<Field> out;
  for (size_t pos = 0; pos < message.size();) {
    const uint64_t tag = read_varint(message, pos);
    Field field{uint32_t(tag >> 3), uint32_t(tag & 7), ""};
    const size_t start = pos;
    if (field.wire == kVarint) {
      read_varint(message, pos);
    } else if (field.wire == kLength) {
      const uint64_t length = read_varint(message, pos);
      field.value = std::string(message.substr(pos, length));
      pos += length;
      out.push_back(field);
      continue;
    } else {
      pos += field.wire == kFixed32 ? 4 : 8;
    }
    field.value = std::string(message.substr(start, pos - start));
    out.push_back(field);
  }
  return out;
}

inline std::string encode(const Field& field) {
  std::string out = varint(uint64_t(field.number) << 3 | field.wire);
  if (field.wire == kLength) out += varint(field.value.size());
  return out + field.value;
}

inline std::string message(const std::vector<Field>& fields) {
  std::string out;
  for (const Field& field : fields) out += encode(field);
  return out;
}

}  // namespace protobuf

// ModelProto's fields (sentencepiece_model.proto).
constexpr uint32_t kPiecesField = 1, kNormalizerSpec = 3, kDenormalizerSpec = 5, kCharsmapField = 2;

// The precompiled_charsmap of the spec in `model`'s field `spec`; empty when absent.
inline std::string charsmap(const std::string& model, uint32_t spec = kNormalizerSpec) {
  for (const protobuf::Field& field : protobuf::fields(model))
    if (field.number == spec)
      for (const protobuf::Field& inner : protobuf::fields(field.value))
        if (inner.number == kCharsmapField) return inner.value;
  return "";
}

// `model` with the spec in field `spec` holding `blob` as its charsmap (the
// spec and the charsmap are added where missing).
inline std::string with_charsmap(const std::string& model, const std::string& blob,
                                 uint32_t spec = kNormalizerSpec) {
  std::vector<protobuf::Field> fields = protobuf::fields(model);
  bool found = false;
  for (protobuf::Field& field : fields) {
    if (field.number != spec) continue;
    found = true;
    std::vector<protobuf::Field> inner = protobuf::fields(field.value);
    bool replaced = false;
    for (protobuf::Field& f : inner)
      if (f.number == kCharsmapField) f.value = blob, replaced = true;
    if (!replaced) inner.push_back({kCharsmapField, protobuf::kLength, blob});
    field.value = protobuf::message(inner);
  }
  if (!found) fields.push_back({spec, protobuf::kLength, protobuf::encode({kCharsmapField, protobuf::kLength, blob})});
  return protobuf::message(fields);
}

// ModelProto.SentencePiece.Type values.
constexpr uint64_t kNormal = 1, kUnknown = 2;

inline protobuf::Field piece(const std::string& text, uint64_t type = kNormal, float score = 0) {
  uint32_t bits;
  std::memcpy(&bits, &score, sizeof bits);
  std::string fixed;
  for (int i = 0; i < 4; ++i) fixed.push_back(char(bits >> (8 * i)));
  return {kPiecesField, protobuf::kLength,
          protobuf::message({{1, protobuf::kLength, text}, {2, protobuf::kFixed32, fixed},
                             {3, protobuf::kVarint, protobuf::varint(type)}})};
}

// A small unigram model by hand: <unk>, then `pieces`; a normalizer_spec
// holding `charsmap` when it is not empty.
inline std::string handmade_model(const std::vector<std::string>& pieces, const std::string& charsmap = "") {
  std::vector<protobuf::Field> fields = {piece("<unk>", kUnknown)};
  for (const std::string& text : pieces) fields.push_back(piece(text, kNormal, -1.0f));
  std::string model = protobuf::message(fields);
  return charsmap.empty() ? model : with_charsmap(model, charsmap);
}

// A precompiled_charsmap opened up.
struct Charsmap {
  std::vector<uint32_t> units;
  std::string strings;

  static Charsmap parse(std::string_view blob) {
    uint32_t trie_bytes;
    std::memcpy(&trie_bytes, blob.data(), 4);
    Charsmap out;
    out.units.resize(trie_bytes / 4);
    std::memcpy(out.units.data(), blob.data() + 4, trie_bytes);
    out.strings = std::string(blob.substr(4 + trie_bytes));
    return out;
  }
  std::string blob() const {
    const auto trie_bytes = uint32_t(4 * units.size());
    std::string out(reinterpret_cast<const char*>(&trie_bytes), 4);
    out.append(reinterpret_cast<const char*>(units.data()), trie_bytes);
    return out + strings;
  }

  // darts-clone's unit fields (darts.h, DoubleArrayUnit).
  static uint32_t offset(uint32_t unit) { return (unit >> 10) << ((unit & (1u << 9)) >> 6); }
  static bool has_leaf(uint32_t unit) { return (unit >> 8) & 1; }
  // A unit with an offset below 2^21 (the only kind these tests write).
  static uint32_t node(uint32_t offset, uint8_t label, bool has_leaf) {
    return offset << 10 | uint32_t(has_leaf) << 8 | label;
  }
  static uint32_t leaf(uint32_t value) { return 0x80000000u | value; }
  // Bit 31 set: a label no byte matches, what darts-clone leaves in unused units.
  static constexpr uint32_t kUnused = 0x80000000u;

  // The unit of the node that `text` leads to from the root, as
  // commonPrefixSearch walks it; nullopt where the walk stops.
  std::optional<size_t> walk(std::string_view text) const {
    size_t pos = 0;
    for (const char c : text) {
      const size_t child = pos ^ offset(units[pos]) ^ uint8_t(c);
      if ((units[child] & (0x80000000u | 0xFF)) != uint8_t(c)) return std::nullopt;
      pos = child;
    }
    return pos;
  }
  // The unit holding the value of node `pos`'s rule.
  size_t leaf_of(size_t pos) const { return pos ^ offset(units[pos]); }
};

// A trie in which a text of `depth` a's matches a rule (replacing it with
// "b") after each a: node i sits in block i and has its children and leaf in
// block i + 1.
inline Charsmap chain_of_rules(int depth) {
  Charsmap map;
  map.units.assign(256 * size_t(depth + 2), Charsmap::kUnused);
  map.strings = std::string("b\0", 2);
  map.units[0] = Charsmap::node(256, 0, false);
  for (uint32_t i = 1; i <= uint32_t(depth); ++i) {
    const uint32_t pos = (256 * i) ^ 'a', base = 256 * (i + 1);
    map.units[pos] = Charsmap::node(pos ^ base, 'a', true);
    map.units[base] = Charsmap::leaf(0);
  }
  return map;
}

}  // namespace lowbit::testing
