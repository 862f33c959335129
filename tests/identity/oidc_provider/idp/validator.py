"""Claims for the test provider: preferred_username, email and whatever IDP_CLAIMS_FILE says (groups)."""
import json
import os

from oauth2_provider.oauth2_validators import OAuth2Validator


class ClaimsValidator(OAuth2Validator):
    # Claims outside this map are dropped by django-oauth-toolkit; groups travel with "profile".
    oidc_claim_scope = {**OAuth2Validator.oidc_claim_scope, "groups": "profile"}

    def get_additional_claims(self, request):
        # Read on every token and userinfo request, so a test can change someone's groups between logins.
        with open(os.environ["IDP_CLAIMS_FILE"]) as handle:
            extra = json.load(handle).get(request.user.username, {})
        return {"preferred_username": request.user.username, "email": f"{request.user.username}@idp.example",
                "email_verified": True, **extra}
