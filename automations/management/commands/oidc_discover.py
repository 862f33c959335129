"""Print the OIDC_* environment lines for a provider, read from its discovery document.

    manage.py oidc_discover https://login.example.com/realms/main

Settings stay environment-only (no network call at start-up); this is how an operator fills them in.
"""
from urllib.parse import urlsplit

import requests
from django.core.management.base import BaseCommand, CommandError

REQUIRED = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
}


class Command(BaseCommand):
    help = "Print OIDC_* environment variables for an OpenID Connect provider, from its discovery document."

    def add_arguments(self, parser):
        parser.add_argument("issuer", help="The provider's issuer URL (the id token's `iss`).")
        parser.add_argument("--timeout", type=float, default=10.0)

    def handle(self, *args, issuer, timeout, **options):
        issuer = issuer.rstrip("/")
        if urlsplit(issuer).scheme not in ("https", "http"):
            raise CommandError("The issuer is an http(s) URL.")
        url = f"{issuer}/.well-known/openid-configuration"
        try:
            response = requests.get(url, timeout=timeout)
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as error:
            raise CommandError(f"Could not read {url}: {type(error).__name__}") from error
        if document.get("issuer", "").rstrip("/") != issuer:
            # OIDC Discovery 4.3: the document must name the same issuer it was fetched for.
            raise CommandError(f"The document names issuer {document.get('issuer')!r}, not {issuer!r}.")
        missing = [key for key in REQUIRED.values() if not document.get(key)]
        if missing:
            raise CommandError(f"The document lacks {', '.join(missing)}.")
        algorithms = document.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithm = "RS256" if "RS256" in algorithms else next((a for a in algorithms if a[:2] in ("RS", "ES")), "")
        if not algorithm:
            raise CommandError(f"No asymmetric id token signature offered ({algorithms}).")
        if "S256" not in (document.get("code_challenge_methods_supported") or ["S256"]):
            self.stderr.write("warning: the provider does not announce PKCE S256; Delegate always sends it.")
        if urlsplit(issuer).scheme != "https":
            self.stderr.write("warning: the issuer is not HTTPS; use that only on a loopback test provider.")
        self.stdout.write(f"OIDC_OP_ISSUER={document['issuer']}")
        for variable, key in REQUIRED.items():
            self.stdout.write(f"{variable}={document[key]}")
        self.stdout.write(f"OIDC_RP_SIGN_ALGO={algorithm}")
        self.stdout.write("# and from the provider's client registration: OIDC_RP_CLIENT_ID, OIDC_RP_CLIENT_SECRET")
