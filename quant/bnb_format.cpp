#include "quant/bnb_format.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>
#include <sstream>

namespace lowbit::quant {
namespace {

using nlohmann::json;

// bitsandbytes writes str(torch dtype) without the "torch." prefix.
const char* bnb_dtype_name(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return "float32";
    case torch::kFloat16: return "float16";
    case torch::kBFloat16: return "bfloat16";
    default: break;
  }
  TORCH_CHECK(false, "bitsandbytes 4-bit layout: original dtype ", t,
              " is not supported; expected float32, float16 or bfloat16");
}

torch::ScalarType parse_dtype(const json& v, const std::string& what, const char* key) {
  TORCH_CHECK(v.is_string(), what, ": quant state key '", key, "' must be a string");
  const std::string s = v.get<std::string>();
  if (s == "float32") return torch::kFloat32;
  if (s == "float16") return torch::kFloat16;
  if (s == "bfloat16") return torch::kBFloat16;
  TORCH_CHECK(false, what, ": quant state '", key, "' is \"", s,
              "\"; expected float32, float16 or bfloat16");
}

int64_t parse_int(const json& v, const std::string& what, const char* key) {
  TORCH_CHECK(v.is_number_integer(), what, ": quant state key '", key,
              "' must be an integer, got ", v.dump());
  return v.get<int64_t>();
}

const json& field(const json& j, const char* key, const std::string& what) {
  auto it = j.find(key);
  TORCH_CHECK(it != j.end(), what, ": quant state JSON lacks '", key, "'");
  return *it;
}

const torch::Tensor& entry(const StateDict& sd, const std::string& key, const std::string& what,
                           torch::ScalarType dtype, int64_t numel) {
  auto it = sd.find(key);
  TORCH_CHECK(it != sd.end(), what, ": missing tensor '", key, "'");
  const torch::Tensor& t = it->second;
  TORCH_CHECK(t.scalar_type() == dtype, what, ": tensor '", key, "' has dtype ", t.scalar_type(),
              "; expected ", dtype);
  TORCH_CHECK(t.numel() == numel, what, ": tensor '", key, "' has ", t.numel(),
              " elements; expected ", numel);
  return t;
}

void check_codebook(const torch::Tensor& stored, const torch::Tensor& expected,
                    const std::string& key, const std::string& what) {
  // The kernels decode with the built-in tables, so a file must carry them.
  TORCH_CHECK(torch::allclose(stored.cpu(), expected, /*rtol=*/0, /*atol=*/1e-7), what,
              ": tensor '", key, "' differs from the standard table this format decodes with");
}

// One "key": value item spaced as Python's json.dumps writes it.
std::string python_json_item(const std::string& key, const json& value) {
  std::string v;
  if (value.is_array()) {
    v = "[";
    for (size_t i = 0; i < value.size(); ++i) v += (i ? ", " : "") + value[i].dump();
    v += "]";
  } else {
    v = value.dump();
  }
  return json(key).dump() + ": " + v;
}

}  // namespace

std::string bnb_quant_state_json(const QuantState& s) {
  std::vector<std::string> items = {
      python_json_item("quant_type", format_info(s.format).name),
      python_json_item("blocksize", s.blocksize),
      python_json_item("dtype", bnb_dtype_name(s.dtype)),
      python_json_item("shape", s.shape),
  };
  if (s.nested) {
    items.push_back(python_json_item("nested_blocksize", s.nested->blocksize));
    items.push_back(python_json_item("nested_dtype", "float32"));
    items.push_back(python_json_item("nested_offset", double(s.offset)));
  }
  std::ostringstream os;
  os << "{";
  for (size_t i = 0; i < items.size(); ++i) os << (i ? ", " : "") << items[i];
  os << "}";
  return os.str();
}

StateDict to_bnb_4bit(const torch::Tensor& packed, const QuantState& state,
                      const std::string& prefix) {
  TORCH_CHECK(state.is_4bit(), "to_bnb_4bit: the state is ", format_info(state.format).name,
              "; the bitsandbytes 4-bit layout holds nf4 or fp4");
  const std::string w = prefix + "weight";
  StateDict sd;
  sd[w] = packed.reshape({-1, 1}).contiguous();
  sd[w + ".absmax"] = state.absmax.contiguous();
  sd[w + ".quant_map"] = state.code.contiguous();
  if (state.nested) {
    sd[w + ".nested_absmax"] = state.nested->absmax.contiguous();
    sd[w + ".nested_quant_map"] = state.nested->code.contiguous();
  }
  const std::string js = bnb_quant_state_json(state);
  sd[w + ".quant_state.bitsandbytes__" + format_info(state.format).name] =
      torch::from_blob(const_cast<char*>(js.data()), {int64_t(js.size())}, torch::kUInt8).clone();
  return sd;
}

