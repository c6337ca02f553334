// safetensors IO: bit-exact round trips of every dtype, the writer's layout
// checked byte by byte, a file built by hand from the format description,
// every corruption the reader must refuse, and saves that fail cleanly.
#include <sys/resource.h>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <system_error>
#include <vector>

#include <torch/torch.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "quant/safetensors.h"
#include "tests/support/expect_error.h"
#include "tests/support/scratch_dir.h"

namespace lowbit::quant {
namespace {

using namespace std::string_literals;
namespace fs = std::filesystem;

using lowbit::testing::ScratchDir;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The format's length field, encoded here independently of the writer.
std::string le64(uint64_t value) {
  std::string bytes;
  for (int i = 0; i < 8; ++i) bytes.push_back(char((value >> (8 * i)) & 0xff));
  return bytes;
}

// A file image from a hand-written JSON header and hand-encoded data.
std::string image(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

// A tensor's bytes. Comparing these, not values, makes NaN payloads and the
// sign of zero count, which torch::equal would not.
std::string raw_bytes(const torch::Tensor& t) {
  const torch::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), size_t(c.numel()) * c.element_size());
}

// `fn` must throw a c10::Error whose message contains every needle.
template <typename Fn>
void expect_error(Fn&& fn, const std::vector<std::string>& needles) {
  testing::expect_error_all<c10::Error>(fn, needles);
}

// Both entry points must refuse `bytes`, naming their source.
void expect_refused(const ScratchDir& dir, const std::string& label, const std::string& bytes,
                    std::vector<std::string> needles) {
  SCOPED_TRACE(label);
  const std::string path = dir.file(label + ".safetensors");
  dir.write(label + ".safetensors", bytes);
  needles.push_back(path);
  expect_error([&] { load_safetensors(path); }, needles);
  needles.back() = "memory image";
  expect_error(
      [&] {
        parse_safetensors(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                          "memory image");
      },
      needles);
}

void expect_same_tensors(const std::map<std::string, torch::Tensor>& expected,
                         const std::map<std::string, torch::Tensor>& actual) {
  ASSERT_EQ(expected.size(), actual.size());
  for (const auto& [name, want] : expected) {
    SCOPED_TRACE(name);
    ASSERT_EQ(actual.count(name), 1u);
    const torch::Tensor& got = actual.at(name);
    EXPECT_EQ(got.scalar_type(), want.scalar_type());
    EXPECT_EQ(got.sizes(), want.sizes());
    EXPECT_TRUE(got.is_contiguous());
    EXPECT_EQ(raw_bytes(got), raw_bytes(want));
  }
}

// A valid file: "a" F32 [1, 2] at [0, 8), "b" I16 [1, 2] at [8, 12).
const std::string kValidHeader =
    R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
    R"("b":{"dtype":"I16","shape":[2],"data_offsets":[8,12]}})";
const std::string kValidData = "\x00\x00\x80\x3f\x00\x00\x00\x40\x01\x00\x02\x00"s;

// Values at the edges of each dtype: extremes, signed zero, inf and NaN.
std::map<std::string, torch::Tensor> edge_tensors() {
  using F = std::numeric_limits<double>;
  const torch::Tensor floats = torch::tensor(
      {0.0, -0.0, 1.5, -3.25, F::infinity(), -F::infinity(), F::quiet_NaN(), F::denorm_min(),
       1e300, -65504.0, 3.0e38, 1.0 / 3.0},
      torch::kFloat64);
  std::map<std::string, torch::Tensor> tensors;
  auto add = [&](const std::string& dtype, const torch::Tensor& values) {
    // A transposed view, so the writer must make it contiguous.
    tensors[dtype + "_matrix"] = values.reshape({3, 4}).t();
    tensors[dtype + "_scalar"] = values[2].clone();
    tensors[dtype + "_empty"] = values.narrow(0, 0, 0).reshape({2, 0, 3});
  };
  add("F64", floats);
  add("F32", floats.to(torch::kFloat32));
  add("F16", floats.to(torch::kFloat16));
  add("BF16", floats.to(torch::kBFloat16));
  auto ints = [](auto lo, auto hi, torch::ScalarType type) {
    return torch::tensor({int64_t(lo), int64_t(hi), int64_t(0), int64_t(1), int64_t(-1),
                          int64_t(lo) + 1, int64_t(hi) - 1, int64_t(7), int64_t(42),
                          int64_t(-42), int64_t(100), int64_t(-100)},
                         torch::kInt64)
        .to(type);
  };
  add("I64", ints(INT64_MIN, INT64_MAX, torch::kInt64));
  add("I32", ints(INT32_MIN, INT32_MAX, torch::kInt32));
  add("I16", ints(INT16_MIN, INT16_MAX, torch::kInt16));
  add("I8", ints(INT8_MIN, INT8_MAX, torch::kInt8));
  add("U8", torch::arange(0, 256, 23, torch::kInt64).to(torch::kUInt8));
  add("BOOL", torch::arange(12, torch::kInt64).remainder(3).eq(0));
  return tensors;
}

TEST(Safetensors, RoundTripAllDtypes) {
  ScratchDir dir;
  const auto tensors = edge_tensors();
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"empty", ""}, {"unicode", "\xc3\xbc\xe2\x82\xac"}};
  const std::string path = dir.file("all.safetensors");
  save_safetensors(path, tensors, metadata);

  const SafetensorsFile loaded = load_safetensors(path);
  expect_same_tensors(tensors, loaded.tensors);
  EXPECT_EQ(loaded.metadata, metadata);
  EXPECT_EQ(loaded.tensors.at("F32_scalar").dim(), 0);
  EXPECT_EQ(loaded.tensors.at("F32_empty").numel(), 0);

  // The saved file is exactly what serialize_safetensors describes, and
  // parsing that image gives the same tensors as loading the file.
  const std::string bytes = serialize_safetensors(tensors, metadata);
  EXPECT_EQ(read_file(path), bytes);
  const SafetensorsFile parsed = parse_safetensors(
      reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "image");
  expect_same_tensors(tensors, parsed.tensors);
  EXPECT_EQ(parsed.metadata, metadata);
}

