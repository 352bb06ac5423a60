from tc3.prompts import (
    INSTRUCTIONS,
    LLAMA3_CHAT_TEMPLATE,
    completion_messages,
    end_token_ids,
    ensure_chat_template,
    prompt_ids,
    prompt_messages,
    render_prompt,
    user_turn,
)
from transformers import AutoTokenizer

TITLE = "The Prophet"


def test_user_turn_is_instruction_then_title():
    assert user_turn(f"  {TITLE} ", "pt") == f"{INSTRUCTIONS['pt']}\n\n{TITLE}"
    assert user_turn(TITLE, "en").startswith("Based on the product title")
    assert user_turn(TITLE, "Describe it.") == f"Describe it.\n\n{TITLE}"
    assert prompt_messages(TITLE, "pt") == [{"role": "user", "content": user_turn(TITLE, "pt")}]
    assert completion_messages(" A book. ") == [{"role": "assistant", "content": "A book."}]


def test_base_tokenizer_gets_llama3_template(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer.chat_template is None
    ensure_chat_template(tokenizer)
    assert tokenizer.chat_template == LLAMA3_CHAT_TEMPLATE
    assert len(tokenizer) == 1000  # its template tokens were there already: nothing added


def test_template_tokens_are_added_when_missing():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    bare = Tokenizer(models.BPE())
    bare.pre_tokenizer = pre_tokenizers.ByteLevel()
    bare.add_special_tokens(["<s>", "</s>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bare, bos_token="<s>", eos_token="</s>")
    ensure_chat_template(tokenizer)
    vocab = tokenizer.get_vocab()
    assert all(t in vocab for t in ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"))
    assert end_token_ids(tokenizer) == [vocab["</s>"], vocab["<|eot_id|>"]]
    # added as special tokens: one id each, never split
    assert tokenizer("<|eot_id|>", add_special_tokens=False)["input_ids"] == [vocab["<|eot_id|>"]]


def test_prompt_has_one_bos_and_ends_with_assistant_header(tiny_tokenizer):
    text = render_prompt(tiny_tokenizer, TITLE, "pt")
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    ids = prompt_ids(tiny_tokenizer, TITLE, "pt")
    assert ids[0] == tiny_tokenizer.bos_token_id
    assert ids.count(tiny_tokenizer.bos_token_id) == 1
    # the trap this guards against: plain tokenization of the rendered text adds a second BOS
    assert tiny_tokenizer(text)["input_ids"].count(tiny_tokenizer.bos_token_id) == 2


def test_prompt_is_prefix_of_training_sequence(tiny_tokenizer):
    """Generation feeds exactly the tokens training saw before the answer."""
    full = tiny_tokenizer.apply_chat_template(
        prompt_messages(TITLE, "pt") + completion_messages("A book of poems."), tokenize=True, return_dict=True
    )["input_ids"]
    prompt = prompt_ids(tiny_tokenizer, TITLE, "pt")
    assert full[: len(prompt)] == prompt
    assert full[-1] == tiny_tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert full.count(tiny_tokenizer.bos_token_id) == 1


def test_end_token_ids(tiny_tokenizer):
    ids = end_token_ids(tiny_tokenizer)
    assert ids[0] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.convert_tokens_to_ids("<|eot_id|>") in ids
    assert len(ids) == len(set(ids))