std::pair<torch::Tensor, QuantState> from_bnb_4bit(const StateDict& sd, const std::string& prefix,
                                                   const std::string& what) {
  const std::string w = prefix + "weight";
  QuantState state;
  std::string json_key;
  for (Format f : {Format::NF4, Format::FP4}) {
    const std::string key = w + ".quant_state.bitsandbytes__" + format_info(f).name;
    if (sd.count(key)) {
      TORCH_CHECK(json_key.empty(), what, ": both nf4 and fp4 quant states under '", w, "'");
      json_key = key;
      state.format = f;
    }
  }
  TORCH_CHECK(!json_key.empty(), what, ": no '", w,
              ".quant_state.bitsandbytes__nf4' or '__fp4' entry: not a bitsandbytes 4-bit weight");
  const torch::Tensor& raw = sd.at(json_key);
  TORCH_CHECK(raw.scalar_type() == torch::kUInt8 && raw.dim() == 1, what, ": '", json_key,
              "' must be a 1-d uint8 tensor of JSON bytes");
  const torch::Tensor bytes = raw.contiguous();
  json j;
  try {
    j = json::parse(std::string(static_cast<const char*>(bytes.data_ptr()), size_t(bytes.numel())));
  } catch (const json::exception& e) {
    TORCH_CHECK(false, what, ": '", json_key, "' is not valid JSON: ", e.what());
  }
  TORCH_CHECK(j.is_object(), what, ": '", json_key, "' must hold a JSON object");
  const json& qt = field(j, "quant_type", what);
  TORCH_CHECK(qt == format_info(state.format).name, what, ": quant_type ", qt.dump(),
              " disagrees with the key '", json_key, "'");
  state.blocksize = parse_int(field(j, "blocksize", what), what, "blocksize");
  state.dtype = parse_dtype(field(j, "dtype", what), what, "dtype");
  const json& shape = field(j, "shape", what);
  TORCH_CHECK(shape.is_array(), what, ": quant state 'shape' must be a list");
  // The element count bounds every size computed from it ((n + 1) / 2 bytes,
  // n + blocksize - 1 for the blocks), so it stays far below int64's limit.
  constexpr int64_t kMaxNumel = std::numeric_limits<int64_t>::max() / 4;
  int64_t numel = 1;
  for (const json& d : shape) {
    const int64_t v = parse_int(d, what, "shape");
    TORCH_CHECK(v >= 0, what, ": quant state shape has a negative size ", v);
    TORCH_CHECK(v == 0 || numel <= kMaxNumel / v, what, ": quant state shape ", shape.dump(),
                " is too large; its element count overflows");
    numel *= v;
    state.shape.push_back(v);
  }
  const int64_t n = state.numel();
  check_blocksize(state.blocksize, state.format, what + ": quant state blocksize");
  const int64_t blocks = state.num_blocks();
  const bool nested = j.contains("nested_blocksize");
  const torch::Tensor& packed = entry(sd, w, what, torch::kUInt8, (n + 1) / 2);
  state.code = entry(sd, w + ".quant_map", what, torch::kFloat32, 16).contiguous();
  check_codebook(state.code, codebook(state.format), w + ".quant_map", what);
  if (nested) {
    auto ns = std::make_shared<QuantState>();
    ns->format = Format::DynamicSigned;
    ns->blocksize = parse_int(j["nested_blocksize"], what, "nested_blocksize");
    check_blocksize(ns->blocksize, ns->format, what + ": quant state nested_blocksize");
    TORCH_CHECK(parse_dtype(field(j, "nested_dtype", what), what, "nested_dtype") == torch::kFloat32,
                what, ": nested_dtype must be float32");
    const json& off = field(j, "nested_offset", what);
    TORCH_CHECK(off.is_number() && std::fabs(off.get<double>()) <= std::numeric_limits<float>::max(),
                what, ": quant state 'nested_offset' must be a finite float32 number, got ",
                off.dump());
    state.offset = float(off.get<double>());
    ns->shape = {blocks};
    ns->dtype = torch::kFloat32;
    ns->absmax = entry(sd, w + ".nested_absmax", what, torch::kFloat32, ns->num_blocks()).contiguous();
    ns->code = entry(sd, w + ".nested_quant_map", what, torch::kFloat32, 256).contiguous();
    TORCH_CHECK(kernels::codebook_is_valid(ns->code.data_ptr<float>(), 256), what, ": tensor '", w,
                ".nested_quant_map' must hold 256 ascending values in [-1, 1]");
    state.absmax = entry(sd, w + ".absmax", what, torch::kUInt8, blocks).contiguous();
    state.nested = ns;
  } else {
    state.absmax = entry(sd, w + ".absmax", what, torch::kFloat32, blocks).contiguous();
  }
  return {packed.reshape({-1, 1}).contiguous(), state};
}