TEST(Safetensors, HeaderIsAlignedAndLittleEndian) {
  const std::map<std::string, torch::Tensor> tensors = {
      {"x", torch::tensor({1.0f, -2.0f})},
      {"y", torch::tensor(int64_t(0x0102)).to(torch::kInt16)},
      {"e", torch::empty({0}, torch::kFloat64)}};
  const std::string bytes = serialize_safetensors(tensors, {{"k", "v"}});
  ASSERT_GE(bytes.size(), 8u);
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | uint8_t(bytes[i]);
  EXPECT_EQ((8 + length) % 8, 0u);

  // 2 + 4 + 4 data bytes follow the header (x F32[2], y I16 scalar, e empty).
  ASSERT_EQ(bytes.size(), 8 + length + 10);
  const std::string header = bytes.substr(8, length);
  const size_t json_end = header.find_last_not_of(' ') + 1;
  EXPECT_LT(length - json_end, 8u) << "padding longer than alignment needs";
  const auto fields = nlohmann::json::parse(header);
  EXPECT_EQ(fields["__metadata__"], nlohmann::json({{"k", "v"}}));
  // The writer lays tensors out by name: e, x, y.
  EXPECT_EQ(fields["e"], nlohmann::json::parse(
                           R"({"dtype":"F64","shape":[0],"data_offsets":[0,0]})"));
  EXPECT_EQ(fields["x"], nlohmann::json::parse(
                           R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})"));
  EXPECT_EQ(fields["y"], nlohmann::json::parse(
                           R"({"dtype":"I16","shape":[],"data_offsets":[8,10]})"));
  // IEEE-754 1.0f = 0x3f800000, -2.0f = 0xc0000000, 0x0102, all little-endian.
  EXPECT_EQ(bytes.substr(8 + length), "\x00\x00\x80\x3f\x00\x00\x00\xc0\x02\x01"s);
}

