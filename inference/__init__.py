"""OpenFT's inference side: vLLM process management, adapter loading and the request gateway."""
