"""Sign-in and sign-out as a person sees them: a wrong password leaves the cursor in the
password field, and signing out says so on the login page."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from apps.accounts.models import User
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def test_after_a_wrong_password_the_cursor_is_in_the_password_field(ada: User) -> None:
    page = Client().post("/login/", {"username": "ada", "password": "wrong"}).content.decode()
    username = re.search(r'<input id="id_username"[^>]*>', page)
    password = re.search(r'<input id="id_password"[^>]*>', page)
    assert username and password
    assert "autofocus" in password.group(0) and "autofocus" not in username.group(0)
    assert 'value="ada"' in username.group(0)
    fresh = Client().get("/login/").content.decode()
    assert "autofocus" in re.search(r'<input id="id_username"[^>]*>', fresh).group(0)  # type: ignore[union-attr]


def test_signing_out_says_so_on_the_login_page(ada: User) -> None:
    client = Client()
    assert client.login(username="ada", password=PASSWORD)
    response = client.post("/logout/", follow=True)
    assert response.redirect_chain[-1][0].startswith("/login/")
    assert "You are signed out." in response.content.decode()
    assert "_auth_user_id" not in client.session
