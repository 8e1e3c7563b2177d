"""The offline demo base model: a tiny random Qwen2 chat model, a tokenizer trained here, and a
small general reference set for the forgetting check."""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from service.settings import DEMO_REFERENCE_FILE
from trainer.chat_templates import chatml_with_tools
from trainer.model_folder import build_once

if TYPE_CHECKING:
    from tokenizers import Tokenizer

DEMO_MODEL_NAME = "tiny-chat"
# The decoder shapes a demo model can be built with: "tiny" for CPUs, tests and `make run`;
# "small", Qwen2.5-0.5B's decoder (24 layers, 896 wide, 14 heads of 64, 2 KV heads) for GPU tests
# and benchmarks. Both use the same tokenizer, chat template and reference questions.
ARCHITECTURES: dict[str, dict[str, int]] = {
    "tiny": {
        "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
        "num_hidden_layers": 2, "intermediate_size": 512,
    },
    "small": {
        "hidden_size": 896, "num_attention_heads": 14, "num_key_value_heads": 2,
        "num_hidden_layers": 24, "intermediate_size": 4864,
    },
}  # fmt: skip
# Bump when the recipe changes: a model built by another version is rebuilt.
DEMO_MODEL_VERSION = 2  # 2: with the reference set
MARKER_FILE = "openft-demo.json"

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
# Control tokens: stripped from decoded output.
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]
# Single tokens that stay in decoded output, so a server's Hermes tool parser can see them.
TOOL_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]

VOCAB_SIZE = 3000
CORPUS_LINES = 4000
INVENTED_WORDS = 400
MAX_LENGTH = 2048
REFERENCE_EXAMPLES = 24
REFERENCE_ANSWER_TOKENS = 160  # long answers: the end-of-turn token weighs little
REFERENCE_TOPICS = ["Tell me about {}.", "Describe a {} for me.", "What do you know about {}?"]

# Word lists for the synthetic tokenizer corpus, split into lists by `_Lexicon.build`.
_NOUNS = (
    "cat dog bird house tree river city road book letter friend teacher student doctor child "
    "garden window door table chair computer phone message question answer idea story song "
    "market bank train plane car ship island mountain forest ocean weather rain snow sun moon "
    "morning evening night week month year minute hour price order ticket file report team "
    "project meeting email account password user server model data recipe kitchen coffee tea "
    "water bread apple banana orange lunch dinner school office store museum library park"
)
_VERBS = (
    "see find make take give keep help call send read write open close start stop build "
    "learn teach move carry bring choose check plan visit cook clean watch play want need "
    "like love ask tell show try use buy sell pay book cancel search convert explain"
)
_ADJECTIVES = (
    "small large quick slow bright dark warm cold happy quiet busy simple clever new old "
    "early late green blue red yellow heavy light cheap expensive friendly strange useful "
    "important careful sunny cloudy windy rainy fresh sweet"
)
_SMALL_WORDS = (
    "the a an this that these my your our their and but or so because if when while with "
    "without from to in on at by for of about after before please thanks hello yes no not "
    "very really also just today tomorrow yesterday now here there what who where why how "
    "I you we they he she it is are was were will can could would should do does did have has "
    "user assistant system tool function name arguments result"
)
_CITIES = "Paris London Tokyo Berlin Madrid Rome Lisbon Oslo Cairo Lima Sydney Toronto"
_TOOL_NAMES = "get_weather search_web convert_currency book_table send_email get_time"
_SYLLABLES = (
    "ka lo mi ra ten vor sel an ber dun fi mar tos el quin pra sho li ven gor ta nes ul bri "
    "cal dor hem ix jo ru sta wen zel ob pe tri ga mon fel ar is"
)
_PUNCTUATION = [".", "!", "?", ",", ";", ":", "...", " -", "'s"]


def create_demo_model(target: Path, *, seed: int = 0, size: str = "tiny") -> Path:
    """Build the demo model into `target` once; idempotent (a complete model already there is kept).

    Writes to a temporary sibling folder and renames it into place, so a crash never leaves half a
    model. A complete model of the current version is kept whatever seed built it.
    """
    return build_once(
        target,
        complete=lambda folder: is_complete(folder, size),
        ours=lambda folder: (folder / MARKER_FILE).exists(),
        build=lambda folder: _build(folder, seed, size),
    )


