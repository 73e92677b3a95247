from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import JsonResponse
from django.urls import include, path
from django.views.generic import TemplateView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts.views import my_points, redeem
from loyalty.api.negotiation import FormatParameterNegotiation


def healthz(request):
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("", TemplateView.as_view(template_name="home.html"), name="home"),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("me/", my_points, name="my-points"),
    path("me/redeem/", redeem, name="my-points-redeem"),
    path("api/v1/", include("loyalty.api.urls")),
    path("api/v1/schema/", SpectacularAPIView.as_view(content_negotiation_class=FormatParameterNegotiation),
         name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("healthz", healthz, name="healthz"),
    path("", include("django_prometheus.urls")),
]

handler404 = "loyalty.api.errors.json_not_found"
handler500 = "loyalty.api.errors.json_server_error"
