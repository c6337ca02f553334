// Options every 8-bit optimizer shares, with bitsandbytes' names and defaults:
// state precision (optim_bits, min_8bit_size, block_size) and update limits
// (percentile_clipping, max_unorm). Each optimizer's options class inherits
// the builder setters through StateOptions<Derived>.
#pragma once

#include <cstdint>

#include <torch/serialize/archive.h>

namespace lowbit::optim {

struct StateSettings {
  // 8: blockwise 8-bit states; 32: float32 states (the same update, the
  // fidelity reference).
  int64_t optim_bits = 8;
  // Tensors with fewer elements keep float32 states (bitsandbytes' default).
  int64_t min_8bit_size = 4096;
  // Elements per absmax block of the 8-bit states (a power of two, 64..4096).
  int64_t block_size = 256;
  // Clip the gradient to the p-th percentile of the last 100 gradient norms
  // (bitsandbytes' percentile_clipping, per parameter); 100 disables it.
  int64_t percentile_clipping = 100;
  // Scale the update so that ||update|| / lr <= max_unorm * ||param||
  // (bitsandbytes' max_unorm); 0 disables it.
  double max_unorm = 0.0;

  // Whether a parameter of `numel` elements gets 8-bit states, and their
  // number of absmax blocks.
  bool quantizes(int64_t numel) const { return optim_bits == 8 && numel >= min_8bit_size; }
  int64_t blocks(int64_t numel) const { return (numel + block_size - 1) / block_size; }

  // Throws naming `optimizer` and the option unless every value is valid.
  void check(const char* optimizer) const;
  void save(torch::serialize::OutputArchive& archive) const;
  // Keys missing from the archive keep their defaults.
  void load(torch::serialize::InputArchive& archive);
  bool operator==(const StateSettings& o) const {
    return optim_bits == o.optim_bits && min_8bit_size == o.min_8bit_size &&
           block_size == o.block_size && percentile_clipping == o.percentile_clipping &&
           max_unorm == o.max_unorm;
  }
};

// Builder setters and getters for StateSettings, returning Derived& so they
// chain with the optimizer's own options: AdamW8bitOptions(1e-3).optim_bits(32).
template <typename Derived>
class StateOptions {
 public:
  Derived& optim_bits(int64_t v) { return set(settings_.optim_bits, v); }
  int64_t optim_bits() const { return settings_.optim_bits; }
  Derived& min_8bit_size(int64_t v) { return set(settings_.min_8bit_size, v); }
  int64_t min_8bit_size() const { return settings_.min_8bit_size; }
  Derived& block_size(int64_t v) { return set(settings_.block_size, v); }
  int64_t block_size() const { return settings_.block_size; }
  Derived& percentile_clipping(int64_t v) { return set(settings_.percentile_clipping, v); }
  int64_t percentile_clipping() const { return settings_.percentile_clipping; }
  Derived& max_unorm(double v) { return set(settings_.max_unorm, v); }
  double max_unorm() const { return settings_.max_unorm; }

  const StateSettings& state_settings() const { return settings_; }
  StateSettings& state_settings() { return settings_; }

 private:
  template <typename T>
  Derived& set(T& field, T value) {
    field = value;
    return static_cast<Derived&>(*this);
  }
  StateSettings settings_;
};

}  // namespace lowbit::optim
