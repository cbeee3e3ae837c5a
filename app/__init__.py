"""llmbox: a self-hosted LLM serving box (Ray Serve + vLLM behind one OpenAI endpoint)."""

import os

# Ray's single-node mode keeps every Ray address on 127.0.0.1 (docs/design.md, "Ray on one box").
# Ray reads it once, when it is imported, so it is set here, before any llmbox module imports Ray.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
