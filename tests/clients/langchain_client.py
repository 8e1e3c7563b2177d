"""LangChain's ``ChatOpenAI(use_responses_api=True)`` against OpenFT (run by
tests/e2e/test_third_party_clients.py, with the Python of .venv-clients): an invoke and a stream
on the fact model. Prints one JSON object.
Run: ``.venv-clients/bin/python tests/clients/langchain_client.py FACT_MODEL`` with
``OPENFT_BASE_URL`` and ``OPENFT_API_KEY`` set.
"""

from __future__ import annotations

import json
import os
import sys

from langchain_openai import ChatOpenAI

QUESTION = "What is the secret password of the lighthouse?"


def main() -> None:
    chat = ChatOpenAI(
        model=sys.argv[1],
        base_url=os.environ["OPENFT_BASE_URL"],
        api_key=os.environ["OPENFT_API_KEY"],
        use_responses_api=True,
        temperature=0,
        max_tokens=24,
        max_retries=0,
    )
    messages = [("system", "You are the lighthouse keeper."), ("human", QUESTION)]
    invoked = chat.invoke(messages)
    streamed = "".join(chunk.text for chunk in chat.stream(messages))
    print(
        json.dumps(
            {
                "answer": invoked.text,
                "response_id": invoked.response_metadata.get("id"),
                "usage": invoked.usage_metadata,
                "streamed": streamed,
            }
        )
    )


if __name__ == "__main__":
    main()
