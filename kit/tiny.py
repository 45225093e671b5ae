"""Build tiny stand-ins for the real checkpoints, for the demo and the tests (no hub access needed).

    python -m kit.tiny --out results/demo/models

writes `tiny-gemma2/` (a 2-layer Gemma-2 with a BPE tokenizer trained on the bundled Japanese data,
the Gemma special tokens and no chat template, like google/gemma-2-27b) and `tiny-colbert/` (a
BERT encoder in JaColBERTv2's layout). The weights are random; the loading code that reads them is
the real one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kit.io import pair_from_record, read_jsonl, run_main
from kit.settings import opt, parse_settings

ROOT = Path(__file__).resolve().parents[1]
CORPUS_FILES = ("data/sample_magpie.jsonl", "data/sample_reference_qa.jsonl", "data/sample_tasks.jsonl")
GEMMA_SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
# Prompt markers and ASCII punctuation, so that every template renders into known pieces.
EXTRA_TEXT = ["### 質問:\n### 回答:\n### 指示\n### 回答\n### Instruction:\n### Context:\n",
              "### Response:\nBelow is an Instruction that describes a task. Write a Response.",
              "あなたは優秀なAIです。質問に対して適切な回答を書いてください。 --- > # ## ###",
              "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ !?.,:;()[]{}<>\"'"]


def corpus_texts() -> list[str]:
    texts = list(EXTRA_TEXT)
    for name in CORPUS_FILES:
        for record in read_jsonl(ROOT / name):
            pair = pair_from_record(record)
            if pair:
                texts.extend(pair)
    return texts


def build_tokenizer(texts: list[str], vocab_size: int = 1200):
    """A byte-level BPE in Gemma's token set. Tokens are at most 4 characters long, so prompt
    markers and banned words are spelled by several tokens, as they are by a real tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=GEMMA_SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  max_token_length=4, show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    bos = tokenizer.token_to_id("<bos>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        unk_token="<unk>", additional_special_tokens=["<start_of_turn>", "<end_of_turn>"])


def build_tiny_gemma2(out_dir: str | Path, seed: int = 0, chat_template: bool = True) -> Path:
    """chat_template=False saves it without one, as google/gemma-2-27b ships."""
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(corpus_texts())
    if chat_template:
        tokenizer.chat_template = (ROOT / "prompts" / "gemma2_chat.jinja").read_text(encoding="utf-8")
    config = Gemma2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,  # 4 heads × 16 = 64
        max_position_embeddings=4096, sliding_window=256,
        initializer_range=0.2,  # 0.02 would make a few dozen LoRA steps barely move the loss
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, attn_implementation="eager")
    torch.manual_seed(seed)
    model = Gemma2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_tiny_colbert(out_dir: str | Path, seed: int = 0, dim: int = 128) -> Path:
    """A BERT encoder saved the way JaColBERTv2 is: HF_ColBERT architecture, a `linear.weight`
    projection beside the encoder weights, `artifact.metadata`, and a WordPiece tokenizer."""
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # A fixed vocabulary (every corpus character, alone and as a `##` continuation, sorted): a
    # trained WordPiece vocabulary breaks ties differently from run to run, and so would the
    # retrieval tests built on it.
    characters = sorted({c for text in corpus_texts() for c in text if not c.isspace()})
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]"]
    tokens = specials + characters + [f"##{c}" for c in characters]
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=False, tokenize_chinese_chars=True)
    tokenizer.save_pretrained(out_dir)
    config = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128, max_position_embeddings=512)
    torch.manual_seed(seed)
    encoder = BertModel(config, add_pooling_layer=False)
    # Make the random encoder lexical: no position/segment signal and no attention/FFN updates,
    # so a token's vector is its own (layer-normed) embedding and MaxSim matches shared tokens.
    # Random weights would rank at random; this keeps retrieval tests meaningful.
    with torch.no_grad():
        encoder.embeddings.position_embeddings.weight.zero_()
        encoder.embeddings.token_type_embeddings.weight.zero_()
        for layer in encoder.encoder.layer:
            layer.attention.output.dense.weight.zero_()
            layer.output.dense.weight.zero_()
        # Query-expansion [MASK] tokens then match every document's [SEP] equally: no bias
        # towards long documents.
        embeddings = encoder.embeddings.word_embeddings.weight
        embeddings[tokenizer.mask_token_id] = embeddings[tokenizer.sep_token_id]
        # A character inside a word is the same character: `##c` shares the vector of `c`.
        for c in characters:
            embeddings[vocab[f"##{c}"]] = embeddings[vocab[c]]
    weights = {f"bert.{name}": tensor.contiguous() for name, tensor in encoder.state_dict().items()}
    weights["linear.weight"] = torch.randn(dim, config.hidden_size) / config.hidden_size ** 0.5
    save_file(weights, out_dir / "model.safetensors", metadata={"format": "pt"})
    config_dict = config.to_dict()
    config_dict.update(architectures=["HF_ColBERT"], model_type="bert")
    (out_dir / "config.json").write_text(json.dumps(config_dict, indent=2), encoding="utf-8")
    metadata = {"dim": dim, "query_maxlen": 32, "doc_maxlen": 180, "similarity": "cosine",
                "query_token_id": "[unused0]", "doc_token_id": "[unused1]", "attend_to_mask_tokens": False}
    (out_dir / "artifact.metadata").write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    return out_dir


@dataclass
class TinySettings:
    """where to build"""
    out: str = opt("results/demo/models", "folder for tiny-gemma2/ and tiny-colbert/")


def main(argv=None) -> None:
    out = Path(parse_settings(TinySettings, argv, prog="-m kit.tiny", doc=__doc__)[0].out)
    built = {"tiny Gemma-2": build_tiny_gemma2(out / "tiny-gemma2", chat_template=False),
             "tiny ColBERT": build_tiny_colbert(out / "tiny-colbert")}
    print("\n".join(f"{name} → {path}" for name, path in built.items()))


if __name__ == "__main__":
    run_main(main)
