// The key of a parameter in torch::optim::Optimizer::state(). libtorch 1.13
// keys the map by the parameter's TensorImpl address printed as a string,
// libtorch 2.x by the address itself; state_key() hides the difference.
#pragma once

#include <sstream>
#include <string>
#include <type_traits>
#include <utility>

#include <torch/optim/optimizer.h>

namespace lowbit::optim {

// The key type of Optimizer::state() in the libtorch being compiled against.
using StateKey =
    typename std::decay_t<decltype(std::declval<torch::optim::Optimizer&>().state())>::key_type;

namespace detail {

template <typename Key>
Key make_state_key(c10::TensorImpl* impl) {
  if constexpr (std::is_same_v<Key, std::string>) {
    // Same text as libtorch's c10::guts::to_string(TensorImpl*): its
    // serialize() maps saved states to parameters through these strings.
    std::ostringstream os;
    os << impl;
    return os.str();
  } else {
    return static_cast<Key>(impl);
  }
}

}  // namespace detail

inline StateKey state_key(const torch::Tensor& param) {
  return detail::make_state_key<StateKey>(param.unsafeGetTensorImpl());
}

}  // namespace lowbit::optim
