// SplitMix64 (Steele, Lea, Flood: "Fast splittable pseudorandom number
// generators", OOPSLA 2014): the examples' data order is a pure function of
// (seed, position) built on it, so a resumed run needs no generator state.
#pragma once

#include <cstdint>

namespace lowbit::data {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}

  uint64_t next() {
    // Constants of the paper's reference implementation.
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }

  // Uniform in [0, n) by rejection, so no value is favoured when n does not
  // divide 2^64.
  uint64_t below(uint64_t n) {
    const uint64_t limit = ~uint64_t(0) - ~uint64_t(0) % n;
    for (;;) {
      const uint64_t x = next();
      if (x < limit) return x % n;
    }
  }

 private:
  uint64_t state_;
};

// An independent stream for each (seed, index): one SplitMix64 step of the seed
// offsets the index, as the paper's `split` derives child seeds.
inline SplitMix64 stream(uint64_t seed, uint64_t index) {
  SplitMix64 mixer(seed);
  return SplitMix64(mixer.next() ^ (index * 0xd1b54a32d192ed03ull));
}

}  // namespace lowbit::data
