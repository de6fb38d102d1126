"""The client factory: SDK clients keep the SDK's defaults, verify TLS, and share one TLS context."""

from __future__ import annotations

import ssl

import openai

from ftflow.client import openai_client
from ftflow.settings import Settings


def tls_context(client: openai.OpenAI) -> ssl.SSLContext:
    return client._client._transport._pool._ssl_context


def test_clients_verify_tls_on_one_context_per_process_and_keep_the_timeout(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-key")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-test-not-a-key")
    openai_backend = Settings(backend="openai", request_timeout_seconds=7.5)
    first, _ = openai_client(openai_backend)
    second, _ = openai_client(openai_backend)
    azure, _ = openai_client(Settings(backend="azure", azure_surface="dated",
                                      azure_endpoint="https://example.openai.azure.com"))
    assert isinstance(azure, openai.AzureOpenAI)
    context = tls_context(first)
    assert context is tls_context(second) is tls_context(azure)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert first.timeout == 7.5 and first.max_retries == 2
    assert first._client.follow_redirects  # the SDK's own client defaults


def test_another_ca_bundle_gets_a_context_of_its_own(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-key")
    default, _ = openai_client(Settings(backend="openai"))
    monkeypatch.setenv("SSL_CERT_FILE", ssl.get_default_verify_paths().openssl_cafile)
    other, _ = openai_client(Settings(backend="openai"))
    assert tls_context(other) is not tls_context(default)
