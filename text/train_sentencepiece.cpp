#include "text/train_sentencepiece.h"

#include <filesystem>
#include <unordered_map>

#include "text/error.h"
#include "text/sentencepiece/load_module.h"

namespace lowbit::text {
namespace {

// Any fixed value makes runs repeatable; SentencePiece reserves only ~0u.
constexpr unsigned kSeed = 1234;

}  // namespace

std::string train_sentencepiece(const std::string& input_path, const std::string& model_prefix,
                                int vocab_size, const std::string& model_type,
                                const SentencePieceTraining& options) {
  if (model_type != "bpe" && model_type != "unigram")
    throw_error("train_sentencepiece: model_type is \"", model_type, "\" (supported: \"bpe\", \"unigram\")");
  if (vocab_size <= 0) throw_error("train_sentencepiece: vocab_size is ", vocab_size, ", not positive");
  if (options.num_threads < 1)
    throw_error("train_sentencepiece: num_threads is ", options.num_threads, ", not positive");
  if (!std::filesystem::is_regular_file(input_path))
    throw_error("train_sentencepiece: ", input_path, " is not a readable file");
  const std::unordered_map<std::string, std::string> flags = {
      {"input", input_path},
      {"model_prefix", model_prefix},
      {"vocab_size", std::to_string(vocab_size)},
      {"model_type", model_type},
      {"character_coverage", std::to_string(options.character_coverage)},
      {"byte_fallback", options.byte_fallback ? "true" : "false"},
      {"pad_id", options.pad_token ? "3" : "-1"},
      {"num_threads", std::to_string(options.num_threads)},
      // Every sentence, in file order: no sampling, no shuffling.
      {"input_sentence_size", "0"},
      {"shuffle_input_sentence", "false"},
      // By default text as written, as Llama's model keeps it: no NFKC.
      {"normalization_rule_name", options.normalization},
      // Spaces untouched.
      {"remove_extra_whitespaces", "false"},
      // Warnings and errors only.
      {"minloglevel", "1"},
  };
  const std::string error = sentencepiece_module::api().train(flags, kSeed);
  if (!error.empty())
    throw_error("train_sentencepiece: SentencePiece could not train on ", input_path, ": ", error);
  return model_prefix + ".model";
}

}  // namespace lowbit::text
