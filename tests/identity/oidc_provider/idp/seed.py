"""Create the provider's users and Delegate's client registration (run once after migrate)."""
import json
import os

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from oauth2_provider.models import Application  # noqa: E402

for username, password in json.loads(os.environ["IDP_USERS"]).items():
    user, _ = get_user_model().objects.get_or_create(username=username)
    user.set_password(password)
    user.save()

Application.objects.update_or_create(
    client_id=os.environ["IDP_CLIENT_ID"],
    defaults={
        "name": "Delegate",
        "client_secret": os.environ["IDP_CLIENT_SECRET"],  # stored hashed by the model
        "client_type": Application.CLIENT_CONFIDENTIAL,
        "authorization_grant_type": Application.GRANT_AUTHORIZATION_CODE,
        "redirect_uris": os.environ["IDP_REDIRECT_URI"],
        "algorithm": Application.RS256_ALGORITHM,
        "skip_authorization": True,  # no consent screen: the test drives a login, not a consent
    },
)
print("seeded")
