"""Test chat templates with real-world quirks, and a tiny in-process BPE tokenizer for them."""

from __future__ import annotations

import functools
import itertools

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# Every control string the templates below emit, so each tokenizes as one token.
SPECIAL_TOKENS = (
    "<|im_start|>",
    "<|im_end|>",
    "<tool_call>",
    "</tool_call>",
    "<think>",
    "</think>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
)

_VOCABULARY = (
    "the weather is sunny today and tomorrow it will rain in paris berlin tokyo "
    "you are a helpful assistant answer question user system tool call function "
    "name arguments city what how why please thanks hello one two three four five "
    "reasoning think about first then finally result cold warm degrees celsius"
)

# ChatML with a tools block in the system turn, <tool_call> JSON for calls, role "tool" results.
CHATML = r"""
{%- if tools -%}
  {{- '<|im_start|>system\n' -}}
  {%- if messages[0].role == 'system' -%}{{- messages[0].content + '\n\n' -}}{%- endif -%}
  {{- 'You may call these tools:\n<tools>\n' -}}
  {%- for tool in tools -%}{{- tool | tojson + '\n' -}}{%- endfor -%}
  {{- '</tools><|im_end|>\n' -}}
{%- elif messages[0].role == 'system' -%}
  {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in messages -%}
  {%- if message.role == 'user' or message.role == 'tool' -%}
    {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' -}}
  {%- elif message.role == 'assistant' -%}
    {{- '<|im_start|>assistant\n' -}}
    {%- if message.content -%}{{- message.content -}}{%- endif -%}
    {%- for call in message.tool_calls or [] -%}
      {%- set payload = {'name': call.function.name, 'arguments': call.function.arguments} -%}
      {{- '<tool_call>' + payload | tojson + '</tool_call>' -}}
    {%- endfor -%}
    {{- '<|im_end|>\n' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
"""

# Llama-3: BOS written by the template itself, content trimmed, tools folded into the first user
# turn, tool results under "ipython".
LLAMA3 = r"""
{{- '<|begin_of_text|>' -}}
{%- set ns = namespace(tools_shown=false) -%}
{%- for message in messages -%}
  {%- set role = 'ipython' if message.role == 'tool' else message.role -%}
  {{- '<|start_header_id|>' + role + '<|end_header_id|>\n\n' -}}
  {%- if message.tool_calls -%}
    {%- for call in message.tool_calls -%}
      {{- {'name': call.function.name, 'parameters': call.function.arguments} | tojson -}}
    {%- endfor -%}
  {%- else -%}
    {%- if tools and message.role == 'user' and not ns.tools_shown -%}
      {{- 'Call one of these functions:\n' -}}
      {%- for tool in tools -%}{{- tool | tojson + '\n' -}}{%- endfor -%}
      {%- set ns.tools_shown = true -%}
    {%- endif -%}
    {{- message.content | trim -}}
  {%- endif -%}
  {{- '<|eot_id|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
{%- endif -%}
"""

# Llama-2 / Mistral: no system role, the system prompt is folded into the first [INST].
MISTRAL = r"""
{%- if messages[0].role == 'system' -%}
  {%- set system = messages[0].content -%}
  {%- set turns = messages[1:] -%}
{%- else -%}
  {%- set system = none -%}
  {%- set turns = messages -%}
{%- endif -%}
{{- '<s>' -}}
{%- for message in turns -%}
  {%- if message.role == 'user' and loop.first and system -%}
    {{- '[INST] ' + system + '\n\n' + message.content + ' [/INST]' -}}
  {%- elif message.role == 'user' -%}
    {{- '[INST] ' + message.content + ' [/INST]' -}}
  {%- elif message.role == 'assistant' -%}
    {{- ' ' + message.content + '</s>' -}}
  {%- else -%}
    {{- raise_exception('only user and assistant roles are supported') -}}
  {%- endif -%}
{%- endfor -%}
"""

# Qwen3: assistant turns before the last user message lose their <think> block.
QWEN3_REASONING = r"""
{%- set ns = namespace(last_user=-1) -%}
{%- for message in messages -%}
  {%- if message.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}
{%- endfor -%}
{%- for message in messages -%}
  {%- if message.role == 'assistant' -%}
    {%- set content = message.content -%}
    {%- if loop.index0 < ns.last_user and '</think>' in content -%}
      {%- set content = content.split('</think>')[-1].lstrip('\n') -%}
    {%- endif -%}
    {{- '<|im_start|>assistant\n' + content + '<|im_end|>\n' -}}
  {%- else -%}
    {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
"""

# ChatML whose assistant text is wrapped in {% generation %} blocks.
CHATML_GENERATION = r"""
{%- for message in messages -%}
  {%- if message.role == 'assistant' -%}
    {{- '<|im_start|>assistant\n' -}}
    {%- generation -%}{{- message.content + '<|im_end|>' -}}{%- endgeneration -%}
    {{- '\n' -}}
  {%- else -%}
    {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
"""

# Generation blocks that leave the end-of-turn token out: the markers, not prefixes, must decide.
CHATML_GENERATION_CONTENT_ONLY = r"""
{%- for message in messages -%}
  {{- '<|im_start|>' + message.role + '\n' -}}
  {%- if message.role == 'assistant' -%}
    {%- generation -%}{{- message.content -}}{%- endgeneration -%}
  {%- else -%}
    {{- message.content -}}
  {%- endif -%}
  {{- '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
"""

# Broken on purpose: the rendered assistant text is not the text the user gave.
CHATML_UPPERCASE = r"""
{%- for message in messages -%}
  {%- set content = message.content | upper if message.role == 'assistant' else message.content -%}
  {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
"""


def build_tokenizer(
    chat_template: str,
    *,
    bos_token: str | None = None,
    eos_token: str = "<|im_end|>",
    adds_bos: bool = False,
) -> PreTrainedTokenizerFast:
    """A fast tokenizer over the shared tiny BPE; `adds_bos` makes plain encoding prepend BOS."""
    return PreTrainedTokenizerFast(
        tokenizer_object=_byte_level_bpe(),
        bos_token=bos_token,
        eos_token=eos_token,
        add_bos_token=adds_bos,
        chat_template=chat_template,
    )


@functools.cache
def _byte_level_bpe() -> Tokenizer:
    # Byte-level, so any text round-trips even where the tiny corpus never saw it.
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer)
    return tokenizer


def _corpus() -> list[str]:
    # Word pairs and triples give the trainer enough repetition to learn some merges.
    words = _VOCABULARY.split()
    pairs = [f"{a} {b}" for a, b in itertools.product(words[:20], words[20:40])]
    return pairs + [" ".join(words[i : i + 3]) for i in range(len(words) - 2)]
