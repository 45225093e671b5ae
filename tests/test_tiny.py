"""kit.tiny: the tiny checkpoints load through the real loaders."""


def test_tiny_gemma2_reloads_through_auto_classes(tiny_gemma2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma2)
    model = AutoModelForCausalLM.from_pretrained(tiny_gemma2, attn_implementation="eager")
    assert model.config.model_type == "gemma2" and model.config.head_dim == 16
    assert model.config.vocab_size == len(tokenizer)
    for token in ("<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"):
        assert tokenizer.convert_tokens_to_ids(token) != tokenizer.unk_token_id
    ids = tokenizer("今日は良い天気です", return_tensors="pt").input_ids
    assert ids[0, 0].item() == tokenizer.bos_token_id
    text = tokenizer.apply_chat_template([{"role": "user", "content": "こんにちは"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text == "<bos><start_of_turn>user\nこんにちは<end_of_turn>\n<start_of_turn>model\n"
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer)) and torch.isfinite(logits).all()
