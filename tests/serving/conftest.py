import pytest

from tests.serving import fakes


@pytest.fixture(autouse=True)
def _stop_fake_replicas():
    yield
    while fakes.SERVERS:
        fakes.SERVERS.pop().close()