TEST(Safetensors, LoadsHandBuiltFile) {
  ScratchDir dir;
  // Keys out of data order, whitespace, no padding: what other writers may emit.
  const std::string header = R"({
    "__metadata__": {"format": "pt"},
    "w": {"dtype": "BF16", "shape": [2], "data_offsets": [12, 16]},
    "h": {"dtype": "F16", "shape": [1, 2], "data_offsets": [8, 12]},
    "i": {"dtype": "I64", "shape": [], "data_offsets": [0, 8]},
    "m": {"dtype": "BOOL", "shape": [3], "data_offsets": [16, 19]},
    "e": {"dtype": "F32", "shape": [0, 5], "data_offsets": [19, 19]},
    "u": {"dtype": "U8", "shape": [2], "data_offsets": [19, 21]}
  })";
  ASSERT_NE((8 + header.size()) % 8, 0u) << "meant to test an unaligned data buffer";
  // i = -2 (two's complement); h = F16 1.0 (0x3c00), -2.0 (0xc000);
  // w = BF16 1.0 (0x3f80), -0.5 (0xbf00); m = true, false, true; u = 0, 255.
  const std::string data =
      "\xfe\xff\xff\xff\xff\xff\xff\xff"
      "\x00\x3c\x00\xc0"
      "\x80\x3f\x00\xbf"
      "\x01\x00\x01"
      "\x00\xff"s;
  const std::string path = dir.file("hand.safetensors");
  dir.write("hand.safetensors", image(header, data));

  const SafetensorsFile file = load_safetensors(path);
  const std::map<std::string, torch::Tensor> expected = {
      {"i", torch::tensor(int64_t(-2))},
      {"h", torch::tensor({1.0f, -2.0f}).to(torch::kFloat16).reshape({1, 2})},
      {"w", torch::tensor({1.0f, -0.5f}).to(torch::kBFloat16)},
      {"m", torch::tensor({true, false, true})},
      {"e", torch::empty({0, 5}, torch::kFloat32)},
      {"u", torch::tensor({0, 255}, torch::kInt64).to(torch::kUInt8)}};
  expect_same_tensors(expected, file.tensors);
  EXPECT_EQ(file.tensors.at("i").item<int64_t>(), -2);
  EXPECT_EQ(file.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
}

TEST(Safetensors, RefusesTruncatedFiles) {
  ScratchDir dir;
  const std::string full = image(kValidHeader, kValidData);
  const size_t n = kValidHeader.size();
  const struct {
    size_t cut;
    std::vector<std::string> needles;
  } cases[] = {
      {0, {"8-byte header length"}},
      {5, {"8-byte header length"}},
      {7, {"8-byte header length"}},
      {8, {"header length", "truncated"}},
      {8 + n / 2, {"header length", "truncated"}},
      {8 + n - 1, {"header length", "truncated"}},
      // The header is whole, so the first tensor past the end is named.
      {8 + n, {"tensor 'a'", "beyond the 0-byte data buffer"}},
      {8 + n + 3, {"tensor 'a'", "beyond the 3-byte data buffer"}},
      {full.size() - 1, {"tensor 'b'", "beyond the 11-byte data buffer"}},
  };
  for (const auto& c : cases) {
    expect_refused(dir, "cut" + std::to_string(c.cut), full.substr(0, c.cut), c.needles);
  }
}

TEST(Safetensors, RefusesCorruptLengthField) {
  ScratchDir dir;
  const uint64_t n = kValidHeader.size();
  const std::string rest = kValidHeader + kValidData;
  // One byte more takes the data's first byte (0x00) into the JSON.
  expect_refused(dir, "plus1", le64(n + 1) + rest, {"not valid JSON"});
  expect_refused(dir, "minus1", le64(n - 1) + rest, {"not valid JSON"});
  expect_refused(dir, "huge", le64(UINT64_MAX) + rest, {"100000000-byte limit"});
  expect_refused(dir, "past_end", le64(1000) + rest, {"header length 1000", "truncated"});
  std::string big_endian = le64(n);
  std::reverse(big_endian.begin(), big_endian.end());
  expect_refused(dir, "big_endian", big_endian + rest, {"100000000-byte limit"});
}

TEST(Safetensors, RefusesBadJson) {
  ScratchDir dir;
  expect_refused(dir, "cut_json", image(R"({"a": )", ""), {"not valid JSON"});
  expect_refused(dir, "empty_json", image("", ""), {"not valid JSON"});
  expect_refused(dir, "trailing", image(R"({} x)", ""), {"not valid JSON"});
  // nlohmann alone would stop at the NUL and accept the "{}" before it.
  expect_refused(dir, "nul", image("{}\x00{\"junk\""s, ""), {"NUL byte at header offset 2"});
  expect_refused(dir, "bad_utf8", image("{\"\xff\": 1}", ""), {"not valid JSON"});
  expect_refused(dir, "array", image("[1, 2]", ""), {"must be a JSON object", "array"});
  expect_refused(dir, "string", image(R"("x")", ""), {"must be a JSON object", "string"});
}

