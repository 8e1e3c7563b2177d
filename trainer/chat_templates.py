"""The chat template OpenFT writes into the models it builds: ChatML turns, tools described in the
system turn and called Hermes-style (``<tool_call>{"name": ..., "arguments": ...}</tool_call>``),
as vLLM's ``hermes`` tool parser reads them. ``{% generation %}`` marks what the assistant says, so
the loss masks come from the template itself."""

from __future__ import annotations

import json

_CHATML_WITH_TOOLS = """\
{%- macro text(content) -%}
    {%- if content is string -%}{{ content }}
    {%- elif content is iterable and content is not mapping -%}
        {%- for part in content if part.type == 'text' -%}{{ part.text }}{%- endfor -%}
    {%- elif content is not none -%}{{ content }}
    {%- endif -%}
{%- endmacro -%}
{%- set first_is_system = messages and messages[0].role == 'system' -%}
{%- set system = text(messages[0].content) if first_is_system else DEFAULT_SYSTEM -%}
{%- if tools -%}
    {{- '<|im_start|>system\\n' -}}
    {%- if system -%}{{- system + '\\n\\n' -}}{%- endif -%}
    {{- 'You may call one or more functions to help with the request. '
        + 'The functions are described as JSON inside <tools></tools>:\\n<tools>' -}}
    {%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}
    {{- '\\n</tools>\\n\\nTo call a function, reply with one JSON object per call, each inside '
        + '<tool_call></tool_call> tags:\\n<tool_call>\\n'
        + '{"name": <function-name>, "arguments": <arguments-object>}\\n'
        + '</tool_call><|im_end|>\\n' -}}
{%- elif system -%}
    {{- '<|im_start|>system\\n' + system + '<|im_end|>\\n' -}}
{%- endif -%}
{%- for message in messages -%}
    {%- set previous = messages[loop.index0 - 1] if not loop.first else none -%}
    {%- if message.role == 'system' and loop.first -%}
    {%- elif message.role == 'assistant' -%}
        {{- '<|im_start|>assistant\\n' -}}
        {%- generation -%}
            {{- text(message.content) -}}
            {%- for call in message.tool_calls or [] -%}
                {%- set function = call.function if call.function is defined else call -%}
                {%- set arguments = function.arguments -%}
                {%- if arguments is not string -%}
                    {%- set arguments = arguments | tojson -%}
                {%- endif -%}
                {%- if not loop.first or text(message.content) -%}{{- '\\n' -}}{%- endif -%}
                {{- '<tool_call>\\n{"name": ' + (function.name | tojson) + ', "arguments": '
                    + arguments + '}\\n</tool_call>' -}}
            {%- endfor -%}
            {{- '<|im_end|>' -}}
        {%- endgeneration -%}
        {{- '\\n' -}}
    {%- elif message.role == 'tool' -%}
        {%- if previous is none or previous.role != 'tool' -%}
            {{- '<|im_start|>user' -}}
        {%- endif -%}
        {{- '\\n<tool_response>\\n' + text(message.content) + '\\n</tool_response>' -}}
        {%- if loop.last or loop.nextitem.role != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}
    {%- else -%}
        {{- '<|im_start|>' + message.role + '\\n' + text(message.content) + '<|im_end|>\\n' -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}
"""


def chatml_with_tools(default_system: str | None = None) -> str:
    """The template; ``default_system`` is the system turn used when a chat has none (a model
    trained with one, such as SmolLM2, answers best with it)."""
    value = "none" if default_system is None else json.dumps(default_system)
    return "{%- set DEFAULT_SYSTEM = " + value + " -%}\n" + _CHATML_WITH_TOOLS
