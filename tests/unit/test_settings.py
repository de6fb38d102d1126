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


def test_a_database_url_shows_no_password_and_plain_sqlite_urls_render_as_sqlalchemy_has_them():
    """`redact_url` skips SQLAlchemy for plain SQLite URLs (the default registry_url): the same text as its reference."""
    import random

    from ftflow.settings import Settings, redact_url, redact_url_reference

    assert redact_url("postgresql://ftflow:s3cret@db:5432/runs") == "postgresql://ftflow:***@db:5432/runs"
    given = ["sqlite:///.ftflow/registry.sqlite3", "sqlite://", "sqlite:///", "sqlite:////abs/runs.db",
             "sqlite+pysqlite:///x.db", "sqlite:///a%20b", "sqlite:///x?mode=ro", "sqlite:///C:\\runs\\x.db",
             "sqlite:///./x#y", "sqlite:///x:y", "sqlite:///ü.db", "sqlite:///x\n", "sqlite:///u:p@h/x",
             "SQLITE:///x", " sqlite:///x", "sqlite:///my db.sqlite", "sqlite+:///x", "mysql://u:p@h/d",
             Settings.model_fields["registry_url"].default]
    rng = random.Random(7)
    alphabet = "aZ09_./-:@?#%+ \\ü\n"
    given += ["sqlite:///" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(2000)]
    given += ["sqlite+" + "".join(rng.choice("pysqlite+:/") for _ in range(rng.randint(0, 12))) for _ in range(500)]
    for url in given:
        assert redact_url(url) == redact_url_reference(url), url