TEST(Safetensors, RefusesMalformedEntries) {
  ScratchDir dir;
  auto one = [](const std::string& info) { return image(R"({"t":)" + info + "}", ""); };
  const struct {
    const char* label;
    std::string info;
    const char* needle;
  } cases[] = {
      {"not_object", "3", "expected an object"},
      {"no_dtype", R"({"shape":[],"data_offsets":[0,0]})", "missing \"dtype\""},
      {"no_shape", R"({"dtype":"F32","data_offsets":[0,0]})", "missing \"shape\""},
      {"no_offsets", R"({"dtype":"F32","shape":[0]})", "missing \"data_offsets\""},
      {"dtype_number", R"({"dtype":5,"shape":[0],"data_offsets":[0,0]})", "must be a string"},
      {"shape_string", R"({"dtype":"F32","shape":"2","data_offsets":[0,0]})",
       "\"shape\" must be an array"},
      {"shape_negative", R"({"dtype":"F32","shape":[-1],"data_offsets":[0,0]})",
       "shape entry -1 is not a non-negative integer"},
      {"shape_fraction", R"({"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})",
       "shape entry 2.0 is not"},
      {"shape_text", R"({"dtype":"F32","shape":["2"],"data_offsets":[0,8]})",
       "shape entry \"2\" is not"},
      // 2^32 * 2^32 = 2^64 elements; a zero dim does not hide it from strides.
      {"shape_overflow",
       R"({"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]})",
       "overflows int64"},
      {"dim_overflow", R"({"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,0]})",
       "overflows int64"},
      // 2^62 elements fit int64, their 2^64 F32 bytes do not.
      {"bytes_overflow", R"({"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]})",
       "byte count overflows int64"},
      {"offsets_one", R"({"dtype":"F32","shape":[0],"data_offsets":[0]})", "[begin, end]"},
      {"offsets_three", R"({"dtype":"F32","shape":[0],"data_offsets":[0,0,0]})",
       "[begin, end]"},
      {"offsets_negative", R"({"dtype":"F32","shape":[0],"data_offsets":[-1,-1]})",
       "[begin, end]"},
      {"offsets_reversed", R"({"dtype":"F32","shape":[0],"data_offsets":[8,0]})",
       "0 <= begin <= end"},
      {"offsets_fraction", R"({"dtype":"F32","shape":[0],"data_offsets":[0.0,0]})",
       "[begin, end]"},
      {"offsets_object", R"({"dtype":"F32","shape":[0],"data_offsets":{"a":0}})",
       "[begin, end]"},
  };
  for (const auto& c : cases) {
    expect_refused(dir, c.label, one(c.info), {"tensor 't'", c.needle});
  }
}

TEST(Safetensors, RefusesUnknownDtype) {
  ScratchDir dir;
  // Valid safetensors dtypes without a libtorch 1.13 type, and a near miss.
  for (const std::string dtype : {"U16", "U64", "F8_E4M3", "f32"}) {
    const std::string header =
        R"({"t":{"dtype":")" + dtype + R"(","shape":[1],"data_offsets":[0,1]}})";
    expect_refused(dir, "dtype_" + dtype, image(header, "\x00"s),
                   {"tensor 't'", "\"" + dtype + "\" is not supported",
                    "F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL"});
  }
}

TEST(Safetensors, RefusesOutOfRangeAndSizeMismatch) {
  ScratchDir dir;
  expect_refused(dir, "out_of_range",
                 image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                       kValidData),
                 {"tensor 'b'", "[8,16] end beyond the 12-byte data buffer"});
  // F32 [3] needs 12 bytes; its offsets hold 8.
  expect_refused(dir, "size_mismatch",
                 image(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"I16","shape":[2],"data_offsets":[8,12]}})",
                       kValidData),
                 {"tensor 'a'", "hold 8 bytes", "needs 12"});
}

