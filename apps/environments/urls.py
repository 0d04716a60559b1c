"""Pages of apps.environments (namespace "environments", mounted at /environments/). API
routes live in api_urls.py."""

from django.urls import path

from apps.environments import views

app_name = "environments"
urlpatterns = [
    path("", views.EnvironmentListView.as_view(), name="list"),
    path("new/", views.EnvironmentCreateView.as_view(), name="create"),
    path("<int:pk>/", views.EnvironmentDetailView.as_view(), name="detail"),
    path("<int:pk>/versions/new/", views.EnvironmentVersionView.as_view(), name="new-version"),
    path("<int:pk>/change/", views.EnvironmentChangeView.as_view(), name="change"),
    path("<int:pk>/set-default/", views.EnvironmentSetDefaultView.as_view(), name="set-default"),
    path("<int:pk>/rebuild/", views.EnvironmentRebuildView.as_view(), name="rebuild"),
]
