#include "quant/quantize.h"

#include "quant/tensor_buffer.h"

namespace lowbit::quant {
namespace {

// Validates a tensor to be quantized and returns it detached and contiguous
// (a non-contiguous input is copied).
torch::Tensor prepare_input(const torch::Tensor& A, const char* op) {
  TORCH_CHECK(A.defined(), op, ": the input tensor is undefined");
  const auto t = A.scalar_type();
  TORCH_CHECK(t == torch::kFloat32 || t == torch::kFloat16 || t == torch::kBFloat16, op,
              ": the input has dtype ", t, "; expected float32, float16 or bfloat16");
  torch::Tensor c = A.detach().contiguous();
  TORCH_CHECK(c.numel() == 0 || torch::isfinite(c).all().item<bool>(), op,
              ": the input contains inf or nan; blockwise quantization needs finite values");
  return c;
}

// The codebook as a contiguous CPU tensor (validated on the host; the kernels
// take it to their device).
torch::Tensor checked_code(const torch::Tensor& code, int64_t entries, const char* op) {
  TORCH_CHECK(code.defined() && code.scalar_type() == torch::kFloat32 && code.dim() == 1 &&
                  code.numel() == entries,
              op, ": the codebook must be a float32 tensor of ", entries, " values, got ",
              code.defined() ? code.toString() : std::string("undefined"), " ",
              code.defined() ? code.sizes() : torch::IntArrayRef{});
  torch::Tensor c = code.cpu().contiguous();
  if (entries == 256)
    TORCH_CHECK(kernels::codebook_is_valid(c.data_ptr<float>(), 256), op,
                ": the codebook must hold 256 finite, strictly ascending values in [-1, 1]");
  return c;
}

std::vector<int64_t> shape_of(const torch::Tensor& t) { return t.sizes().vec(); }

torch::TensorOptions on(const torch::Tensor& t, torch::ScalarType dtype) {
  return torch::TensorOptions().dtype(dtype).device(t.device());
}

// Checks that `t` lives where `codes` does (a QuantState travels with its codes).
void check_with_codes(const torch::Tensor& t, const torch::Tensor& codes, const char* what,
                      const char* name) {
  TORCH_CHECK(t.device() == codes.device(), what, ": the state's ", name, " is on ", t.device(),
              " but the codes are on ", codes.device(),
              "; move them together (QuantState::to)");
}

// A codebook on `data`'s device (codebooks are small; they travel to the
// tensors they describe).
torch::Tensor code_for(const torch::Tensor& code, const torch::Tensor& data) {
  return code.to(data.device()).contiguous();
}

}  // namespace

void check_state(const torch::Tensor& codes, const QuantState& state, const char* what) {
  const FormatInfo& info = format_info(state.format);
  const int64_t n = state.numel();
  check_blocksize(state.blocksize, state.format, std::string(what) + ": state blocksize");
  TORCH_CHECK(codes.defined() && codes.scalar_type() == torch::kUInt8, what,
              ": the codes must be a uint8 tensor");
  const int64_t expect_codes = info.bits == 4 ? (n + 1) / 2 : n;
  TORCH_CHECK(codes.numel() == expect_codes, what, ": the codes hold ", codes.numel(),
              " values; a tensor of shape ", torch::IntArrayRef(state.shape), " needs ",
              expect_codes);
  const int64_t entries = info.bits == 4 ? 16 : 256;
  TORCH_CHECK(state.code.defined() && state.code.scalar_type() == torch::kFloat32 &&
                  state.code.numel() == entries,
              what, ": the state's codebook must be float32 with ", entries, " values");
  TORCH_CHECK(state.absmax.defined() && state.absmax.numel() == state.num_blocks(), what,
              ": the state's absmax has ", state.absmax.defined() ? state.absmax.numel() : 0,
              " values; expected one per block (", state.num_blocks(), ")");
  check_with_codes(state.absmax, codes, what, "absmax");
  if (state.nested) {
    TORCH_CHECK(state.absmax.scalar_type() == torch::kUInt8, what,
                ": a double-quantized absmax must be uint8 codes");
    TORCH_CHECK(state.nested->numel() == state.num_blocks() && !state.nested->nested, what,
                ": the nested state must describe the ", state.num_blocks(),
                " absmax values with one level of quantization");
    check_state(state.absmax, *state.nested, what);
  } else {
    TORCH_CHECK(state.absmax.scalar_type() == torch::kFloat32, what,
                ": the state's absmax must be float32, got ", state.absmax.scalar_type());
  }
}

std::pair<torch::Tensor, QuantState> quantize_blockwise(const torch::Tensor& A,
                                                        const BlockwiseOptions& options) {
  TORCH_CHECK(A.defined(), "quantize_blockwise: the input tensor is undefined");
  return quantize_blockwise(A, options, *backend_for(A, "quantize_blockwise: the input"));
}

std::pair<torch::Tensor, QuantState> quantize_blockwise(const torch::Tensor& A,
                                                        const BlockwiseOptions& options,
                                                        kernels::Backend& backend) {
  const char* op = "quantize_blockwise";
  TORCH_CHECK(format_info(options.format).bits == 8, op, ": format '",
              format_info(options.format).name, "' is not an 8-bit format");
  check_blocksize(options.blocksize, options.format, std::string(op) + ": blocksize");
  const torch::Tensor x = prepare_input(A, op);
  QuantState state;
  state.format = options.format;
  state.blocksize = options.blocksize;
  state.code = checked_code(options.code.defined() ? options.code : codebook(options.format), 256, op);
  state.shape = shape_of(A);
  state.dtype = A.scalar_type();
  state.absmax = torch::empty({state.num_blocks()}, on(x, torch::kFloat32));
  torch::Tensor codes = torch::empty(A.sizes(), on(x, torch::kUInt8));

  TensorBuffer xb(backend, x, true), cb(backend, code_for(state.code, x), true);
  TensorBuffer ab(backend, state.absmax, false), qb(backend, codes, false);
  backend.quantize_blockwise(xb.buffer(), kernel_dtype(x.scalar_type(), "input"), size_t(x.numel()),
                             int(options.blocksize), cb.buffer(), ab.buffer(), qb.buffer(),
                             {options.stochastic, options.seed});
  ab.download();
  qb.download();
  return {codes, state};
}

torch::Tensor dequantize_blockwise(const torch::Tensor& codes, const QuantState& state) {
  TORCH_CHECK(codes.defined(), "dequantize_blockwise: the codes are undefined");
  return dequantize_blockwise(codes, state, *backend_for(codes, "dequantize_blockwise: the codes"));
}

torch::Tensor dequantize_blockwise(const torch::Tensor& codes, const QuantState& state,
                                   kernels::Backend& backend) {
  const char* op = "dequantize_blockwise";
  TORCH_CHECK(!state.is_4bit(), op, ": the state is ", format_info(state.format).name,
              "; use dequantize_4bit");
  check_state(codes, state, op);
  const torch::Tensor absmax = dequantize_absmax(state, backend);
  torch::Tensor out = torch::empty(state.shape, on(codes, state.dtype));
  TensorBuffer qb(backend, codes.contiguous(), true), ab(backend, absmax, true);
  TensorBuffer cb(backend, code_for(state.code, codes), true), ob(backend, out, false);
  backend.dequantize_blockwise(qb.buffer(), ab.buffer(), cb.buffer(), size_t(state.numel()),
                               int(state.blocksize), ob.buffer(), kernel_dtype(state.dtype, "output"));
  ob.download();
  return out;
}

torch::Tensor dequantize_absmax(const QuantState& state) {
  TORCH_CHECK(state.absmax.defined(), "dequantize_absmax: the state has no absmax");
  return dequantize_absmax(state, *backend_for(state.absmax, "dequantize_absmax: the absmax"));
}

torch::Tensor dequantize_absmax(const QuantState& state, kernels::Backend& backend) {
  if (!state.nested) return state.absmax.contiguous();
  const QuantState& nested = *state.nested;
  torch::Tensor out = torch::empty({state.num_blocks()}, on(state.absmax, torch::kFloat32));
  torch::Tensor nested_absmax = dequantize_absmax(nested, backend);
  TensorBuffer qb(backend, state.absmax.contiguous(), true), ab(backend, nested_absmax, true);
  TensorBuffer cb(backend, code_for(nested.code, state.absmax), true), ob(backend, out, false);
  // absmax = dequant(codes) + offset, two float32 roundings as in bitsandbytes.
  backend.dequantize_blockwise(qb.buffer(), ab.buffer(), cb.buffer(), size_t(out.numel()),
                               int(nested.blocksize), ob.buffer(), kernels::DType::F32,
                               state.offset);
  ob.download();
  return out;
}

std::pair<torch::Tensor, QuantState> quantize_4bit(const torch::Tensor& A,
                                                   const Quantize4bitOptions& options) {
  TORCH_CHECK(A.defined(), "quantize_4bit: the input tensor is undefined");
  return quantize_4bit(A, options, *backend_for(A, "quantize_4bit: the input"));
}

std::pair<torch::Tensor, QuantState> quantize_4bit(const torch::Tensor& A,
                                                   const Quantize4bitOptions& options,
                                                   kernels::Backend& backend) {
  const char* op = "quantize_4bit";
  const kernels::Format4 format4 = to_format4(options.format);
  check_blocksize(options.blocksize, options.format, std::string(op) + ": blocksize");
  if (options.double_quant)
    check_blocksize(options.nested_blocksize, Format::DynamicSigned,
                    std::string(op) + ": nested_blocksize");
  const torch::Tensor x = prepare_input(A, op);
  QuantState state;
  state.format = options.format;
  state.blocksize = options.blocksize;
  state.code = codebook(options.format);
  state.shape = shape_of(A);
  state.dtype = A.scalar_type();
  torch::Tensor absmax = torch::empty({state.num_blocks()}, on(x, torch::kFloat32));
  torch::Tensor packed = torch::empty({(x.numel() + 1) / 2, 1}, on(x, torch::kUInt8));

  TensorBuffer xb(backend, x, true), ab(backend, absmax, false), pb(backend, packed, false);
  backend.quantize_4bit(xb.buffer(), kernel_dtype(x.scalar_type(), "input"), size_t(x.numel()),
                        int(options.blocksize), format4, ab.buffer(), pb.buffer());
  ab.download();
  pb.download();

  if (!options.double_quant) {
    state.absmax = absmax;
    return {packed, state};
  }
  // offset = mean(absmax), accumulated in double (bitsandbytes uses a float32
  // mean; the stored offset is what dequantization uses, so files interoperate).
  // Summed on the host on every device, so a CUDA quantization gives the
  // CPU's offset and therefore its codes.
  state.offset =
      absmax.numel() ? float(absmax.cpu().to(torch::kFloat64).mean().item<double>()) : 0.0f;
  BlockwiseOptions nested_options;
  nested_options.blocksize = options.nested_blocksize;
  auto [codes, nested] = quantize_blockwise(absmax - state.offset, nested_options, backend);
  state.absmax = codes;
  state.nested = std::make_shared<QuantState>(std::move(nested));
  return {packed, state};
}

torch::Tensor dequantize_4bit(const torch::Tensor& packed, const QuantState& state) {
  TORCH_CHECK(packed.defined(), "dequantize_4bit: the packed codes are undefined");
  return dequantize_4bit(packed, state, *backend_for(packed, "dequantize_4bit: the codes"));
}

torch::Tensor dequantize_4bit(const torch::Tensor& packed, const QuantState& state,
                              kernels::Backend& backend) {
  const char* op = "dequantize_4bit";
  const kernels::Format4 format4 = to_format4(state.format);
  check_state(packed, state, op);
  const torch::Tensor absmax = dequantize_absmax(state, backend);
  torch::Tensor out = torch::empty(state.shape, on(packed, state.dtype));
  TensorBuffer pb(backend, packed.contiguous(), true), ab(backend, absmax, true);
  TensorBuffer ob(backend, out, false);
  backend.dequantize_4bit(pb.buffer(), ab.buffer(), size_t(state.numel()), int(state.blocksize),
                          format4, ob.buffer(), kernel_dtype(state.dtype, "output"));
  ob.download();
  return out;
}

}  // namespace lowbit::quant