TEST(Safetensors, RefusesOverlapsHolesAndTrailingBytes) {
  ScratchDir dir;
  expect_refused(dir, "overlap",
                 image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"I16","shape":[2],"data_offsets":[6,10]}})",
                       kValidData.substr(0, 10)),
                 {"tensor 'b' at bytes [6, 10) overlaps tensor 'a' at [0, 8)"});
  // An empty tensor sitting inside another one is an overlap too.
  expect_refused(dir, "empty_inside",
                 image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
                       kValidData.substr(0, 8)),
                 {"tensor 'z' at bytes [4, 4) overlaps tensor 'a'"});
  expect_refused(dir, "hole",
                 image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"I16","shape":[1],"data_offsets":[10,12]}})",
                       kValidData),
                 {"data bytes [8, 10) before tensor 'b' belong to no tensor"});
  expect_refused(dir, "leading_hole",
                 image(R"({"b":{"dtype":"I16","shape":[2],"data_offsets":[8,12]}})", kValidData),
                 {"data bytes [0, 8) before tensor 'b'"});
  expect_refused(dir, "trailing",
                 image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", kValidData),
                 {"data bytes [8, 12) after the last tensor"});
  expect_refused(dir, "no_tensors", image("{}", kValidData),
                 {"data bytes [0, 12) after the last tensor"});
}

TEST(Safetensors, RefusesDuplicateKeys) {
  ScratchDir dir;
  expect_refused(dir, "duplicate_tensor",
                 image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("a":{"dtype":"I16","shape":[2],"data_offsets":[8,12]}})",
                       kValidData),
                 {"key \"a\" twice"});
  expect_refused(dir, "duplicate_field",
                 image(R"({"a":{"dtype":"I16","dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                       kValidData.substr(0, 8)),
                 {"key \"dtype\" twice"});
}

TEST(Safetensors, RefusesBadMetadataAndBoolBytes) {
  ScratchDir dir;
  expect_refused(dir, "metadata_array", image(R"({"__metadata__":["a"]})", ""),
                 {"\"__metadata__\" must be an object of strings"});
  expect_refused(dir, "metadata_number", image(R"({"__metadata__":{"k":1}})", ""),
                 {"\"__metadata__\" entry \"k\" must be a string"});
  expect_refused(dir, "bool_byte",
                 image(R"({"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})",
                       "\x01\x02\x00"s),
                 {"tensor 'm'", "byte 2 at element 1", "must be 0 or 1"});
}

// Any damage must end in a c10::Error or a valid load, never a crash or an
// out-of-bounds read (run under ASan to see the latter). The seed makes the
// 2000 mutations reproducible.
TEST(Safetensors, RandomCorruptionThrowsOrLoads) {
  const std::string valid = serialize_safetensors(edge_tensors(), {{"format", "pt"}});
  std::mt19937 rng(1234);
  int refused = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    std::string bytes = valid;
    const int flips = 1 + int(rng() % 4);
    for (int i = 0; i < flips; ++i) bytes[rng() % bytes.size()] ^= char(1 + rng() % 255);
    if (trial % 4 == 0) bytes.resize(rng() % bytes.size());
    try {
      parse_safetensors(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "fuzz");
    } catch (const c10::Error& e) {
      ++refused;
      EXPECT_NE(std::string(e.what_without_backtrace()).find("fuzz"), std::string::npos)
          << e.what_without_backtrace();
    }
  }
  // Flips that land in tensor data leave a valid file, so not every trial
  // is refused; but truncations always are, so at least a quarter must be.
  EXPECT_GE(refused, 500);
}

TEST(Safetensors, RefusesMissingFileAndDirectory) {
  ScratchDir dir;
  const std::string missing = dir.file("missing.safetensors");
  expect_error([&] { load_safetensors(missing); }, {missing, "cannot open", "No such file"});
  const std::string folder = dir.file("folder.safetensors");
  fs::create_directory(folder);
  expect_error([&] { load_safetensors(folder); }, {folder, "not a regular file"});
}

TEST(Safetensors, SaveReplacesFileAndLeavesNoTemp) {
  ScratchDir dir;
  const std::string path = dir.file("w.safetensors");
  save_safetensors(path, {{"a", torch::ones({4})}});
  const std::map<std::string, torch::Tensor> second = {{"b", torch::arange(6).reshape({2, 3})}};
  save_safetensors(path, second);
  expect_same_tensors(second, load_safetensors(path).tensors);
  EXPECT_EQ(dir.names(), std::vector<std::string>{"w.safetensors"});
}

