"""Run the admin UI: ``python -m frontend`` (./start.sh does this in the background).

Serves with waitress on ``LLMBOX_HOST:LLMBOX_UI_PORT``. Like the management API, it refuses to
listen beyond loopback while no API token exists (nobody could log in, and nothing may be open).
"""

from __future__ import annotations

import logging
import sys

from waitress import serve

from app.api.tokens import exposure_refused
from app.settings import get_settings
from frontend import MAX_BODY_BYTES, create_app


def main() -> int:
    settings = get_settings()
    if exposure_refused(settings, "llmbox-ui"):
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app()
    logging.getLogger("llmbox.ui").info("admin UI on http://%s:%d (management API %s)", settings.host,
                                        settings.ui_port, app.config["API_URL"])
    serve(app, host=settings.host, port=settings.ui_port, threads=8, ident="llmbox-ui",
          max_request_body_size=MAX_BODY_BYTES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
