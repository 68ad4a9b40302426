"""Kafka TLS/SASL settings: what each client is given, and clear errors for bad combinations."""

from __future__ import annotations

import ssl

import faust
import pytest

from mobilise.errors import ConfigurationError
from mobilise.kafka_security import kafka_security


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "SECURITY_PROTOCOL",
        "SASL_MECHANISM",
        "SASL_USERNAME",
        "SASL_PASSWORD",
        "SSL_CAFILE",
        "SSL_CERTFILE",
        "SSL_KEYFILE",
        "SSL_CHECK_HOSTNAME",
    ):
        monkeypatch.delenv(f"MOBILISE_KAFKA_{name}", raising=False)


def test_plaintext_by_default() -> None:
    security = kafka_security()
    assert security.client_options() == {"security_protocol": "PLAINTEXT"}
    assert security.faust_credentials() is None


def test_sasl_over_tls_reaches_both_client_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBILISE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("MOBILISE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("MOBILISE_KAFKA_SASL_USERNAME", "network")
    monkeypatch.setenv("MOBILISE_KAFKA_SASL_PASSWORD", "s3cret-value")
    security = kafka_security()

    options = security.client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("network", "s3cret-value")
    assert isinstance(options["ssl_context"], ssl.SSLContext) and options["ssl_context"].check_hostname

    credentials = security.faust_credentials()
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.username == "network"
    assert "s3cret-value" not in repr(security)


def test_tls_without_sasl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBILISE_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("MOBILISE_KAFKA_SSL_CHECK_HOSTNAME", "false")
    security = kafka_security()
    assert isinstance(security.faust_credentials(), faust.SSLCredentials)
    context = security.client_options()["ssl_context"]
    assert context.check_hostname is False
    assert "sasl_mechanism" not in security.client_options()


def test_sasl_without_a_password_names_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBILISE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("MOBILISE_KAFKA_SASL_USERNAME", "network")
    with pytest.raises(ConfigurationError, match="MOBILISE_KAFKA_SASL_PASSWORD"):
        kafka_security()


def test_credentials_with_plaintext_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBILISE_KAFKA_SASL_USERNAME", "network")
    with pytest.raises(ConfigurationError, match="MOBILISE_KAFKA_SECURITY_PROTOCOL is PLAINTEXT"):
        kafka_security()


def test_a_bad_value_is_named_and_a_password_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBILISE_KAFKA_SECURITY_PROTOCOL", "TLS")
    monkeypatch.setenv("MOBILISE_KAFKA_SASL_PASSWORD", "s3cret-value")
    with pytest.raises(ConfigurationError) as caught:
        kafka_security()
    assert "MOBILISE_KAFKA_SECURITY_PROTOCOL='TLS'" in str(caught.value)
    assert "s3cret-value" not in str(caught.value)


def test_a_missing_ca_file_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBILISE_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("MOBILISE_KAFKA_SSL_CAFILE", "/nonexistent/ca.pem")
    with pytest.raises(ConfigurationError, match="MOBILISE_KAFKA_SSL_CAFILE"):
        kafka_security()
