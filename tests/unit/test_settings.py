from __future__ import annotations

from ftflow.settings import get_settings


def test_precedence_defaults_toml_env_overrides(tmp_path, monkeypatch):
    config = tmp_path / "ftflow.toml"
    config.write_text('model = "gpt-4.1-mini-2025-04-14"\nvalidation_fraction = 0.2\npii = "report"\n')
    monkeypatch.setenv("FTFLOW_CONFIG", str(config))
    monkeypatch.setenv("FTFLOW_PII", "off")
    settings = get_settings(validation_fraction=0.3, model=None)
    assert settings.model == "gpt-4.1-mini-2025-04-14"  # from the file
    assert settings.pii == "off"  # env beats the file
    assert settings.validation_fraction == 0.3  # an explicit option beats both
