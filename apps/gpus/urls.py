"""Pages of apps.gpus (namespace "gpus"). API routes live in api_urls.py."""

from django.urls import URLPattern, path

from apps.gpus import views

app_name = "gpus"
urlpatterns: list[URLPattern] = [
    path("", views.FleetView.as_view(), name="index"),
    path("idle/", views.IdleView.as_view(), name="idle"),
    path("usage/", views.UsageView.as_view(), name="usage"),
    path("usage.csv", views.UsageCsvView.as_view(), name="usage-csv"),
    path("prices/", views.PriceView.as_view(), name="prices"),
    path("policy/<slug:team>/<slug:slug>/", views.PolicyView.as_view(), name="policy"),
    path("launches/<int:pk>/", views.LaunchUsageView.as_view(), name="launch-usage"),
    path("launches/<int:pk>/exempt/", views.ExemptView.as_view(), name="exempt"),
    path("launches/<int:pk>/unexempt/", views.UnexemptView.as_view(), name="unexempt"),
]
