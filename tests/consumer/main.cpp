// Quantizes a tensor to NF4, takes an AdamW8bit step and converts a model with
// typed lowbit::nn::Linear members to int8 through the installed headers and
// library, checking each (and, where lowbit has its tokenizers,
// encodes with a BPE and a SentencePiece one): proof that find_package(lowbit)
// is usable.
#include <lowbit/lora/quantize_model.h>
#include <lowbit/nn/linear.h>
#include <lowbit/optim/optim.h>
#include <lowbit/quant/metrics.h>
#include <lowbit/quant/quantize.h>

#include <torch/torch.h>

#include <iostream>
#ifdef CONSUMER_USES_TEXT
#include <lowbit/text/tokenizer.h>
#include <lowbit/text/train_sentencepiece.h>

#include <filesystem>
#include <fstream>
#endif

int main() {
  torch::manual_seed(0);
  const torch::Tensor w = torch::randn({256, 256});
  auto [packed, state] = lowbit::quant::quantize_4bit(w);
  const double err = lowbit::quant::mean_abs_error(w, lowbit::quant::dequantize_4bit(packed, state));
  std::cout << "consumer: NF4 round trip mean abs error " << err << "\n";
  if (err >= 0.08) return 1;  // NF4 block 64 on N(0,1): ~0.073 (bitsandbytes' level)

  // One AdamW8bit step through the installed optimizer headers: two uint8
  // states and one float32 absmax per 256 values each.
  torch::Tensor p = torch::randn({4096}).set_requires_grad(true);
  lowbit::optim::AdamW8bit opt({p});
  p.mutable_grad() = torch::ones({4096});
  opt.step();
  std::cout << "consumer: AdamW8bit state " << opt.state_bytes(p) << " bytes\n";
  if (opt.state_bytes(p) != 2 * 4096 + 2 * 16 * 4) return 1;

  // A model with a typed member, converted in place: the member runs int8.
  struct Net : torch::nn::Module {
    Net() { fc = register_module("fc", lowbit::nn::Linear(64, 32)); }
    lowbit::nn::Linear fc{nullptr};
  };
  auto net = std::make_shared<Net>();
  const torch::Tensor x = torch::randn({4, 64});
  const torch::Tensor y_float = net->fc(x);
  lowbit::lora::QuantizeConfig q;
  q.format = lowbit::lora::LinearFormat::Int8;
  lowbit::lora::quantize_model(*net, q);
  const double rel = ((net->fc(x) - y_float).norm() / y_float.norm()).item<double>();
  std::cout << "consumer: int8 nn::Linear relative error " << rel << "\n";
  // Row-wise int8 keeps each weight within 0.4% of its row's absmax.
  if (rel >= 0.05) return 1;

#ifdef CONSUMER_USES_TEXT
  // A byte-level BPE tokenizer.json with one merge: "ab" is one token.
  const std::string path = (std::filesystem::temp_directory_path() / "lowbit_consumer_tokenizer.json").string();
  std::ofstream(path) << R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
                             "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false}})";
  const std::vector<int32_t> ids = lowbit::text::load_tokenizer(path)->encode("ab");
  std::filesystem::remove(path);
  std::cout << "consumer: tokenizer gives " << ids.size() << " id(s)\n";
  if (ids != std::vector<int32_t>{2}) return 1;
#ifdef LOWBIT_WITH_SENTENCEPIECE
  // SentencePiece next to libtorch: their two protobuf copies must not meet.
  const auto dir = std::filesystem::temp_directory_path() / "lowbit_consumer_sentencepiece";
  std::filesystem::create_directories(dir);
  {
    std::ofstream corpus(dir / "corpus.txt");
    for (int i = 0; i < 50; ++i) corpus << "the quick brown fox " << i << " jumps over the lazy dog\n";
  }
  lowbit::text::SentencePieceTraining options;
  options.byte_fallback = false;
  const std::string model = lowbit::text::train_sentencepiece((dir / "corpus.txt").string(),
                                                              (dir / "sp").string(), 40, "bpe", options);
  const auto sp = lowbit::text::load_tokenizer(model);
  const std::string text = "the lazy fox";
  const bool round_trip = sp->decode(sp->encode(text), true) == text;
  std::filesystem::remove_all(dir);
  std::cout << "consumer: SentencePiece round trip " << round_trip << "\n";
  if (!round_trip) return 1;
#endif
#endif
  return 0;
}
