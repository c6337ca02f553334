#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target: small valid files of each
format (corpus/<target>/), plus the recipes of configs/. Run from anywhere;
the files are committed, so this only reruns when a format grows.
(sentencepiece_model_fuzz's seeds are .model files written by lowbit's
trainer, train_sentencepiece, and by the tests' handmade_model, committed
as they came out.)"""
import gzip
import json
import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def write(target, name, data):
    path = HERE / "corpus" / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None):
    """tensors: name -> (dtype, shape, raw bytes), laid out in name order."""
    header, data = {}, b""
    for name, (dtype, shape, raw) in sorted(tensors.items()):
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


write("safetensors_fuzz", "empty", safetensors({}))
write("safetensors_fuzz", "f32_metadata", safetensors(
    {"w": ("F32", [2, 3], struct.pack("<6f", *range(6)))}, {"format": "pt"}))
write("safetensors_fuzz", "mixed", safetensors({
    "a": ("BOOL", [3], b"\x00\x01\x01"), "b": ("I64", [1], struct.pack("<q", -5)),
    "c": ("BF16", [0, 4], b""), "d": ("U8", [], b"\x07")}))

llama = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 64,
         "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
         "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
         "tie_word_embeddings": False, "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2}
write("hf_config_fuzz", "llama.json", json.dumps(llama, indent=1))
llama3 = dict(llama, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
              eos_token_id=[2, 3], head_dim=8, attention_bias=True, mlp_bias=False)
write("hf_config_fuzz", "llama3.json", json.dumps(llama3))
qwen2 = dict(llama, architectures=["Qwen2ForCausalLM"], model_type="qwen2", use_sliding_window=True,
             sliding_window=64, rope_scaling={"type": "linear", "factor": 2.0})
write("hf_config_fuzz", "qwen2.json", json.dumps(qwen2))
mistral = dict(llama, architectures=["MistralForCausalLM"], model_type="mistral", sliding_window=None,
               rope_scaling={"rope_type": "dynamic", "factor": 2.0})
write("hf_config_fuzz", "mistral.json", json.dumps(mistral))

adapter = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "bias": "none",
           "use_rslora": False, "task_type": "CAUSAL_LM", "base_model_name_or_path": "tiny",
           "target_modules": ["q_proj", "v_proj"], "fan_in_fan_out": False, "use_dora": False,
           "rank_pattern": {}, "alpha_pattern": {}, "modules_to_save": None}
write("adapter_config_fuzz", "list.json", json.dumps(adapter, indent=2))
write("adapter_config_fuzz", "regex.json", json.dumps(
    dict(adapter, target_modules="(?:.*\\.)?(?:fc1|layers\\.0\\.mlp\\..*)", use_rslora=True)))

# The [8, 16] weight at block size 64 that bnb_quant_state_fuzz.cpp supplies.
for quant_type in ("nf4", "fp4"):
    state = {"quant_type": quant_type, "blocksize": 64, "dtype": "bfloat16", "shape": [8, 16]}
    write("bnb_quant_state_fuzz", quant_type, json.dumps(state))
    write("bnb_quant_state_fuzz", quant_type + "_nested", json.dumps(dict(
        state, nested_blocksize=256, nested_dtype="float32", nested_offset=0.0125)))

for recipe in sorted((ROOT / "configs").glob("*.yaml")):
    write("recipe_fuzz", recipe.name, recipe.read_bytes())


def idx(shape, data):
    return bytes([0, 0, 8, len(shape)]) + b"".join(struct.pack(">I", d) for d in shape) + data


write("idx_fuzz", "plain", idx([2, 3, 3], bytes(range(18))))
write("idx_fuzz", "labels.gz", gzip.compress(idx([4], bytes([0, 9, 3, 1])), mtime=0))
write("idx_fuzz", "images.gz", gzip.compress(idx([1, 28, 28], bytes(784)), mtime=0))


def strfile(entries, delimiter=b"%", rotated=False):
    """The strfile_fuzz input: one length byte, the .dat index, the text."""
    text = b"".join(e + b"\n" + delimiter + b"\n" for e in entries)
    lengths = [len(e) + 1 for e in entries]
    index = struct.pack(">IIIII", 2, len(entries), max(lengths), min(lengths), 4 if rotated else 0)
    index += delimiter + b"\0\0\0"
    return bytes([len(index)]) + index + text


write("strfile_fuzz", "two", strfile([b"A fortune.", b"Another\none."]))
write("strfile_fuzz", "rot13", strfile([b"Uryyb.", b"\tgnof"], delimiter=b"#", rotated=True))

write("jsonl_fuzz", "text.jsonl", '{"text": "one"}\n\n{"text": "tw\\u00f6"}\n')
write("jsonl_fuzz", "prompt.jsonl", '{"prompt": "Q?", "response": "A."}\n{"prompt": "", "response": "B"}\n')


def byte_level(b):
    """GPT-2's byte-to-code-point table."""
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    if b in keep:
        return chr(b)
    return chr(256 + sorted(set(range(256)) - set(keep)).index(b))


