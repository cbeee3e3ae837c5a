"""Registry entry -> ray.serve.llm LLMConfig (the vLLM engine settings of one model)."""
