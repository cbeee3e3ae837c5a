"""app/web: the Host allow-list every server shares, as a rebinding page and a user see it."""

import pytest

from app.web.hosts import allowed_names, host_name, is_allowed


@pytest.mark.parametrize("header,name", [("127.0.0.1:8000", "127.0.0.1"), ("[::1]:8000", "::1"), ("::1", "::1"),
                                         ("Box.LAN.", "box.lan"), ("box.lan:8080", "box.lan"), ("", "")])
def test_host_name_drops_port_brackets_case_and_trailing_dot(header, name):
    assert host_name(header) == name


def test_ip_literals_localhost_the_bind_name_and_listed_names_pass_others_do_not():
    names = allowed_names("llmbox.internal", ["chat.example.org"])
    for header in ("10.0.0.5:8000", "[fe80::1]:8001", "localhost:8080", "app.localhost", "LLMBOX.internal:8000",
                   "chat.example.org"):
        assert is_allowed(header, names), header
    for header in ("evil.example", "127.0.0.1.evil.example", "localhost.evil.example", "chat.example.org.evil", ""):
        assert not is_allowed(header, names), header
    assert is_allowed("anything.example", allowed_names("127.0.0.1", ["*"]))  # the operator turned it off