def is_complete(folder: Path, size: str = "tiny") -> bool:
    """True when `folder` holds a finished demo model of the current version and this size."""
    try:
        marker = json.loads((folder / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("version") == DEMO_MODEL_VERSION
        and marker.get("size", "tiny") == size
    )


def _build(folder: Path, seed: int, size: str) -> None:
    tokenizer = train_tokenizer(seed)
    _save_tokenizer(tokenizer, folder)
    _save_model(folder, seed, _TokenIds.of(tokenizer), ARCHITECTURES[size])
    _save_reference_set(folder, seed)
    marker = {"name": DEMO_MODEL_NAME, "seed": seed, "size": size, "version": DEMO_MODEL_VERSION}
    (folder / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")


def train_tokenizer(seed: int) -> Tokenizer:
    """A byte-level BPE trained on the synthetic corpus, with the chat and tool tokens added."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors
    from tokenizers.pre_tokenizers import ByteLevel
    from tokenizers.trainers import BpeTrainer

    tokenizer = Tokenizer(models.BPE())
    _use_qwen2_pipeline(tokenizer)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(synthetic_corpus(seed), trainer=trainer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_TOKENS])
    return tokenizer


def _use_qwen2_pipeline(tokenizer: Tokenizer) -> None:
    """Split text exactly as transformers' Qwen2Tokenizer does.

    AutoTokenizer loads a qwen2 model's tokenizer.json into Qwen2Tokenizer, which rebuilds the
    normalizer and pre-tokenizer; training with the same ones keeps every loader's ids equal.
    """
    from tokenizers import Regex, normalizers, pre_tokenizers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tokenizer.normalizer = normalizers.NFC()
    split = pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([split, byte_level])


def synthetic_corpus(seed: int) -> Iterator[str]:
    """English-ish lines (sentences, numbers, JSON tool calls), the same for the same seed."""
    rng = random.Random(seed)
    lexicon = _Lexicon.build(rng)
    makers = [_sentence, _sentence, _sentence, _numbers_line, _tool_call_line]
    for _ in range(CORPUS_LINES):
        yield rng.choice(makers)(rng, lexicon)


def reference_questions(seed: int) -> list[str]:
    """General questions in the corpus's English-ish (no facts any test teaches)."""
    lexicon = _Lexicon.build(random.Random(seed))
    rng = random.Random(seed + 1)
    return [
        rng.choice(REFERENCE_TOPICS).format(rng.choice(lexicon.nouns))
        for _ in range(REFERENCE_EXAMPLES)
    ]


def _save_reference_set(folder: Path, seed: int) -> None:
    """The reference set of a model with random weights, answered by the model itself.

    Random weights know no language to forget; what they have is their own distribution. Answers
    sampled from it make the check meaningful: the expected loss of an adapted model on them is the
    base model's plus the KL divergence between the two, so it can only rise, more the further
    fine-tuning moved the model (for a real model, the operator gives real text).
    """
    import torch
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = Qwen2ForCausalLM.from_pretrained(folder)
    banned = [tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS + TOOL_TOKENS]
    tokenizer.padding_side = "left"  # one batch: every answer starts right after its prompt
    questions = reference_questions(seed)
    chats = [[{"role": "user", "content": question}] for question in questions]
    prompts = [
        tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        for chat in chats
    ]
    inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(seed)
    output = model.generate(  # type: ignore[misc]  # transformers 5 types its self oddly
        **inputs,
        do_sample=True,
        top_k=0,
        top_p=1.0,
        max_new_tokens=REFERENCE_ANSWER_TOKENS,
        min_new_tokens=REFERENCE_ANSWER_TOKENS,
        suppress_tokens=banned,
    )
    answers = tokenizer.batch_decode(
        output[:, inputs.input_ids.shape[1] :], skip_special_tokens=True
    )
    lines = [
        json.dumps({"messages": [*chat, {"role": "assistant", "content": str(answer)}]}) + "\n"
        for chat, answer in zip(chats, answers, strict=True)
    ]
    (folder / DEMO_REFERENCE_FILE).write_text("".join(lines))


@dataclass(frozen=True)
class _Lexicon:
    """The words the corpus is made of: fixed English lists plus invented names."""

    nouns: list[str]
    verbs: list[str]
    adjectives: list[str]
    small_words: list[str]
    names: list[str]
    tool_names: list[str]

    @classmethod
    def build(cls, rng: random.Random) -> _Lexicon:
        invented = [_invented_word(rng) for _ in range(INVENTED_WORDS)]
        return cls(
            nouns=_NOUNS.split() + invented,
            verbs=_VERBS.split(),
            adjectives=_ADJECTIVES.split(),
            small_words=_SMALL_WORDS.split(),
            names=_CITIES.split() + [word.capitalize() for word in invented],
            tool_names=_TOOL_NAMES.split(),
        )


def _invented_word(rng: random.Random) -> str:
    """A pronounceable made-up word (a name, a place, a product), for a richer vocabulary."""
    return "".join(rng.choice(_SYLLABLES.split()) for _ in range(rng.randint(2, 3)))


def _sentence(rng: random.Random, lexicon: _Lexicon) -> str:
    words = [
        rng.choice(lexicon.small_words),
        rng.choice(lexicon.adjectives),
        rng.choice(lexicon.nouns),
        rng.choice(lexicon.verbs) + rng.choice(["", "s", "ed", "ing"]),
        rng.choice(lexicon.small_words),
        rng.choice(lexicon.nouns + lexicon.names) + rng.choice(["", "s"]),
    ]
    rng.shuffle(words[4:])
    text = " ".join(words[rng.randrange(2) :])
    return text[0].upper() + text[1:] + rng.choice(_PUNCTUATION)


def _numbers_line(rng: random.Random, lexicon: _Lexicon) -> str:
    date = f"{rng.randint(1990, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    amount = f"{rng.randint(0, 9999)}.{rng.randint(0, 99):02d}"
    time_of_day = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
    thing = rng.choice(lexicon.nouns)
    return f"On {date} at {time_of_day} the {thing} cost ${amount} ({rng.random():.3f})."


def _tool_call_line(rng: random.Random, lexicon: _Lexicon) -> str:
    arguments = {
        "city": rng.choice(lexicon.names),
        "query": rng.choice(lexicon.nouns),
        "amount": rng.randint(1, 500),
    }
    keys = rng.sample(sorted(arguments), k=rng.randint(1, 3))
    call = {"name": rng.choice(lexicon.tool_names), "arguments": {k: arguments[k] for k in keys}}
    return json.dumps(call, indent=rng.choice([None, 2]))


@dataclass(frozen=True)
class _TokenIds:
    endoftext: int
    im_end: int
    vocab_size: int

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> _TokenIds:
        endoftext, im_end = tokenizer.token_to_id(ENDOFTEXT), tokenizer.token_to_id(IM_END)
        assert endoftext is not None and im_end is not None, "special tokens are always trained"
        return cls(endoftext, im_end, tokenizer.get_vocab_size(with_added_tokens=True))


def _save_tokenizer(tokenizer: Tokenizer, folder: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        chat_template=chatml_with_tools(),
        model_max_length=MAX_LENGTH,
        clean_up_tokenization_spaces=False,
    )
    wrapped.save_pretrained(folder)


def _save_model(folder: Path, seed: int, ids: _TokenIds, shape: dict[str, int]) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    # head_dim = 64 in both sizes, which vLLM's CPU attention supports. Embeddings are tied to the
    # output layer, as in small Qwen2.5 models: about a quarter fewer weights; LoRA never targets
    # lm_head here. The vocabulary is the tokenizer's: random weights would sample ids it lacks.
    config = Qwen2Config(
        vocab_size=_round_up(ids.vocab_size, 64),
        hidden_size=shape["hidden_size"],
        num_attention_heads=shape["num_attention_heads"],
        num_key_value_heads=shape["num_key_value_heads"],
        num_hidden_layers=shape["num_hidden_layers"],
        intermediate_size=shape["intermediate_size"],
        max_position_embeddings=MAX_LENGTH,
        tie_word_embeddings=True,
        bos_token_id=ids.endoftext,
        eos_token_id=ids.im_end,
        pad_token_id=ids.endoftext,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(folder)
    generation = {
        "bos_token_id": ids.endoftext,
        "eos_token_id": [ids.im_end, ids.endoftext],
        "pad_token_id": ids.endoftext,
    }
    GenerationConfig.from_dict(generation).save_pretrained(folder)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def main(argv: list[str] | None = None) -> int:
    """`python -m trainer.demo_model --output DIR [--seed N] [--size tiny|small]`: build the
    model, print its path."""
    parser = argparse.ArgumentParser(description="Build OpenFT's offline demo base model.")
    parser.add_argument("--output", type=Path, required=True, help="folder to build the model in")
    parser.add_argument("--seed", type=int, default=0, help="seed for the tokenizer and weights")
    parser.add_argument("--size", choices=sorted(ARCHITECTURES), default="tiny")
    args = parser.parse_args(argv)
    print(create_demo_model(args.output, seed=args.seed, size=args.size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