def tokenizer(model, **parts):
    out = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
           "normalizer": None, "pre_tokenizer": None, "post_processor": None, "decoder": None}
    out.update(parts)
    out["model"] = model
    return json.dumps(out)


def bpe(vocab, merges, **options):
    model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
             "ignore_merges": False, "vocab": vocab, "merges": merges}
    model.update(options)
    return model


vocab = {byte_level(b): b for b in range(256)}
merges = [[byte_level(32), "t"], ["h", "e"], [byte_level(32) + "t", "he"], ["a", "b"]]
for i, (left, right) in enumerate(merges):
    vocab[left + right] = 256 + i
byte_step = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
split = {"type": "Split", "behavior": "Isolated", "invert": False,
         "pattern": {"Regex": "(?i:'s|'t)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s+"}}
write("tokenizer_fuzz", "byte_level.json", tokenizer(
    bpe(vocab, merges), normalizer={"type": "NFC"},
    pre_tokenizer={"type": "Sequence", "pretokenizers": [split, byte_step]}, decoder=byte_step,
    post_processor={"type": "Sequence", "processors": [byte_step, {
        "type": "TemplateProcessing", "pair": [],
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [261], "tokens": ["<s>"]}}}]},
    added_tokens=[{"id": 260, "content": "<s>", "single_word": False, "lstrip": False, "rstrip": False,
                   "normalized": False, "special": True},
                  {"id": 261, "content": "<s>", "single_word": False, "lstrip": True, "rstrip": False,
                   "normalized": False, "special": False}]))
space = "\u2581"
sp_vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
for i in range(256):
    sp_vocab["<0x%02X>" % i] = 3 + i
for piece in [space, "H", "e", "l", "o", "w", "r", "d", "!", space + "w", "ll", "He", "Hell", "Hello"]:
    sp_vocab[piece] = len(sp_vocab)
write("tokenizer_fuzz", "sentencepiece_style.json", tokenizer(
    bpe(sp_vocab, ["l l", "H e", "He ll", "Hell o", space + " w"], unk_token="<unk>", fuse_unk=True,
        byte_fallback=True),
    normalizer={"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": space},
                {"type": "Replace", "pattern": {"String": " "}, "content": space}]},
    decoder={"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": space}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}))
write("tokenizer_config_fuzz", "strings.json", json.dumps(
    {"bos_token": "<s>", "eos_token": "</s>", "pad_token": None, "add_bos_token": True,
     "add_eos_token": False, "model_max_length": 2048}, indent=2))
write("tokenizer_config_fuzz", "added_tokens.json", json.dumps(
    {"bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": False, "normalized": True,
                   "rstrip": False, "single_word": False},
     "eos_token": {"__type": "AddedToken", "content": "</s>", "lstrip": False, "normalized": True,
                   "rstrip": False, "single_word": False},
     "pad_token": "<pad>", "add_eos_token": True}))
