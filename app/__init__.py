"""llmbox: a self-hosted LLM serving box (Ray Serve + vLLM behind one OpenAI endpoint)."""
