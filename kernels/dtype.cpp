#include "kernels/dtype.h"

namespace lowbit::kernels {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::F16: return "float16";
    case DType::BF16: return "bfloat16";
    case DType::U8: return "uint8";
  }
  return "unknown";
}

}  // namespace lowbit::kernels
