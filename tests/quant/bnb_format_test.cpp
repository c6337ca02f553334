// bitsandbytes' 4-bit state_dict layout: key names, JSON quant state, a
// hand-built bitsandbytes-style entry set, round trips through safetensors,
// and clear errors on malformed entries.
#include <torch/torch.h>

#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "quant/bnb_format.h"
#include "quant/quantize.h"
#include "quant/safetensors.h"
#include "tests/support/expect_error.h"
#include "tests/support/scratch_dir.h"

namespace lowbit::quant {
namespace {

torch::Tensor json_bytes(const std::string& s) {
  return torch::from_blob(const_cast<char*>(s.data()), {int64_t(s.size())}, torch::kUInt8).clone();
}

using lowbit::testing::expect_error;
using lowbit::testing::expect_error_all;

TEST(BnbFormat, KeysAndJsonFollowBitsandbytes) {
  torch::manual_seed(0);
  const torch::Tensor W = torch::randn({32, 16}).to(torch::kFloat16);
  auto [packed, state] = quantize_4bit(W);
  const StateDict sd = to_bnb_4bit(packed, state, "model.fc1.");
  std::vector<std::string> keys;
  for (const auto& kv : sd) keys.push_back(kv.first);
  EXPECT_EQ(keys, (std::vector<std::string>{
                      "model.fc1.weight", "model.fc1.weight.absmax",
                      "model.fc1.weight.nested_absmax", "model.fc1.weight.nested_quant_map",
                      "model.fc1.weight.quant_map",
                      "model.fc1.weight.quant_state.bitsandbytes__nf4"}));
  EXPECT_EQ(sd.at("model.fc1.weight").sizes(), (std::vector<int64_t>{256, 1}));
  EXPECT_EQ(sd.at("model.fc1.weight.absmax").scalar_type(), torch::kUInt8);
  EXPECT_EQ(sd.at("model.fc1.weight.nested_absmax").scalar_type(), torch::kFloat32);
  // Python's json.dumps of QuantState.as_dict's non-tensor items, in order.
  const std::string js = bnb_quant_state_json(state);
  const std::string head =
      R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [32, 16], )"
      R"("nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": )";
  ASSERT_EQ(js.substr(0, head.size()), head);
  EXPECT_EQ(nlohmann::json::parse(js)["nested_offset"].get<float>(), state.offset);
  const torch::Tensor stored = sd.at("model.fc1.weight.quant_state.bitsandbytes__nf4");
  EXPECT_EQ(std::string(static_cast<const char*>(stored.data_ptr()), size_t(stored.numel())), js);
}

// A tiny weight laid out by hand as bitsandbytes would store it (no double
// quant): codes, absmax, quant_map and JSON are written literally here.
TEST(BnbFormat, LoadsHandBuiltEntries) {
  const float nf4[16] = {-1.0f, -0.6961928009986877f, -0.5250730514526367f,
                         -0.39491748809814453f, -0.28444138169288635f, -0.18477343022823334f,
                         -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
                         0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f,
                         0.5626170039176941f, 0.7229568362236023f, 1.0f};
  StateDict sd;
  // 3 values, one block: codes 15, 0, 7 -> bytes 0xF0, 0x70 (low nibble of the pad = 7, zero).
  sd["weight"] = torch::tensor({0xF0, 0x70}, torch::kUInt8).reshape({2, 1});
  sd["weight.absmax"] = torch::tensor({2.0f});
  sd["weight.quant_map"] = torch::from_blob(const_cast<float*>(nf4), {16}, torch::kFloat32).clone();
  sd["weight.quant_state.bitsandbytes__nf4"] =
      json_bytes(R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [3]})");
  auto [packed, state] = from_bnb_4bit(sd, "", "hand-built");
  EXPECT_FALSE(state.nested);
  const torch::Tensor w = dequantize_4bit(packed, state);
  EXPECT_TRUE(torch::equal(w, torch::tensor({2.0f, -2.0f, 0.0f})));
}

TEST(BnbFormat, RoundTripThroughSafetensors) {
  torch::manual_seed(1);
  const lowbit::testing::ScratchDir dir;
  const std::string path = dir.file("bnb_roundtrip.safetensors");
  for (Format f : {Format::NF4, Format::FP4})
    for (bool dq : {true, false})
      for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
        const torch::Tensor W = torch::randn({40, 33}).to(dtype);  // odd count: padded nibble
        Quantize4bitOptions o;
        o.format = f;
        o.double_quant = dq;
        auto [packed, state] = quantize_4bit(W, o);
        save_safetensors(path, to_bnb_4bit(packed, state, "layer."));
        const SafetensorsFile file = load_safetensors(path);
        auto [p2, s2] = from_bnb_4bit(file.tensors, "layer.", path);
        EXPECT_TRUE(torch::equal(packed.reshape({-1, 1}), p2));
        EXPECT_TRUE(torch::equal(state.absmax, s2.absmax));
        EXPECT_EQ(state.offset, s2.offset);
        EXPECT_EQ(s2.shape, state.shape);
        EXPECT_EQ(s2.dtype, dtype);
        EXPECT_TRUE(torch::equal(dequantize_4bit(packed, state), dequantize_4bit(p2, s2)));
      }
}