TEST(Safetensors, SaveRefusesUnsupportedTensorsBeforeWriting) {
  ScratchDir dir;
  const std::string path = dir.file("keep.safetensors");
  save_safetensors(path, {{"a", torch::ones({4})}});
  const std::string before = read_file(path);

  const struct {
    const char* label;
    std::map<std::string, torch::Tensor> tensors;
    std::map<std::string, std::string> metadata;
    std::vector<std::string> needles;
  } cases[] = {
      {"complex", {{"c", torch::zeros({2}, torch::kComplexFloat)}}, {},
       {"tensor 'c'", "ComplexFloat", "supported: F64"}},
      {"meta", {{"m", torch::empty({2}, torch::device(torch::kMeta))}}, {},
       {"tensor 'm'", "meta", "strided CPU or CUDA tensor"}},
      {"sparse", {{"s", torch::eye(2).to_sparse()}}, {}, {"tensor 's'", "strided CPU or CUDA tensor"}},
      {"undefined", {{"u", torch::Tensor()}}, {}, {"tensor 'u' is undefined"}},
      {"reserved", {{"__metadata__", torch::ones({1})}}, {}, {"reserved for metadata"}},
      {"name_utf8", {{"bad\xff", torch::ones({1})}}, {}, {"tensor name", "not valid UTF-8"}},
      {"metadata_utf8", {{"a", torch::ones({1})}}, {{"k", "\xc3"}},
       {"metadata value of 'k'", "not valid UTF-8"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.label);
    // A valid tensor beside the bad one: nothing may be written for either.
    auto tensors = c.tensors;
    tensors.emplace("ok", torch::ones({3}));
    expect_error([&] { save_safetensors(path, tensors, c.metadata); }, c.needles);
    EXPECT_EQ(read_file(path), before);
    EXPECT_EQ(dir.names(), std::vector<std::string>{"keep.safetensors"});
  }
}

// While alive, writes past `bytes` fail with EFBIG instead of raising SIGXFSZ,
// which works even for root (unlike a read-only directory).
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) : old_handler_(std::signal(SIGXFSZ, SIG_IGN)) {
    EXPECT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit_), 0);
    rlimit limit = old_limit_;
    limit.rlim_cur = bytes;
    EXPECT_EQ(::setrlimit(RLIMIT_FSIZE, &limit), 0);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &old_limit_);
    std::signal(SIGXFSZ, old_handler_);
  }

 private:
  void (*old_handler_)(int);
  rlimit old_limit_{};
};

TEST(Safetensors, FailedWriteKeepsPreviousFileAndRemovesTemp) {
  ScratchDir dir;
  const std::string path = dir.file("keep.safetensors");
  save_safetensors(path, {{"a", torch::ones({4})}});
  const std::string before = read_file(path);
  {
    // 64 KiB of data against a 4 KiB limit: the temp file is created, then a
    // write fails part way through the data.
    FileSizeLimit limit(4096);
    expect_error([&] { save_safetensors(path, {{"big", torch::zeros({16384})}}); },
                 {path, ".tmp.", "File too large"});
  }
  EXPECT_EQ(read_file(path), before);
  EXPECT_EQ(dir.names(), std::vector<std::string>{"keep.safetensors"});
}

TEST(Safetensors, FailedRenameOrMissingDirectoryLeavesNoTemp) {
  ScratchDir dir;
  // The rename cannot replace a non-empty directory, after the temp is written.
  const std::string folder = dir.file("folder.safetensors");
  fs::create_directory(folder);
  dir.write("folder.safetensors/inside", "x");
  expect_error([&] { save_safetensors(folder, {{"a", torch::ones({4})}}); },
               {folder, "cannot rename"});
  EXPECT_EQ(dir.names(), std::vector<std::string>{"folder.safetensors"});
  EXPECT_EQ(read_file(folder + "/inside"), "x");

  const std::string nowhere = dir.file("missing/w.safetensors");
  expect_error([&] { save_safetensors(nowhere, {{"a", torch::ones({4})}}); },
               {nowhere, "cannot create temp file"});
  EXPECT_EQ(dir.names(), std::vector<std::string>{"folder.safetensors"});
}

}  // namespace
}  // namespace lowbit::quant
