"""Identity: sign-in (local password and OpenID Connect single sign-on) and the login audit signals."""
