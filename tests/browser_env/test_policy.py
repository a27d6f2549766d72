"""UrlPolicy's rules, without a browser (the browser's side: test_hardening.py)."""

from __future__ import annotations

import pytest

from browser_env.policy import UrlPolicy, proxy_bypass


def test_allowed_hosts_are_normalised_as_urls_name_them():
    policy = UrlPolicy(allowed_hosts=("LocalHost", "[::1]", "0:0::1", ".Example.com", "127.0.0.1"))
    assert policy.allowed_hosts == ("localhost", "::1", "::1", ".example.com", "127.0.0.1")
    assert policy.host_allowed("http://[::1]:8000/")
    assert policy.host_allowed("https://a.example.com/x")
    assert not policy.host_allowed("https://example.com/x")  # '.' allows subdomains only
    assert not policy.host_allowed("http://127.0.0.2/")


@pytest.mark.parametrize(
    "entry",
    [
        "*",
        "*.example.com",
        "a,b",
        "a b",
        "http://x",
        "x:80",
        "ab:80",
        "[::1]:80",
        "",
        ".",
        "::1%x,*",
    ],
)
def test_an_entry_that_is_not_a_host_is_refused(entry):
    # a comma or a space would otherwise end the proxy bypass rule and start another
    with pytest.raises(ValueError, match="is not a host name or IP address"):
        UrlPolicy(allowed_hosts=(entry,))


def test_the_allowed_hosts_and_only_they_bypass_the_refusing_proxy():
    import socket

    proxy = UrlPolicy(
        allowed_hosts=("localhost", ".example.com", "::1", "localhost")
    ).context_proxy()
    # loopback bypasses a proxy in Chromium unless <-loopback> says otherwise
    assert proxy["bypass"] == "<-loopback>, *.example.com, [::1], localhost"
    host, port = proxy["server"].removeprefix("http://").split(":")
    assert host == "127.0.0.1"
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect((host, int(port)))  # nothing listens: every connection is refused
    assert UrlPolicy().context_proxy() is None  # any host: no proxy
    assert proxy_bypass([]) == "<-loopback>"  # nothing bypasses it


def test_a_backslash_is_a_slash_as_in_the_browser():
    # urlsplit alone takes the host of the first to be 127.0.0.1; Chromium, localhost
    policy = UrlPolicy(allowed_hosts=("127.0.0.1",))
    assert "'localhost' is not in allowed_hosts" in policy.url_error(
        "http://localhost\\@127.0.0.1:8000/secret"
    )
    assert not policy.host_allowed("ws://localhost\\@127.0.0.1/")
    assert policy.url_error("http://127.0.0.1:8000/a\\b") is None


@pytest.mark.parametrize(
    ("setting", "value"),
    [("allowed_url_schemes", "https"), ("allowed_hosts", "example.com"), ("allowed_hosts", "*")],
)
def test_the_env_refuses_a_lone_string_where_a_list_of_names_goes(setting, value):
    """The env turned these into tuples before UrlPolicy saw them: "https"
    became the schemes h, t, t, p, s (every URL then refused as a scheme not
    allowed), "example.com" eleven one-letter hosts."""
    from browser_env.env import BrowserEnv

    with pytest.raises(ValueError) as refused:
        BrowserEnv(**{setting: value})
    assert str(refused.value) == f"{setting} must be a list of strings, not the string {value!r}"
    assert BrowserEnv(allowed_hosts=["*"]).url_policy.allowed_hosts is None  # any host
    assert BrowserEnv(allowed_url_schemes=["HTTPS"]).url_policy.allowed_url_schemes == ("https",)
