def test_settings_use_the_configured_database(settings):
    assert settings.DATABASES["default"]["ENGINE"] in ("django.db.backends.postgresql", "django.db.backends.sqlite3")
