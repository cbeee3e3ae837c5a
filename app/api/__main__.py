"""Run the management API: ``python -m app.api`` (./start.sh does this in the background)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from app.api.app import create_app
from app.api.tokens import exposure_refused
from app.settings import get_settings


def main() -> int:
    settings = get_settings()
    if exposure_refused(settings, "llmbox-api"):
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The access log names method, path and status: never headers, so tokens stay out of logs.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.api_port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
