"""The portal's URLs with SSO mounted, as portal/urls.py mounts them when PLINTH_OIDC_* is set."""

from django.urls import include, path

from portal.urls import urlpatterns as portal_urlpatterns

urlpatterns = [*portal_urlpatterns, path("oidc/", include("mozilla_django_oidc.urls"))]
