"""Every piece of wording the model sees, and how it is wrapped in the chat template.

Training and answering share these functions, so a QA sample looks exactly like the prompt
that `ask` builds (the reference code trained with a system prompt that inference did not use;
keeping the wording in one place rules that out).
"""

from __future__ import annotations

import json

RECITE_INSTRUCTION = "Given the context above, recite the following segment of the document."
# Plain on purpose: told "(its beginning and its end, if it is long)", SmolLM2 describes the
# document instead of answering (0 of 2 facts read back on a two-sentence document; 2 of 2
# with this header).
CONTEXT_HEADER = "Here is a document:\n\n"
QUESTION_HEADER = "\n\nAnswer the question about the document.\nQuestion: "
ELLIPSIS = "\n...\n"

GENERATOR_INSTRUCTIONS = (
    "Read the passage. Write up to {n} different question/answer pairs about the TARGET part "
    "only. Each question must be answerable from the passage alone, name what it asks about "
    "(no 'he' or 'it' without a name), and have a short answer taken from the passage. "
    'Reply with JSON only, in this form: {{"qa_list": [{{"question": "...", "answer": "..."}}]}}'
)

_BODY = "\x00LIFT_BODY\x00"

# What the system message of an adapter's prompts is (TrainSettings.system_prompt): the chat
# template's own, or an empty one.
SYSTEM_PROMPTS = ("model", "none")


class NoSystemPrompt:
    """A tokenizer whose chat template gets an empty system message where it would put its
    own (SmolLM2's "You are a helpful AI assistant named SmolLM, ..." is 20 of the 46 tokens
    of a short question's prompt); everything else is the tokenizer's. It builds prompts
    only: generation keeps the tokenizer itself."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __getattr__(self, name: str):
        return getattr(self.tokenizer, name)

    def apply_chat_template(self, messages, **kwargs):
        if not messages or messages[0]["role"] == "system":
            return self.tokenizer.apply_chat_template(messages, **kwargs)
        try:
            return self.tokenizer.apply_chat_template(
                [{"role": "system", "content": ""}, *messages], **kwargs)
        except Exception:  # a template that takes no system message: its own prompt
            return self.tokenizer.apply_chat_template(messages, **kwargs)


def prompt_tokenizer(tokenizer, system_prompt: str):
    """What builds the prompts of an adapter trained with `system_prompt` ("model" or
    "none"): training and answering must use the same."""
    return NoSystemPrompt(tokenizer) if system_prompt == "none" else tokenizer


def chat_ids(tokenizer, body: list[int]) -> list[int]:
    """Token ids of a one-turn chat whose user message is `body`, ending in the answer prompt.

    The body is spliced in as token ids, so document slices keep their exact tokens.
    """
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": _BODY}], add_generation_prompt=True, tokenize=False
    )
    before, after = text.split(_BODY)
    return encode(tokenizer, before) + list(body) + encode(tokenizer, after)


def encode(tokenizer, text: str) -> list[int]:
    """Tokenize without adding special tokens (templates add their own)."""
    return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


def question_body(tokenizer, question: str, context: list[int] | None = None) -> list[int]:
    """The user message of a question, with an optional (already truncated) document view."""
    if context is None:
        return encode(tokenizer, question.strip())
    return (
        encode(tokenizer, CONTEXT_HEADER)
        + list(context)
        + encode(tokenizer, QUESTION_HEADER + question.strip())
    )


def recite_body(tokenizer, context: list[int] | None) -> list[int]:
    """The user message of a recite sample: optional head+tail context, then the instruction."""
    prefix = (encode(tokenizer, CONTEXT_HEADER) + list(context) + encode(tokenizer, "\n\n")
              if context else [])
    return prefix + encode(tokenizer, RECITE_INSTRUCTION)


def generator_body(tokenizer, preceding: str, target: str, n: int) -> list[int]:
    """The user message asking the generator for QA pairs about `target`."""
    text = GENERATOR_INSTRUCTIONS.format(n=n) + "\n\n"
    if preceding:
        text += f"PASSAGE:\n{preceding}\n\n"
    text += f"TARGET:\n{target}"
    return encode(tokenizer, text)


def qa_json(pairs: list[tuple[str, str]]) -> str:
    """The JSON a generator is asked to write; used for demonstrations in training data."""
    return json.dumps({"qa_list": [{"question": q, "answer": a} for q, a in pairs]})