StateDict to_bnb_int8(const torch::Tensor& codes, const torch::Tensor& scb,
                      const std::string& prefix) {
  TORCH_CHECK(codes.scalar_type() == torch::kInt8 && codes.dim() == 2 &&
                  scb.scalar_type() == torch::kFloat32 && scb.dim() == 1 &&
                  scb.size(0) == codes.size(0),
              "to_bnb_int8: expected int8 codes [out, in] and float32 SCB [out], got ",
              codes.scalar_type(), " ", codes.sizes(), " and ", scb.scalar_type(), " ", scb.sizes());
  StateDict sd;
  sd[prefix + "weight"] = codes.contiguous();
  sd[prefix + "SCB"] = scb.contiguous();
  sd[prefix + "weight_format"] = torch::zeros({}, torch::kUInt8);  // "row"
  return sd;
}

bool has_bnb_int8(const StateDict& entries, const std::string& prefix) {
  return entries.count(prefix + "SCB") > 0;
}

std::pair<torch::Tensor, torch::Tensor> from_bnb_int8(const StateDict& sd, const std::string& prefix,
                                                      const std::string& what) {
  const std::string w = prefix + "weight", s = prefix + "SCB", f = prefix + "weight_format";
  auto wi = sd.find(w);
  TORCH_CHECK(wi != sd.end(), what, ": missing tensor '", w, "' (the int8 codes beside '", s, "')");
  const torch::Tensor& codes = wi->second;
  TORCH_CHECK(codes.scalar_type() == torch::kInt8 && codes.dim() == 2, what, ": tensor '", w,
              "' is ", codes.scalar_type(), " ", codes.sizes(),
              "; an int8 weight is int8 [out_features, in_features]");
  auto si = sd.find(s);
  TORCH_CHECK(si != sd.end(), what, ": missing tensor '", s, "' (the row scales of '", w, "')");
  const torch::Tensor& scb = si->second;
  TORCH_CHECK(scb.scalar_type() == torch::kFloat32 && scb.dim() == 1 &&
                  scb.size(0) == codes.size(0),
              what, ": tensor '", s, "' is ", scb.scalar_type(), " ", scb.sizes(),
              "; expected float32 [", codes.size(0), "] (one absmax per row of '", w, "')");
  TORCH_CHECK(torch::isfinite(scb).all().item<bool>() && (scb >= 0).all().item<bool>(), what,
              ": tensor '", s, "' holds negative or non-finite scales");
  if (auto fi = sd.find(f); fi != sd.end()) {
    const torch::Tensor& t = fi->second;
    TORCH_CHECK(t.numel() == 1 && !t.is_floating_point() && !t.is_complex(), what, ": tensor '", f,
                "' must be one integer (bitsandbytes writes uint8 0 for \"row\"), got ",
                t.scalar_type(), " ", t.sizes());
    const int64_t format = t.item<int64_t>();
    static const char* const kTiled[] = {"col32", "col_turing", "col_ampere"};
    TORCH_CHECK(format < 1 || format > 3, what, ": '", f, "' is ", format, " (\"",
                format >= 1 && format <= 3 ? kTiled[format - 1] : "", "\"), a tiled GPU layout of ",
                "bitsandbytes before 0.45; load and save the model with a newer bitsandbytes, which ",
                "writes row-major weights");
    TORCH_CHECK(format == 0, what, ": '", f, "' is ", format,
                ", an unknown weight format; expected 0 (\"row\")");
  }
  return {codes.contiguous(), scb.contiguous()};
}

}  // namespace lowbit::quant
