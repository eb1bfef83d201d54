from django.conf import settings
from django.contrib import admin
from django.urls import path
from django.views.static import serve

from shop import views

urlpatterns = [
    path("", views.catalogue, name="catalogue"),
    path("products/<int:pk>/", views.product_detail, name="product-detail"),
    path("search/", views.search, name="search"),
    path("search/<uuid:pk>/", views.search_results, name="search-results"),
    path("search/<uuid:pk>/wait/", views.search_wait, name="search-wait"),
    path("search/<uuid:pk>/photo.jpg", views.search_photo, name="search-photo"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
]

if settings.SERVE_MEDIA:
    # The demo serves uploads and catalogue photos itself; a production shop puts them behind its web server.
    urlpatterns += [path(f"{settings.MEDIA_URL.strip('/')}/<path:path>", serve, {"document_root": settings.MEDIA_ROOT})]
