from django.urls import path

from rules import api as events

urlpatterns = [
    path("events", events.EventCreateView.as_view(), name="event-create"),
    path("events/batch", events.EventBatchView.as_view(), name="event-batch"),
    path("events/<str:event_id>", events.EventDetailView.as_view(), name="event-detail"),
]