TEST(BnbFormat, MalformedEntriesAreRefused) {
  torch::manual_seed(2);
  auto [packed, state] = quantize_4bit(torch::randn({64, 8}));
  const StateDict good = to_bnb_4bit(packed, state, "m.");
  const std::string qs = "m.weight.quant_state.bitsandbytes__nf4";
  auto with = [&](const std::string& key, torch::Tensor t) {
    StateDict sd = good;
    if (t.defined())
      sd[key] = t;
    else
      sd.erase(key);
    return sd;
  };
  expect_error([&] { from_bnb_4bit(good, "x.", "f.safetensors"); }, "not a bitsandbytes 4-bit weight");
  expect_error([&] { from_bnb_4bit(with("m.weight.absmax", {}), "m.", "f.safetensors"); },
               "f.safetensors: missing tensor 'm.weight.absmax'");
  expect_error([&] { from_bnb_4bit(with("m.weight", torch::zeros({10, 1}, torch::kUInt8)), "m.", "f"); },
               "tensor 'm.weight' has 10 elements; expected 256");
  expect_error([&] { from_bnb_4bit(with("m.weight.nested_absmax", torch::zeros({1}, torch::kFloat16)), "m.", "f"); },
               "'m.weight.nested_absmax' has dtype Half");
  expect_error([&] { from_bnb_4bit(with("m.weight.quant_map", codebook(Format::FP4)), "m.", "f"); },
               "differs from the standard table");
  expect_error([&] { from_bnb_4bit(with(qs, json_bytes("{\"quant_type\": ")), "m.", "f"); },
               "is not valid JSON");
  expect_error([&] {
    from_bnb_4bit(with(qs, json_bytes(R"({"quant_type": "nf4", "blocksize": 48, "dtype": "float32", "shape": [64, 8]})")), "m.", "f");
  }, "blocksize 48 is not supported");
  expect_error([&] {
    from_bnb_4bit(with(qs, json_bytes(R"({"quant_type": "nf4", "blocksize": 64, "dtype": "int8", "shape": [64, 8]})")), "m.", "f");
  }, "expected float32, float16 or bfloat16");
  expect_error([&] {
    from_bnb_4bit(with(qs, json_bytes(R"({"quant_type": "fp4", "blocksize": 64, "dtype": "float32", "shape": [64, 8]})")), "m.", "f");
  }, "disagrees with the key");
  StateDict both = good;
  both["m.weight.quant_state.bitsandbytes__fp4"] = good.at(qs);
  expect_error([&] { from_bnb_4bit(both, "m.", "f"); }, "both nf4 and fp4");
}

// Found while writing tests/fuzz/bnb_quant_state_fuzz: sizes in the JSON are
// checked before any arithmetic on them (the element count's product
// overflowed int64, undefined behaviour that UBSan reports), and an offset
// beyond float32's range is refused rather than converted (undefined too).
TEST(BnbFormat, QuantStateSizesThatOverflowAreRefused) {
  torch::manual_seed(3);
  auto [packed, state] = quantize_4bit(torch::randn({64, 8}));
  StateDict sd = to_bnb_4bit(packed, state, "m.");
  const std::string qs = "m.weight.quant_state.bitsandbytes__nf4";
  const std::string head = R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float32", )";
  sd[qs] = json_bytes(head + R"("shape": [4294967296, 4294967296]})");
  expect_error_all([&] { from_bnb_4bit(sd, "m.", "f.safetensors"); },
                   {"f.safetensors", "shape [4294967296,4294967296] is too large"});
  sd[qs] = json_bytes(head + R"("shape": [9223372036854775807]})");
  expect_error([&] { from_bnb_4bit(sd, "m.", "f.safetensors"); }, "its element count overflows");
  sd[qs] = json_bytes(head + R"("shape": [64, 8], "nested_blocksize": 256, )" +
                      R"("nested_dtype": "float32", "nested_offset": 1e300})");
  expect_error_all([&] { from_bnb_4bit(sd, "m.", "f.safetensors"); },
                   {"f.safetensors", "'nested_offset' must be a finite float32 number, got 1e+300"});
}

}  // namespace
}  // namespace lowbit::quant
