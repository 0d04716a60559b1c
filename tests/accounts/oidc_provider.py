"""A small OpenID Connect provider for the tests: the authorization-code flow (with PKCE),
RS256-signed ID tokens (PyJWT), a JWKS endpoint and userinfo, served over real HTTP by
werkzeug from a background thread, so mozilla-django-oidc talks to it exactly as it would
to Keycloak or Dex. The person who "signs in" next is set by the test (`next_login`)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from typing import Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

CLIENT_ID = "plinth"
CLIENT_SECRET = "plinth-test-secret"
KID = "test-key-1"


class OidcProvider:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = {"keys": [{**jwk, "kid": KID, "alg": "RS256", "use": "sig"}]}
        self.next_login: dict[str, Any] = {}
        self.userinfo_overrides: dict[str, Any] = {}  # claims userinfo answers differently from the ID token
        self.codes: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, dict[str, Any]] = {}
        self.token_requests: list[dict[str, str]] = []
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="oidc-provider", daemon=True)
        self.thread.start()

    def settings(self) -> dict[str, Any]:
        """What portal/settings.py builds from PLINTH_OIDC_* for this provider."""
        return {
            "OIDC_RP_CLIENT_ID": CLIENT_ID,
            "OIDC_RP_CLIENT_SECRET": CLIENT_SECRET,
            "OIDC_OP_AUTHORIZATION_ENDPOINT": f"{self.url}/authorize",
            "OIDC_OP_TOKEN_ENDPOINT": f"{self.url}/token",
            "OIDC_OP_USER_ENDPOINT": f"{self.url}/userinfo",
            "OIDC_OP_JWKS_ENDPOINT": f"{self.url}/jwks",
            "OIDC_RP_SIGN_ALGO": "RS256",
        }

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5)

    # --- the endpoints ------------------------------------------------------------------
    def app(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        handler = {
            "/authorize": self.authorize,
            "/token": self.token,
            "/userinfo": self.userinfo,
            "/jwks": lambda r: self.json(self.jwks),
        }.get(request.path)
        response = handler(request) if handler else Response("not found", status=404)
        return response(environ, start_response)

    @staticmethod
    def json(body: Any, status: int = 200) -> Response:
        return Response(json.dumps(body), status=status, content_type="application/json")

    def authorize(self, request: Request) -> Response:
        args = request.args
        if args.get("client_id") != CLIENT_ID or args.get("response_type") != "code":
            return Response("bad authorization request", status=400)
        code = secrets.token_urlsafe(16)
        self.codes[code] = {
            "claims": dict(self.next_login),
            "nonce": args.get("nonce"),
            "redirect_uri": args.get("redirect_uri"),
            "challenge": args.get("code_challenge"),
        }
        query = urlencode({"code": code, "state": args.get("state", "")})
        return Response(status=302, headers={"Location": f"{args['redirect_uri']}?{query}"})

    def token(self, request: Request) -> Response:
        form = request.form
        self.token_requests.append(dict(form))
        grant = self.codes.pop(form.get("code", ""), None)
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return self.json({"error": "invalid_client"}, 401)
        if grant is None or grant["redirect_uri"] != form.get("redirect_uri"):
            return self.json({"error": "invalid_grant"}, 400)
        if grant["challenge"]:
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if digest != grant["challenge"]:
                return self.json({"error": "invalid_grant", "error_description": "PKCE"}, 400)
        claims = grant["claims"]
        now = int(time.time())
        id_token = jwt.encode(
            {
                "iss": self.url,
                "aud": CLIENT_ID,
                "sub": claims["sub"],
                "iat": now,
                "exp": now + 300,
                "nonce": grant["nonce"],
            },
            self.key,
            algorithm="RS256",
            headers={"kid": KID},
        )
        access_token = secrets.token_urlsafe(24)
        self.tokens[access_token] = claims
        return self.json({"access_token": access_token, "id_token": id_token, "token_type": "Bearer"})

    def userinfo(self, request: Request) -> Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        claims = self.tokens.get(token)
        if claims is None:
            return self.json({"error": "invalid_token"}, 401)
        return self.json({**claims, **self.userinfo_overrides})
