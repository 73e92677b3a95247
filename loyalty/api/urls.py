from django.urls import path

from accounts import api as members
from ledger import api as ledger
from rules import api as events

urlpatterns = [
    path("members", members.MemberListView.as_view(), name="member-list"),
    path("members/<str:external_id>", members.MemberDetailView.as_view(), name="member-detail"),
    path("members/<str:external_id>/balance", ledger.BalanceView.as_view(), name="member-balance"),
    path("members/<str:external_id>/transactions", ledger.TransactionListView.as_view(), name="member-transactions"),
    path("adjustments", ledger.AdjustmentView.as_view(), name="adjustment-create"),
    path("events", events.EventCreateView.as_view(), name="event-create"),
    path("events/batch", events.EventBatchView.as_view(), name="event-batch"),
    path("events/<str:event_id>", events.EventDetailView.as_view(), name="event-detail"),
]
